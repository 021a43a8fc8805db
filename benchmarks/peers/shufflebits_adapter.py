"""ShuffleBits (Ni et al.), the authors' code: ``apply_conversion_on_array`` of ``scripts/encryption_utils.py``.

Case ``encode``: encrypt N×3072 float32 features (standard normal, seeded) with one fixed key (their
``get_index_array(seed=0)``, a permutation of the 32 bits), with their ``numpy`` backend, which converts one number
at a time through a 32-character bit string. Their other backend (TensorFlow) goes one number at a time as well.
Reports GB/s of float32 input besides seconds per call.
"""

from __future__ import annotations

from _common import add_repo, cold_warm, parse, skip, stub_modules, write

PEER = "shufflebits"


def main() -> None:
    args = parse(PEER, ("encode",), 5000, "number of 3072-float feature vectors encrypted per call")
    repo = add_repo(args.repo)
    import sys

    sys.path.insert(0, str(repo / "scripts"))
    import numpy as np

    if int(np.__version__.split(".")[0]) >= 2:
        skip(
            args,
            PEER,
            f"needs numpy < 2 (their bit-string path relies on numpy 1.x wrapping out-of-range ints to "
            f"int32; numpy {np.__version__} raises OverflowError); run it in the peer venv of env.py",
        )
    note = []
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        stub_modules("tensorflow")
        note.append(
            "tensorflow (imported at module level, used only by their tensorflow backend) replaced by a stub module"
        )
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)  # numpy 1.26 warns on each wrap; printing it is not the cipher
    import encryption_utils as eu

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, 3072)).astype(np.float32)
    key = eu.get_index_array(seed=0)

    def call():
        return eu.apply_conversion_on_array(x, key, backend="numpy")

    cold, warm = cold_warm(call, args.repeat)
    out = call()
    back = eu.apply_conversion_on_array(out, np.argsort(key), backend="numpy")
    assert np.array_equal(back.view(np.int32), x.view(np.int32)), "their decryption does not invert the encryption"
    write(
        args.json,
        {
            "peer": PEER,
            "case": args.case,
            "n": args.n,
            "cold_s": cold,
            "warm_s": warm,
            "unit": "s per call",
            "gb_per_s": x.nbytes / warm / 1e9,
            "what": "encryption_utils.apply_conversion_on_array(backend='numpy'), key get_index_array(seed=0), "
            "N x 3072 float32",
            "note": "; ".join(note + [f"numpy {np.__version__} (their README pins 1.18; numpy >= 2 fails)"]),
        },
    )


if __name__ == "__main__":
    main()
