"""InstaHide (Huang et al., ICML 2020), the authors' code: ``mixup_data`` of ``train_cross.py``.

Case ``encode``: encode N CIFAR-size images (N×3×32×32 float32 in [0, 1)) with k = 6 in cross mode, two private and
four public images per mix (their ``--klam 6 --pair``; the same split as the suite's InstaHide row), random
sign flips (``--mode instahide``), their default coefficient bounds. Their call also draws the coefficients (a
rejection loop per image), the partners and the sign masks: our keygen and encode together. Their code picks public
partners by a permutation of the batch, so the public set has N images here (ours draws from a pool).
"""

from __future__ import annotations

import io
import os
import sys

from _common import add_repo, cold_warm, parse, skip, stub_modules, write

PEER = "instahide"


def main() -> None:
    args = parse(PEER, ("encode",), 20000, "number of images encoded per call")
    add_repo(args.repo)
    # train_cross.py imports torchvision (transforms, datasets) at module level for its data loaders only; torchvision
    # does not import beside this torch, so stubs stand in for it. Its options are parsed from sys.argv at import.
    note = []
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - any failure means: use the stub
        from _common import forget

        forget("torchvision")
        stub_modules("torchvision.transforms", "torchvision.datasets")
        note.append("torchvision (imported by train_cross.py for its data loaders only) replaced by a stub module")
    import numpy as np
    import torch

    # utils.py reads the terminal width with `stty size` at import, which fails without a terminal: answer for it.
    popen = os.popen

    def fake_popen(cmd, *a, **k):
        return io.StringIO("24 80\n") if cmd.strip() == "stty size" else popen(cmd, *a, **k)

    argv, sys.argv, os.popen = sys.argv, ["train_cross.py", "--klam", "6", "--pair", "--mode", "instahide"], fake_popen
    try:
        import train_cross as tc
    except Exception as e:  # noqa: BLE001
        sys.argv, os.popen = argv, popen
        skip(args, PEER, f"train_cross.py does not import: {type(e).__name__}: {e}")
    sys.argv, os.popen = argv, popen
    note.append("`stty size` (read by utils.py at import for its progress bar) answered with 24x80 without a terminal")

    torch.manual_seed(0)
    np.random.seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.n,), generator=g).float()
    public = torch.rand(args.n, 3, 32, 32, generator=g)

    def call():
        return tc.mixup_data(x, y, public, use_cuda=False)

    cold, warm = cold_warm(call, args.repeat)
    mixed = call()[0]
    assert mixed.shape == x.shape
    write(
        args.json,
        {
            "peer": PEER,
            "case": args.case,
            "n": args.n,
            "cold_s": cold,
            "warm_s": warm,
            "unit": "s per call",
            "what": "train_cross.mixup_data, k=6 cross (--klam 6 --pair: 2 private + 4 public), sign flips, "
            "coefficients drawn in the call; N public images",
            "note": "; ".join(note + [f"device cpu, torch threads {torch.get_num_threads()}"]),
        },
    )


if __name__ == "__main__":
    main()
