"""Human-in-the-loop (HitL) rating studies: rating sets (:mod:`.ratingset`), the SQLite store of a study
(:mod:`.store`), the raters' web app (:mod:`.app`, needs the ``hitl`` extra) and the owner's results
(:mod:`.results`).

A study owner exports a rating set (``masquerade attack ... --rating-set`` or ``masquerade camouflage ...
--rating-set DIR``), serves it with ``masquerade hitl serve SET --db ratings.sqlite`` and reads the HitL table with
``masquerade hitl results --db ratings.sqlite``. Raters see images by opaque per-study ids in an order drawn for
each of them; nothing the page receives names a condition, and results are never served over the network.

Nothing here imports torch.
"""
