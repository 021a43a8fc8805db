"""ATS on CIFAR-10 at CPU scale: no defence vs the paper's policies vs the policies our search finds.

For every defence row: train ResNet-20 with the policy (snapshots after epoch 1 -- "early" -- and at the end --
"late"), then attack each snapshot with Inverting Gradients (ATS configuration, fewer iterations) on held-out test
images, one client update per image (batch 1, labels known); score PSNR and SSIM against the original image and MR
(the accuracy of an independent fastresnet trained on clean data) on the reconstructions. Every policy row is also
attacked by ``ats-adaptive`` (the same iterations), which knows the clients' policy, and both attacks are scored on
the pixels the policy keeps too (beside the undefended attack on the same pixels): a translation destroys what it
pushes out, and the table tells that apart from what the policy only hides. The search row trains a
ResNet-20 briefly on 10 % of the training images, scores random candidate policies (S_pri, S_acc) and keeps the best.

Everything is cached in ``--work`` (models, search table, per-row results), so an interrupted run resumes. CIFAR-10
comes from the data folder (``--data DIR``, else ``$MASQUERADE_BENCH_DATA``, else ``<repo>/../shared/data``).

    python benchmarks/reproductions/bench_ats.py [--epochs 10] [--images 8] [--iterations 1000] [--candidates 60]
        [--work DIR] [--data DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from masquerade.ats.privacy import attack_model, export_rating_set, kept_scores, summary
from masquerade.ats.search import SearchSettings, search
from masquerade.data import load_images
from masquerade.fileio import write_json
from masquerade.models import Normalized, create_model, load_model, save_model
from masquerade.runs import image_grid
from masquerade.training import TrainSettings, train

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers
from _data import add_data_option, data_dir  # noqa: E402

# ATS, CVPR 2021, ResNet-20 on CIFAR-100: PSNR of Inverting Gradients and test accuracy
PAPER_NONE = "13.88 dB, accuracy 76.9 %"
PAPER_POLICIES = "6.58-8.56 dB, accuracy 70.6-77.9 % (their searched policies, e.g. 3-1-7, 43-18-18 and hybrids)"
PAPER_ROWS = ("3-1-7", "43-18-18", "3-1-7+43-18-18")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/masquerade-bench-ats")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--candidates", type=int, default=60)
    ap.add_argument("--search-epochs", type=int, default=10)
    ap.add_argument("--keep", type=int, default=2, help="searched policies evaluated")
    ap.add_argument(
        "--long-iterations",
        type=int,
        default=0,
        help="also attack the late snapshots of --long-rows with this many iterations (ATS: 4800)",
    )
    ap.add_argument(
        "--long-rows",
        default="none,3-1-7+43-18-18",
        help="row tags for --long-iterations (a policy; '~p' marks the probabilities-honoured row)",
    )
    ap.add_argument("--seed", type=int, default=2026)
    add_data_option(ap, "cifar10-train-20k.npz and cifar10-test.npz")
    ap.add_argument("--json")
    args = ap.parse_args()
    data = data_dir(args.data)
    data.require("cifar10-train-20k.npz", "cifar10-test.npz")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    train_set = load_images(data / "cifar10-train-20k.npz")
    test_set = load_images(data / "cifar10-test.npz", split="test")
    g = np.random.default_rng(args.seed)
    pick = g.choice(len(test_set), args.images, replace=False)
    x_att = test_set.to_tensor()[pick]
    y_att = torch.from_numpy(test_set.labels[pick]).long()

    # 1. the independent recognition classifier (MR), clean data
    mr_file = work / "mr-classifier.safetensors"
    if not mr_file.is_file():
        r = train(
            train_set, test_set, settings=TrainSettings(model="fastresnet", epochs=8), seed=args.seed, progress=False
        )
        clf = r["classifier"]
        save_model(
            mr_file,
            clf,
            arch="fastresnet",
            num_classes=10,
            mean=clf.mean,
            std=clf.std,
            info={"test_acc": r["test_acc"]},
        )
        print(f"MR classifier: clean test accuracy {r['test_acc']:.3f}", flush=True)
    classifier = load_model(mr_file)

    # 2. the search
    search_file = work / "search.json"
    if not search_file.is_file():
        sub = np.random.default_rng(args.seed + 1).choice(len(train_set), len(train_set) // 10, replace=False)
        small = train_set[sub]
        r = train(
            small,
            test_set,
            settings=TrainSettings(model="resnet20", epochs=args.search_epochs, lr=0.1, batch_size=128),
            seed=args.seed + 2,
            progress=False,
        )
        trained = r["classifier"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed + 3)
            init = Normalized(create_model("resnet20"), trained.mean.flatten(), trained.std.flatten()).eval()
        for name, m in (("search-trained", trained), ("search-init", init)):
            save_model(work / f"{name}.safetensors", m, arch="resnet20", num_classes=10, mean=m.mean, std=m.std)
        pool = np.random.default_rng(args.seed + 4).choice(
            np.setdiff1d(np.arange(len(test_set)), pick), 500, replace=False
        )
        t0 = time.perf_counter()
        res = search(
            trained=trained,
            init=init,
            images=test_set.to_tensor()[pool],
            labels=torch.from_numpy(test_set.labels[pool]),
            settings=SearchSettings(candidates=args.candidates, keep=args.keep + len(PAPER_ROWS) + 1),
            rng=args.seed + 5,
            progress=False,
            extra=("none",) + PAPER_ROWS,
        )
        res["trained_acc"] = r["test_acc"]
        res["seconds"] = time.perf_counter() - t0
        write_json(search_file, res)
    res = json.loads(search_file.read_text())
    print(
        f"S_pri of the {len(res['table'])} scored policies: min {min(r['s_pri'] for r in res['table']):.3f}, "
        f"median {float(np.median([r['s_pri'] for r in res['table']])):.3f}, "
        f"max {max(r['s_pri'] for r in res['table']):.3f}"
    )
    print(
        f"search: {len(res['table'])} candidates in {res['seconds'] / 60:.1f} min on {res['workers']} workers; "
        f"S_acc threshold {res['threshold']:.1f}; chosen {res['chosen']}",
        flush=True,
    )

    ours = [p for p in res["chosen"] if p not in PAPER_ROWS and p != "none"][: args.keep]
    scores = {r["policy"]: r for r in res["table"]}
    rows = [
        ("none", True),
        ("3-1-7", True),
        ("43-18-18", True),
        ("3-1-7+43-18-18", True),
        ("3-1-7+43-18-18", False),
    ] + [(p, True) for p in ours]
    table = []
    grids: dict[str, torch.Tensor] = {"original": x_att}
    for policy, always in rows:
        tag = f"{policy}{'' if always else '~p'}"
        out = work / f"row-{tag}.json"
        if out.is_file():
            table.append(json.loads(out.read_text()))
            continue
        mdir = work / f"models-{tag}"
        r = _train_policy(train_set, test_set, policy, always, args, mdir)
        row = {
            "policy": policy,
            "probabilities": "ignored (published code)" if always else "honoured",
            "test_acc": r["test_acc"],
            "train_seconds": r["seconds"],
        }
        for stage, epoch in (("early", 1), ("late", args.epochs)):
            model = load_model(mdir / f"model-epoch{epoch}.safetensors")
            a = attack_model(
                model,
                x_att,
                y_att,
                policy=policy,
                always=always,
                attack_settings={"iterations": args.iterations},
                classifier=classifier,
                rng=args.seed + 20,
                progress=False,
            )
            row[stage] = summary(a) | {"seconds": a["seconds"]}
            torch.save(a["reconstructions"], work / f"rec-{tag}-{stage}.pt")
            if policy != "none":  # the adversary who knows the (public) policy, on the same client updates
                b = attack_model(
                    model,
                    x_att,
                    y_att,
                    policy=policy,
                    always=always,
                    attack="ats-adaptive",
                    attack_settings={"iterations": args.iterations},
                    classifier=classifier,
                    rng=args.seed + 20,
                    progress=False,
                )
                row[f"{stage}_adaptive"] = summary(b) | {"seconds": b["seconds"], "candidates": b["candidates"]}
                plain = work / f"rec-none-{stage}.pt"
                if plain.is_file():  # the undefended attack scored on the very pixels this policy keeps
                    p_k, s_k = kept_scores(torch.load(plain), x_att, b["kept"])
                    row[f"{stage}_undefended_kept"] = {
                        "psnr": float(np.nanmean(p_k.numpy())),
                        "ssim": float(np.nanmean(s_k.numpy())),
                    }
                torch.save(b["reconstructions"], work / f"rec-{tag}-{stage}-adaptive.pt")
        write_json(out, row)
        table.append(row)
        print(
            f"{tag:22s} acc {row['test_acc']:.3f}  early PSNR {row['early']['psnr']:.2f}  late PSNR "
            f"{row['late']['psnr']:.2f}",
            flush=True,
        )
    if args.long_iterations:
        for row in table:
            tag = f"{row['policy']}{'' if row['probabilities'].startswith('ignored') else '~p'}"
            if tag not in args.long_rows.split(",") or "late_long" in row:
                continue
            model = load_model(work / f"models-{tag}" / f"model-epoch{args.epochs}.safetensors")
            a = attack_model(
                model,
                x_att,
                y_att,
                policy=row["policy"],
                always=tag == row["policy"],
                attack_settings={"iterations": args.long_iterations},
                classifier=classifier,
                rng=args.seed + 20,
                progress=False,
            )
            row["late_long"] = summary(a) | {"seconds": a["seconds"], "iterations": args.long_iterations}
            write_json(work / f"row-{tag}.json", row)
            print(f"{tag:22s} late, {args.long_iterations} iterations: PSNR {row['late_long']['psnr']:.2f}", flush=True)
    for row in table:
        tag = f"{row['policy']}{'' if row['probabilities'].startswith('ignored') else '~p'}"
        for stage in ("early", "late"):
            f = work / f"rec-{tag}-{stage}.pt"
            if f.is_file():
                grids[f"{tag}@{stage}"] = torch.load(f)
    from PIL import Image

    Image.fromarray(image_grid(torch.cat(list(grids.values())), ncol=len(x_att), scale=2)).save(
        work / "reconstructions.png"
    )
    if not (work / "rating").exists():
        export_rating_set(
            work / "rating", grids, y_att.tolist(), test_set.classes or [str(i) for i in range(10)], rng=args.seed
        )

    print(
        f"\nCIFAR-10, ResNet-20 ({args.epochs} epochs on {len(train_set):,} images), Inverting Gradients "
        f"({args.iterations} iterations, batch 1, labels known) on {args.images} test images; MR classifier "
        f"fastresnet (clean acc {classifier.info.get('test_acc', float('nan')):.3f})"
    )
    print(
        f"{'policy':22s} {'prob.':8s} {'acc':>6s} | {'early PSNR':>10s} {'SSIM':>6s} {'MR':>5s} | "
        f"{'late PSNR':>9s} {'SSIM':>6s} {'MR':>5s} | {'S_pri':>6s} {'S_acc':>6s}"
    )
    for row in table:
        e, l_ = row["early"], row["late"]
        src = "search" if row["policy"] in ours else ""
        sc = scores.get(row["policy"])
        sc_text = f"{sc['s_pri']:6.3f} {sc['s_acc']:6.1f}" if sc and row["probabilities"].startswith("ignored") else ""
        prob = "always" if row["probabilities"].startswith("ignored") else "p"
        print(
            f"{row['policy'] + (' (ours)' if src else ''):22s} {prob:8s} "
            f"{row['test_acc']:6.3f} | {e['psnr']:10.2f} {e['ssim']:6.3f} {e['mr']:5.2f} | {l_['psnr']:9.2f} "
            f"{l_['ssim']:6.3f} {l_['mr']:5.2f} | {sc_text}"
        )
    print(
        "ats-adaptive (knows the policy), same client updates; 'kept': on the pixels the policy keeps, beside the "
        "undefended attack on those pixels"
    )
    print(
        f"{'policy':22s} {'prob.':8s} | {'stage':5s} {'blind PSNR':>10s} {'adaptive':>8s} {'SSIM':>6s} {'MR':>5s} | "
        f"{'kept PSNR blind':>15s} {'adaptive':>8s} {'undef.':>6s} | {'kept SSIM adaptive':>18s} {'undef.':>6s}"
    )
    for row in table:
        prob = "always" if row["probabilities"].startswith("ignored") else "p"
        for stage in ("early", "late"):
            q = row.get(f"{stage}_adaptive")
            if q is None:
                continue
            e, u = row[stage], row.get(f"{stage}_undefended_kept", {"psnr": float("nan"), "ssim": float("nan")})
            print(
                f"{row['policy']:22s} {prob:8s} | {stage:5s} {e['psnr']:10.2f} {q['psnr']:8.2f} {q['ssim']:6.3f} "
                f"{q['mr']:5.2f} | {e.get('psnr_kept', float('nan')):15.2f} {q['psnr_kept']:8.2f} "
                f"{u['psnr']:6.2f} | {q['ssim_kept']:18.3f} {u['ssim']:6.3f}"
            )
    long = [r for r in table if "late_long" in r]
    if long:
        print(f"late snapshots, {args.long_iterations} iterations:")
        for row in long:
            q = row["late_long"]
            print(
                f"  {row['policy']:20s} {'always' if row['probabilities'].startswith('ignored') else 'p':8s} "
                f"PSNR {q['psnr']:.2f}  SSIM {q['ssim']:.3f}  MR {q['mr']:.2f}  ({q['seconds'] / 60:.1f} min)"
            )
    print(
        f"paper (ResNet-20, CIFAR-100, 4,800 iterations, trained 200 epochs): no defence {PAPER_NONE}; {PAPER_POLICIES}"
    )
    print(
        f"random guess PSNR (uniform noise vs the images): "
        f"{float((10 * torch.log10(1 / (_noise(x_att, args.seed) - x_att).pow(2).mean((1, 2, 3)))).mean()):.2f}"
    )
    print(f"total {(time.perf_counter() - t_all) / 60:.1f} min")
    if args.json:
        write_json(
            Path(args.json),
            {"table": table, "search": {k: res[k] for k in ("chosen", "threshold", "seconds")}, "settings": vars(args)},
        )
    return 0


def _noise(x: torch.Tensor, seed: int) -> torch.Tensor:
    return torch.rand(x.shape, generator=torch.Generator().manual_seed(seed))


def _train_policy(train_set, test_set, policy: str, always: bool, args: argparse.Namespace, mdir: Path) -> dict:
    from masquerade.registry import create_scheme

    sch = create_scheme("identity") if policy == "none" else create_scheme("ats", policy=policy, always=always)
    return train(
        train_set,
        test_set,
        scheme=sch,
        settings=TrainSettings(model="resnet20", epochs=args.epochs, lr=0.1, batch_size=128),
        seed=args.seed + 10,
        progress=False,
        snapshots=(1, args.epochs),
        snapshot_dir=mdir,
    )


if __name__ == "__main__":
    sys.exit(main())
