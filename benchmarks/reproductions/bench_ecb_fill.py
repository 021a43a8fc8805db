"""AES-ECB at level 3 on the bundled digits: how much of each unseen digit the codebook decodes, and how well each
way of filling the rest recovers it.

For each seed this protects the private set of ``masquerade evaluate --quick`` (the same split, key and known pairs)
and runs ``aes-ecb-codebook`` with what level 3 gives it, filling the units the codebook lacks:

- ``guess``: the pairs' mean rare unit (no auxiliary images);
- ``neighbours``: the 3 auxiliary images that look most alike through the codebook (the ``--quick`` default);
- ``network``: a small network trained for ``--steps`` steps on the auxiliary images' codebook views (a full
  evaluate's default, 300).

It also reports the share of units the codebook decodes as the number of known pairs grows (``--pairs-curve``), which
bounds every fill: on digits only the blank units repeat. One thread, as an evaluate cell runs.

    python benchmarks/reproductions/bench_ecb_fill.py [--seeds 0,1] [--steps 300] [--pairs-curve] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--pairs-curve", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)

    from masquerade.disguise.ecb import ECBCodebook
    from masquerade.disguise.scheme import to_blocks
    from masquerade.workflows.evaluate import cells as C
    from masquerade.workflows.evaluate.plan import EvaluateSettings, plan_cells

    out: list[dict[str, object]] = []
    for seed in (int(v) for v in args.seeds.split(",")):
        s = EvaluateSettings.for_quick(seed=seed)
        d = C.data_for(s)
        cell = next(c for c in plan_cells(s) if c.attack == "aes-ecb-codebook")
        given = C._given(cell, s, d, C._release(s, cell.setting, d))
        fills = {"guess": ({}, False), "neighbours": ({}, True), "network": ({"decoder_steps": args.steps}, True)}
        for name, (extra, with_aux) in fills.items():
            t0 = time.perf_counter()
            res = ECBCodebook(block=4, **extra).run(
                rng=0, progress=False, **{k: v for k, v in given.items() if with_aux or k != "auxiliary"}
            )
            best, _, _ = C.best_match(d.train.images[: s.targets], C._to_u8(res.reconstructions), aligned=True)
            row = {
                "seed": seed,
                "fill": name,
                "ssim": round(float(best.mean()), 4),
                "success": round(float((best > 0.8).mean()), 4),
                "decoded_share": round(res.metrics["decoded_share"], 4),
                "seconds": round(time.perf_counter() - t0, 1),
            }
            out.append(row)
            print(row, flush=True)
    if args.pairs_curve:
        # a unit is decoded when its plaintext occurs among the pairs' units: membership, no cipher needed
        s = EvaluateSettings.for_quick()
        x = C.data_for(s).train.images.transpose(0, 3, 1, 2)[:, :1]
        void = lambda a: np.ascontiguousarray(a).view(np.dtype((np.void, 16)))[..., 0].reshape(-1)  # noqa: E731
        targets = void(to_blocks(x[:20], 4))
        for n in (20, 100, 500, len(x) - 20):
            book = np.unique(void(to_blocks(x[20 : 20 + n], 4)))
            row = {"pairs": n, "decoded_share": round(float(np.isin(targets, book).mean()), 4)}
            out.append(row)
            print(row, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
