"""Blind image-quality models behind one interface, and the quality camouflage that fools them."""
