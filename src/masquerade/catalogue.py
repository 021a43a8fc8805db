"""The built-in plugins: each name, the class that implements it (``module:Class``) and one line on what it is.

Plain data with no imports, so that listing plugins, reading a key file's scheme or printing ``--help`` never loads
torch. :mod:`masquerade.registry` serves these (and plugins of other packages) by name.
"""

from __future__ import annotations

__all__ = ["BUILTIN_SCHEMES", "BUILTIN_ATTACKS"]

# name -> (where the class lives, one line on what it is)
BUILTIN_SCHEMES: dict[str, tuple[str, str]] = {
    "identity": ("masquerade.identity:Identity", "no protection: the baseline every scheme is compared against"),
    "instahide": (
        "masquerade.instahide.scheme:InstaHide",
        "InstaHide: k-way mixup + one-time sign mask (inside or cross dataset)",
    ),
    "disguise": ("masquerade.disguise.scheme:Disguise", "DisguisedNets: block permutation + per-block RMT or AES"),
    "shufflebits": (
        "masquerade.shufflebits.scheme:ShuffleBits",
        "ShuffleBits: one-time permutation of the 32 bits of float32 features",
    ),
    "ats": (
        "masquerade.ats.policies:ATSPolicy",
        "ATS transformation policy (Gao et al. 2021): augmentations against gradient inversion",
    ),
}
BUILTIN_ATTACKS: dict[str, tuple[str, str]] = {
    "as-is": (
        "masquerade.attacks.asis:AsIs",
        "every image scheme, level 1: the encodings viewed as images (magnitudes where signs are flipped)",
    ),
    "instahide-challenge": (
        "masquerade.instahide.attack:ChallengeAttack",
        "InstaHide: recover the private images from encodings and labels (Carlini et al. 2021)",
    ),
    "instahide-inside": (
        "masquerade.instahide.inside_attack:InsideAttack",
        "InstaHide inside a dataset: the grouping of every mix, then every private image exactly",
    ),
    "disguise-known-plaintext": (
        "masquerade.disguise.attacks:KnownPlaintextRMT",
        "DisguisedNets level 3: permutation and RMT matrices from known pairs",
    ),
    "aes-ecb-codebook": (
        "masquerade.disguise.ecb:ECBCodebook",
        "DisguisedNets level 3 on AES-ECB: a codebook of blocks from known pairs",
    ),
    "aes-ecb-frequency": (
        "masquerade.disguise.ecb:ECBFrequency",
        "DisguisedNets level 2 on AES-ECB: frequency analysis of repeated blocks against auxiliary images",
    ),
    "disguise-moments": (
        "masquerade.disguise.distribution:MomentMatching",
        "DisguisedNets level 2: RMT matrices from moments of auxiliary clean images",
    ),
    "disguise-alignment": (
        "masquerade.disguise.distribution:DistributionAlignment",
        "DisguisedNets level 2: permutation and RMT matrices aligned to the whole second-order "
        "structure of auxiliary images",
    ),
    "shufflebits-key-recovery": (
        "masquerade.shufflebits.attacks:ShuffleBitsKeyRecovery",
        "ShuffleBits: bit order from ciphertexts alone",
    ),
    "shufflebits-popcount": (
        "masquerade.shufflebits.attacks:ShuffleBitsPopcount",
        "ShuffleBits: the popcount every bit permutation leaks",
    ),
    "feature-attribute": (
        "masquerade.attacks.feature_inversion:FeatureAttribute",
        "attribute (class) inference from feature vectors through a feature API",
    ),
    "feature-inversion": (
        "masquerade.attacks.feature_inversion:FeatureInversion",
        "image reconstruction from feature vectors (a decoder trained through a feature API)",
    ),
    "inverting_gradients": (
        "masquerade.attacks.gradient_inversion:InvertingGradients",
        "Inverting Gradients (Geiping et al. 2020): cosine gradient matching, TV prior, signed Adam",
    ),
    "dlg": (
        "masquerade.attacks.gradient_inversion:DLG",
        "Deep Leakage from Gradients (Zhu et al. 2019): L2 gradient matching, L-BFGS",
    ),
    "ats-adaptive": (
        "masquerade.ats.adaptive:ATSAdaptive",
        "ATS: gradient inversion through the clients' public policy, searching its random choices",
    ),
}
