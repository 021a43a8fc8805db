"""``train`` (on protected data, tested on clean data) and ``search`` (ATS policies)."""

from __future__ import annotations

import argparse
from typing import Any

from masquerade.cli.common import add_device_option, finite_float, parse_sets, positive_int, seed
from masquerade.cli.protect import add_scheme_options, scheme_settings

__all__ = ["register"]


def cmd_train(args: argparse.Namespace) -> int:
    from masquerade.training import TrainSettings
    from masquerade.workflows.train import epoch_list, train

    settings = TrainSettings(
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        precision=args.precision,
        augment=not args.no_augment,
        infer_encodings=args.infer_encodings,
    )

    def show(rec: dict[str, Any]) -> None:
        if not args.quiet:
            print(
                f"epoch {rec['epoch']:3d}  loss {rec['train_loss']:.4f}  test acc {rec['test_acc']:.4f}  "
                f"({rec['seconds']:.0f}s)",
                flush=True,
            )

    r = train(
        args.data,
        args.test,
        scheme=args.scheme,
        scheme_settings=scheme_settings(args),
        settings=settings,
        policy=args.policy,
        always=args.always,
        public=args.public,
        public_patches=args.public_patches,
        snapshots=epoch_list(args.snapshots, args.epochs),
        seed=args.seed,
        out=args.out,
        resume=args.resume,
        config=vars(args) | {"func": None},
        on_epoch=show,
        device=args.device,
    )
    if r["run"] is None:  # another process of a torchrun launch: rank 0 reports
        return 0
    print(
        f"test accuracy {r['test_acc']:.4f} after {r['epochs_run']} epochs ({r['seconds']:.0f}s); run folder {r['run']}"
    )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from masquerade.ats.search import SearchSettings
    from masquerade.contracts import build_settings
    from masquerade.workflows.train import search

    settings = build_settings(
        SearchSettings,
        "search",
        **(
            {
                "candidates": args.candidates,
                "keep": args.keep,
                "workers": args.workers,
                "acc_threshold": args.acc_threshold,
                "always": not args.honour_probabilities,
            }
            | parse_sets(args.set)
        ),
    )
    res = search(
        args.data,
        args.pool,
        settings=settings,
        model=args.model,
        share=args.share,
        epochs=args.epochs,
        policies=[p.strip() for p in args.policies.split(",")] if args.policies else None,
        also=[p.strip() for p in args.also.split(",") if p.strip()] if args.also else (),
        seed=args.seed,
        out=args.out,
        resume=args.resume,
        quiet=args.quiet,
        config=vars(args) | {"func": None},
        device=args.device,
    )
    print(f"{'policy':20s} {'S_pri':>7s} {'S_acc':>8s}  chosen")
    for r in res["table"][: args.show]:
        print(f"{r['policy']:20s} {r['s_pri']:7.4f} {r['s_acc']:8.2f}  {'*' if r['chosen'] else ''}")
    print(
        f"chosen (S_acc >= {res['threshold']:.2f}, lowest S_pri): {', '.join(res['chosen']) or 'none'}; "
        f"table in {res['run'] / 'search.json'}"
    )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("train", help="train a classifier on protected data and test it on clean data")
    p.add_argument("--data", required=True, help="training images (labelled)")
    p.add_argument("--test", required=True, help="test images (labelled; CIFAR archives use their test split)")
    p.add_argument("--scheme", help="protection applied on the fly (default identity: none; with --policy, ats)")
    add_scheme_options(p)
    p.add_argument(
        "--model",
        default="fastresnet",
        help="fastresnet (default), resnet9, resnet18, resnet20, resnet20-4, convnet, convnet16, lenet-zhu",
    )
    p.add_argument("--policy", help="train with an ATS transformation policy, e.g. 3-1-7 or 3-1-7+43-18-18")
    p.add_argument(
        "--always",
        action="store_true",
        help="apply every sub-policy of --policy always (the published code), ignoring probabilities",
    )
    p.add_argument("--snapshots", metavar="E1,E2", help="also save the model after these epochs (to attack them)")
    p.add_argument("--epochs", type=positive_int, default=15)
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--lr", type=finite_float, default=0.2)
    p.add_argument("--weight-decay", type=finite_float, default=5e-4)
    p.add_argument("--schedule", choices=["onecycle", "step"], default="onecycle")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument(
        "--infer-encodings",
        type=int,
        default=0,
        metavar="T",
        help="also test in the paper's inference mode: average over T encodings",
    )
    p.add_argument("--seed", type=seed)
    add_device_option(p, "training")
    p.add_argument("--out", help="run folder (default runs/train/<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("search", help="ATS: search transformation policies against gradient inversion")
    p.add_argument("--data", required=True, help="training images; a share trains the model S_pri is scored on")
    p.add_argument("--pool", required=True, help="labelled held-out images the scores are computed on")
    p.add_argument("--model", default="resnet20", help="architecture (default resnet20)")
    p.add_argument("--share", type=finite_float, default=0.1, help="share of --data for the brief training (0.1)")
    p.add_argument("--epochs", type=positive_int, default=10, help="epochs of the brief training (10)")
    p.add_argument("--candidates", type=positive_int, default=100, help="random candidate policies (100)")
    p.add_argument("--policies", help="score these comma-separated policies instead of random candidates")
    p.add_argument("--also", metavar="P1,P2", help="score these policies too, for reference (e.g. none,3-1-7)")
    p.add_argument("--keep", type=positive_int, default=5, help="policies chosen (5)")
    p.add_argument(
        "--acc-threshold",
        type=finite_float,
        default=-85.0,
        help="admit policies with S_acc >= this (ATS: -85, for 64-image batches)",
    )
    p.add_argument(
        "--honour-probabilities",
        action="store_true",
        help="score policies with their sub-policies' probabilities (default: always applied, as ATS)",
    )
    p.add_argument("--workers", type=int, default=0, help="processes (0 = one per core)")
    p.add_argument("--show", type=positive_int, default=15, help="table rows printed (15)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any SearchSettings field")
    p.add_argument("--seed", type=seed)
    add_device_option(p, "training and the policy scores")
    p.add_argument("--out", help="run folder (default runs/search/<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted search")
    p.set_defaults(func=cmd_search)
