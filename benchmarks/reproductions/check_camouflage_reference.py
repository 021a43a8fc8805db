"""Independent check of camouflage success: re-score the delivered JPEG files with the ``brisque`` package itself
(its features and libsvm's prediction, as tests/quality/test_quality.py calls them), after a fresh Pillow JPEG-90
re-compression, beside our BRISQUE-torch scores. The photos are ``imagenet-sample/`` of the data folder (``--data DIR``,
else ``$MASQUERADE_BENCH_DATA``, else ``<repo>/../shared/data``).

    python benchmarks/reproductions/check_camouflage_reference.py [--photos 6] [--seed 5] [--data DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]  # the repository: its tests hold the reference
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers
from _data import add_data_option, data_dir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=6)
    ap.add_argument("--seed", type=int, default=5)
    add_data_option(ap, "imagenet-sample/")
    args = ap.parse_args()
    data = data_dir(args.data)
    data.require("imagenet-sample")
    from tests.quality.test_quality import _jpeg, _reference_score

    from masquerade.data import load_photos
    from masquerade.quality.camouflage import CamouflageSettings, camouflage_photos
    from masquerade.quality.models import BrisqueQuality

    photos, names = load_photos(data / "imagenet-sample", channels=3)
    idx = np.random.default_rng(args.seed).permutation(len(photos))[: args.photos]
    with tempfile.TemporaryDirectory() as d:
        rows, _ = camouflage_photos(
            BrisqueQuality(),
            [photos[i] for i in idx],
            [names[i] for i in idx],
            d,
            CamouflageSettings(),
            rng=0,
            progress=False,
        )
        for r, i in zip(rows, idx):
            delivered = np.array(Image.open(r["file"]).convert("RGB"))
            ours = f"{r['score after JPEG']:6.2f} -> {r['camouflaged score after JPEG']:6.2f}"
            print(
                f"{r['photo'][:28]:28s} ours: {ours} | brisque package: "
                f"{100 - _reference_score(_jpeg(photos[i], 90)):6.2f} -> "
                f"{100 - _reference_score(_jpeg(delivered, 90)):6.2f} | PSNR {r['PSNR']}"
            )


if __name__ == "__main__":
    main()
