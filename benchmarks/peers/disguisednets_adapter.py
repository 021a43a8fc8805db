"""DisguisedNets (Sharma, Gu, Chen), the authors' public code: the ``RMT`` and ``AES`` classes of ``cryp.py`` in the
demo of "Image Disguising for Scalable GPU-accelerated Confidential Deep Learning" (CCS 2023). No public repository of
the original DisguisedNets paper's code was found; this demo is the same group's implementation of the same two
disguises (block-wise RMT, block-wise AES) with block shuffling.

Cases (N CIFAR-size images 32×32×3, block size 4, block shuffling on, no noise; key made once, not timed):

* ``aes``: ``AES(image_size=(32, 32, 3), block_size=(4, 4), One_cipher=True, Shuffle=True).Encode(img)`` for each
  image (uint8 values; their code encrypts each 4×4 block of a channel as one 16-byte AES-ECB block);
* ``rmt``: ``RMT(image_size=(32, 32, 3), block_size=4, Shuffle=True).Encode(img, noise=False)`` for each image (float32
  values in [0, 255], as their demo loads images; one random orthogonal 4×4 matrix per block position).

Their API encodes one image per call, so one timed call is a Python loop over the N images.
"""

from __future__ import annotations

from _common import add_repo, cold_warm, parse, quiet, skip, write

PEER = "disguisednets"


def main() -> None:
    args = parse(PEER, ("aes", "rmt"), 1000, "number of 32x32x3 images disguised per call")
    add_repo(args.repo)
    import numpy as np

    try:
        import Crypto.Cipher.AES  # noqa: F401  (pycryptodome; their repository holds only type stubs of it)
    except ImportError:
        skip(args, PEER, "needs pycryptodome (the peer venv of benchmarks/peers/env.py installs it)")
    import matplotlib

    matplotlib.use("Agg")  # cryp.py imports pyplot at module level; no display here
    import cryp

    rng = np.random.default_rng(0)
    np.random.seed(0)  # their RMT key comes from scipy's ortho_group through numpy's global generator
    if args.case == "aes":
        imgs = rng.integers(0, 256, size=(args.n, 32, 32, 3), dtype=np.uint8)
        with quiet():  # the constructor prints its sizes
            enc = cryp.AES(image_size=(32, 32, 3), block_size=(4, 4), One_cipher=True, Shuffle=True)

        def call():
            return [enc.Encode(im) for im in imgs]

        what = (
            "cryp.AES(image_size=(32,32,3), block_size=(4,4), One_cipher=True, Shuffle=True).Encode per image "
            "(AES-128-ECB, pycryptodome), uint8 input"
        )
    else:
        imgs = rng.uniform(0, 255, size=(args.n, 32, 32, 3)).astype(np.float32)
        enc = cryp.RMT(image_size=(32, 32, 3), block_size=4, Shuffle=True)

        def call():
            return [enc.Encode(im, noise=False) for im in imgs]

        what = (
            "cryp.RMT(image_size=(32,32,3), block_size=4, Shuffle=True).Encode(noise=False) per image, "
            "float32 input in [0,255]"
        )
    cold, warm = cold_warm(call, args.repeat)
    out = call()
    if len(out) != args.n or out[0].shape != (32, 32, 3):
        skip(args, PEER, f"unexpected output shape {out[0].shape if out else None}")
    write(
        args.json,
        {
            "peer": PEER,
            "case": args.case,
            "n": args.n,
            "cold_s": cold,
            "warm_s": warm,
            "unit": "s per call",
            "what": what,
            "note": "code of the authors' CCS 2023 demo (no public repository of the DisguisedNets paper's code "
            "found); pycryptodome installed in the peer venv; key setup not timed",
        },
    )


if __name__ == "__main__":
    main()
