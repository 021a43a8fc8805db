"""The ``masquerade`` command line.

Errors are one line on stderr naming what is wrong and where: exit code 2 for bad usage or input, 1 for other
failures, 130 when interrupted. ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from ._version import __version__
from .errors import InputError, MasqueradeError

def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, with a message naming ``what`` it is."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonnegative_int = _int_at_least(0, "a non-negative integer")
_seed = _int_at_least(0, "a seed (a non-negative integer)")


# -- commands ------------------------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out=args.out, seed=args.seed)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    path = build_report(args.runs, args.out)
    print(f"report written to {path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .data import list_bundled
    from .registry import ATTACKS, SCHEMES

    print("schemes:")
    for name, desc in SCHEMES.describe().items():
        print(f"  {name:20s} {desc}")
    print("attacks:")
    attacks = ATTACKS.describe()
    for name, desc in attacks.items():
        print(f"  {name:20s} {desc}")
    if not attacks:
        print("  (none yet)")
    print("bundled data (load with bundled:NAME):")
    for name, src in list_bundled().items():
        print(f"  {name:20s} {src.holds}")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from .data import load_images

    ds = load_images(args.source, split=args.split)
    print(repr(ds))
    if ds.labels is not None:
        import numpy as np

        counts = np.bincount(ds.labels, minlength=ds.num_classes)
        names = ds.classes or tuple(str(i) for i in range(ds.num_classes))
        print("per class: " + ", ".join(f"{n}={c}" for n, c in zip(names, counts)))
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from .data import fetch_dataset

    folder = fetch_dataset(args.name, args.root, url=args.url, md5=args.md5)
    print(f"{args.name} is ready in {folder}")
    return 0


def cmd_data_patches(args: argparse.Namespace) -> int:
    from .data import extract_patches
    from .fileio import save_npz
    from .runs import start_run

    if args.size_min > args.size_max:
        raise InputError(f"--size-min {args.size_min} is larger than --size-max {args.size_max}")
    out = Path(args.out)
    if out.suffix != ".npz":
        raise InputError(f"{out}: patches are written as .npz")
    with start_run("data-patches", out=args.run_out) as run:
        run.write_config(vars(args) | {"func": None}, seed=args.seed)
        patches = extract_patches(args.photos, args.n, (args.size_min, args.size_max), out_size=args.out_size,
                                  min_keypoints=args.min_keypoints, rng=args.seed, cache=not args.no_cache)
        import numpy as np

        save_npz(out, images=patches.images, names=np.array(patches.names))
        run.add_metrics(patches=len(patches), out=str(out))
        run.save_grid("patches", patches.images[:64], ncol=16, scale=2, caption="first 64 SIFT-filtered patches")
        run.log(f"wrote {len(patches)} patches to {out}")
    print(f"wrote {len(patches)} patches to {out} (run folder {run.path})")
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from .data import load_images
    from .metrics import psnr, rmse, ssim
    from .runs import start_run

    a = load_images(args.a)
    b = load_images(args.b)
    if a.images.shape != b.images.shape:
        raise InputError(f"{args.a} holds {a.images.shape} and {args.b} holds {b.images.shape}; they must match")
    import torch

    ta = torch.from_numpy(a.images).permute(0, 3, 1, 2)
    tb = torch.from_numpy(b.images).permute(0, 3, 1, 2)
    s = ssim(ta, tb, data_range=255, gaussian_weights=args.gaussian)
    p = psnr(ta, tb, data_range=255)
    r = rmse(ta, tb, data_range=255)
    finite = p[torch.isfinite(p)]
    result = {"pairs": len(a), "ssim_mean": float(s.mean()), "ssim_min": float(s.min()),
              "psnr_mean_db": float(finite.mean()) if len(finite) else float("inf"),
              "identical_pairs": int((~torch.isfinite(p)).sum()), "rmse_mean": float(r.mean())}
    with start_run("metrics", out=args.out) as run:
        run.write_config({"a": args.a, "b": args.b, "gaussian": args.gaussian})
        run.add_metrics(**result)
    for k, v in result.items():
        print(f"{k:16s} {v:.6g}" if isinstance(v, float) else f"{k:16s} {v}")
    return 0


def cmd_key_show(args: argparse.Namespace) -> int:
    from .keys import load_key

    key = load_key(args.keyfile)
    print(f"scheme      {key.scheme}")
    print(f"fingerprint {key.fingerprint}")
    print(f"key         {key!r}")
    return 0


def _parse_sets(items: Sequence[str] | None) -> dict[str, object]:
    """``--set key=value`` pairs: ints, floats, booleans, comma-separated tuples, else strings."""
    out: dict[str, object] = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = _parse_value(value.strip())
    return out


def _parse_value(text: str) -> object:
    if "," in text:
        return tuple(_parse_value(t) for t in text.split(",") if t)
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _scheme_settings(args: argparse.Namespace) -> dict[str, object]:
    settings = _parse_sets(getattr(args, "set", None))
    for name in ("k", "mode", "private_per_mix", "pixel_scale", "scope"):
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = value
    return settings


def _public_pool_for(args: argparse.Namespace, scheme: object, n_images: int,  # type: ignore[no-untyped-def]
                     image_shape: tuple[int, int, int]):
    """The public patch pool a cross-mode scheme mixes in (None for other schemes), loaded from --public or cut
    from its photos: one patch per public slot of every image, at most --public-patches."""
    from .challenge import public_pool

    s = scheme.settings  # type: ignore[attr-defined]
    if getattr(s, "mode", "") != "cross":
        return None
    if not args.public:
        raise InputError(f"{args.scheme} in cross mode needs --public (photos or a patch .npz)")
    h, _, c = image_shape
    if c == 1:
        raise InputError("cross-dataset InstaHide mixes colour patches: the private images must be colour too")
    return public_pool(args.public, min(args.public_patches, n_images * (s.k - s.p)), size=h, rng=args.seed)


def _check_key_apart(key: Path, out: Path) -> None:
    if key.resolve().is_relative_to(out.resolve()):
        raise InputError(f"{key}: keep the key apart from the data (--key must not be inside {out})")


def cmd_protect(args: argparse.Namespace) -> int:
    import numpy as np

    from .data import load_images
    from .fileio import save_npy
    from .keys import save_key
    from .registry import create_scheme
    from .runs import start_run

    out, keyfile = Path(args.out), Path(args.key)
    _check_key_apart(keyfile, out)
    if keyfile.exists() and not args.force:
        raise InputError(f"{keyfile}: exists; refusing to overwrite a key (use --force)")
    scheme = create_scheme(args.scheme, **_scheme_settings(args))
    if getattr(scheme, "data_kind", "images") == "features":
        return _protect_features(args, scheme, out, keyfile)
    data = load_images(args.input)
    h, w, c = data.image_shape
    s = scheme.settings
    public = _public_pool_for(args, scheme, len(data), data.image_shape)
    from .rng import as_generator
    from .schemes.base import encode_with, keygen_for

    with start_run("protect", out=args.run_out) as run:
        key = keygen_for(scheme, len(data), as_generator(args.seed), (c, h, w), 0 if public is None else len(public))
        z = encode_with(scheme, data.to_tensor(), key, None if public is None else public.to_tensor())
        save_npy(out / "encodings.npy", np.ascontiguousarray(z.permute(0, 2, 3, 1).numpy()))
        if data.labels is not None and hasattr(scheme, "mix_labels"):
            save_npy(out / "labels.npy", scheme.mix_labels(data.labels, key, data.num_classes).numpy())
        if public is not None:
            from .fileio import save_npz

            save_npz(keyfile.with_name(keyfile.name.replace(".safetensors", "") + ".public.npz"),
                     images=public.images, names=np.array(public.names))
        save_key(keyfile, key)
        run.write_config({"scheme": args.scheme, "settings": str(s), "input": args.input, "out": str(out)},
                         seed=args.seed, keys={"protect": key})
        run.add_metrics(images=len(data), encodings_shape=list(z.shape))
        run.save_grid("encodings", (z[:32].abs().clamp(0, 1)), ncol=8, scale=2, caption="|encodings| (first 32)")
    print(f"wrote {len(data)} encodings to {out}/encodings.npy; key {keyfile} (fingerprint {key.fingerprint})")
    return 0


def _load_features(path: Path) -> tuple["np.ndarray", dict[str, "np.ndarray"]]:  # noqa: F821
    """Float32 features from a .npy, or from a .npz (the array named ``features``, or its only array); the other
    arrays of a .npz (labels, names) are passed along untouched."""
    import numpy as np

    if path.suffix not in (".npy", ".npz") or not path.is_file():
        raise InputError(f"{path}: expected a .npy or .npz file of float32 features")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"{path}: not a numeric array file ({exc})") from None
    others: dict[str, np.ndarray] = {}
    if isinstance(loaded, np.ndarray):
        feats = loaded
    else:
        with loaded:
            names = list(loaded.files)
            name = "features" if "features" in names else (names[0] if len(names) == 1 else None)
            if name is None:
                raise InputError(f"{path}: holds {names}; name the feature array 'features'")
            feats = loaded[name]
            others = {k: loaded[k] for k in names if k != name}
    if feats.dtype != np.float32 or feats.ndim < 2:
        raise InputError(f"{path}: expected float32 features N × D, got {feats.dtype} {feats.shape}")
    return feats, others


def _protect_features(args: argparse.Namespace, scheme: object, out: Path, keyfile: Path) -> int:
    from .fileio import save_npy, save_npz
    from .keys import save_key
    from .rng import as_generator
    from .runs import start_run

    feats, others = _load_features(Path(args.input))
    s = scheme.settings  # type: ignore[attr-defined]
    with start_run("protect", out=args.run_out) as run:
        key = scheme.keygen(len(feats), as_generator(args.seed),  # type: ignore[attr-defined]
                            shape=feats.shape[1:] if s.scope == "element" else ())
        z = scheme.encode(feats, key)  # type: ignore[attr-defined]
        save_npy(out / "features.npy", z)  # float32 bit patterns, written as they are
        if others:
            save_npz(out / "extra.npz", **others)
        save_key(keyfile, key)
        run.write_config({"scheme": args.scheme, "settings": str(s), "input": args.input, "out": str(out)},
                         seed=args.seed, keys={"protect": key})
        run.add_metrics(vectors=len(feats), features_shape=list(feats.shape))
    print(f"wrote {len(feats)} encrypted feature vectors to {out}/features.npy; key {keyfile} "
          f"(fingerprint {key.fingerprint})")
    return 0


def cmd_reveal(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .data import to_uint8
    from .errors import NotInvertibleError
    from .fileio import save_npz
    from .keys import load_key
    from .registry import create_scheme

    key = load_key(args.key, expect=args.scheme)
    import dataclasses

    scheme = create_scheme(args.scheme, **dataclasses.asdict(key.settings))
    if not scheme.invertible:
        raise NotInvertibleError(f"{args.scheme} cannot be decoded, even with its key")
    path = Path(args.input)
    if getattr(scheme, "data_kind", "images") == "features":
        feats, _ = _load_features(path)
        plain = scheme.decode(feats, key)
        out = Path(args.out)
        if out.suffix != ".npy":
            raise InputError(f"{out}: decrypted features are written as .npy")
        from .fileio import save_npy

        save_npy(out, plain)
        print(f"decrypted {len(plain)} feature vectors to {out} (key fingerprint {key.fingerprint})")
        return 0
    if path.suffix != ".npy":
        raise InputError(f"{path}: reveal reads the encodings.npy that protect wrote")
    try:
        enc = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"{path}: not a numeric .npy array ({exc})") from None
    if enc.ndim != 4 or enc.dtype != np.float32:
        raise InputError(f"{path}: expected float32 N×H×W×C encodings, got {enc.dtype} {enc.shape}")
    z = torch.from_numpy(np.ascontiguousarray(enc.transpose(0, 3, 1, 2)))
    kwargs = {}
    if getattr(key, "pool_size", 0):
        pub_path = Path(args.public) if args.public else Path(args.key).with_name(
            Path(args.key).name.replace(".safetensors", "") + ".public.npz")
        from .data import load_images

        kwargs["public"] = load_images(pub_path).to_tensor()
    x = scheme.decode(z, key, **kwargs)
    images = to_uint8(x).permute(0, 2, 3, 1).numpy()
    out = Path(args.out)
    if out.suffix != ".npz":
        raise InputError(f"{out}: revealed images are written as .npz")
    save_npz(out, images=images)
    print(f"revealed {len(images)} images to {out} (key fingerprint {key.fingerprint})")
    return 0


def _quality_model(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .quality.models import BrisqueQuality, TorchScriptQuality

    if args.model == "brisque":
        return BrisqueQuality(threshold=args.threshold)
    if args.model.startswith("koncept512:"):
        from .quality.koncept import KonCept512Quality

        return KonCept512Quality(args.model.split(":", 1)[1], threshold=args.threshold)
    lo, hi = args.output_range
    a, b = args.input_range
    return TorchScriptQuality(args.model, input_range=(a, b), output_range=(lo, hi), threshold=args.threshold)


def cmd_camouflage(args: argparse.Namespace) -> int:
    import torch

    from .data import load_photos
    from .quality.camouflage import CamouflageSettings, camouflage_photos
    from .runs import start_run

    model = _quality_model(args)
    fields = {"method": args.method, "jpeg": not args.no_jpeg, "quality": args.quality, "psnr": args.psnr,
              "steps": args.steps, **_parse_sets(args.set)}
    import dataclasses

    known = {f.name for f in dataclasses.fields(CamouflageSettings)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise InputError(f"camouflage: unknown setting(s) {unknown}; known: {', '.join(sorted(known))}")
    settings = CamouflageSettings(**fields)  # type: ignore[arg-type]
    photos, names = load_photos(args.input, channels=3)   # grey photos become RGB
    out = Path(args.out)
    with start_run("camouflage", out=args.run_out) as run:
        run.write_config({"input": args.input, "out": str(out), "model": args.model, "threshold": args.threshold,
                          "settings": str(settings)}, seed=args.seed)
        rows, pairs = camouflage_photos(model, photos, names, out, settings, rng=args.seed, batch=args.batch,
                                        max_pixels=args.max_pixels)
        good = [r for r in rows if r["score"] > model.threshold]
        summary = {"photos": len(rows), "good quality": len(good),
                   "success rate (good photos, after JPEG)": round(sum(r["success"] for r in good) / len(good), 4)
                   if good else None,
                   "mean PSNR": round(sum(r["PSNR"] for r in rows) / len(rows), 2),
                   "mean seconds per photo": round(sum(r["seconds"] for r in rows) / len(rows), 1)}
        run.add_metrics(camouflage=rows, summary=summary)
        thumbs = []
        for x, y in pairs[:6]:
            small = [torch.nn.functional.interpolate(t[None], size=(96, 128), mode="area")[0] for t in (x, y)]
            thumbs += [small[0], small[1], ((small[1] - small[0]) * 10 + 0.5).clamp(0, 1)]
        run.save_grid("camouflage", torch.stack(thumbs), ncol=3, scale=2,
                      caption="original / camouflaged / difference ×10 (thumbnails)")
    print(f"camouflaged {len(rows)} photos into {out}; " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .data import load_images
    from .registry import create_scheme
    from .runs import start_run
    from .train import TrainSettings, train

    settings = TrainSettings(model=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             weight_decay=args.weight_decay, schedule=args.schedule, precision=args.precision,
                             augment=not args.no_augment, infer_encodings=args.infer_encodings)
    train_set, test_set = load_images(args.data), load_images(args.test, split="test")
    scheme_settings = _scheme_settings(args)
    if args.policy is not None:
        if args.scheme not in ("identity", "ats"):
            raise InputError("train: --policy applies an ATS policy; it does not combine with --scheme "
                             f"{args.scheme}")
        args.scheme = "ats"
        scheme_settings |= {"policy": args.policy, "always": args.always}
    elif args.always:
        raise InputError("train: --always goes with --policy")
    scheme = create_scheme(args.scheme, **scheme_settings)
    snapshots = _epoch_list(args.snapshots, args.epochs)
    s = scheme.settings
    public = _public_pool_for(args, scheme, len(train_set), train_set.image_shape)
    if args.resume:
        run_path = Path(args.resume)
        if not (run_path / "checkpoint.pt").is_file():
            raise InputError(f"{run_path}: no checkpoint.pt to resume from")
        from .runs import Run

        run = Run(run_path, "train")
    else:
        run = start_run("train", out=args.out)
        run.write_config({"scheme": args.scheme, "scheme_settings": str(s), "train": vars(args) | {"func": None},
                          "settings": settings.__dict__}, seed=args.seed)
    with run:
        def log_epoch(rec: dict) -> None:
            run.log(f"epoch {rec['epoch']}: loss {rec['train_loss']:.4f}, test accuracy {rec['test_acc']:.4f}, "
                    f"{rec['seconds']:.1f}s")
            if not args.quiet:
                print(f"epoch {rec['epoch']:3d}  loss {rec['train_loss']:.4f}  test acc {rec['test_acc']:.4f}  "
                      f"({rec['seconds']:.0f}s)", flush=True)

        result = train(train_set, test_set, scheme=scheme, public=public, settings=settings, seed=args.seed,
                       checkpoint=run.path / "checkpoint.pt", resume=bool(args.resume), on_epoch=log_epoch,
                       snapshots=snapshots, snapshot_dir=run.path)
        if result["classifier"] is not None:
            from .models import save_model

            clf = result["classifier"]
            save_model(run.path / "model.safetensors", clf, arch=settings.model,
                       num_classes=max(train_set.num_classes, test_set.num_classes), mean=clf.mean, std=clf.std,
                       in_channels=train_set.image_shape[2], info={"test_acc": result["test_acc"],
                                                                   "scheme": str(s)})
        hist = result["history"]
        metrics = {k: v for k, v in result.items() if k not in ("history", "model_state", "classifier")}
        metrics["accuracy_curve"] = {"x": [h["epoch"] for h in hist],
                                     "y": {"test accuracy": [h["test_acc"] for h in hist]},
                                     "xlabel": "epoch", "ylabel": "clean test accuracy"}
        run.add_metrics(**metrics)
    print(f"test accuracy {result['test_acc']:.4f} after {len(hist)} epochs ({result['seconds']:.0f}s); "
          f"run folder {run.path}")
    return 0


def _epoch_list(text: str | None, epochs: int) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        out = tuple(sorted({int(t) for t in text.split(",") if t.strip()}))
    except ValueError:
        raise InputError(f"--snapshots expects epochs such as 1,10, got {text!r}") from None
    bad = [e for e in out if not 1 <= e <= epochs]
    if bad:
        raise InputError(f"--snapshots: epochs must lie in 1..{epochs}, got {bad}")
    return out


def cmd_search(args: argparse.Namespace) -> int:
    import json

    import torch

    from .ats_search import SearchSettings, search
    from .data import load_images
    from .models import Normalized, create_model, load_model, save_model
    from .rng import as_generator
    from .runs import Run, start_run
    from .train import TrainSettings, train

    settings = SearchSettings(**({"candidates": args.candidates, "keep": args.keep, "workers": args.workers,
                                  "acc_threshold": args.acc_threshold, "always": not args.honour_probabilities}
                                 | _parse_sets(args.set)))  # type: ignore[arg-type]
    pool = load_images(args.pool, split="test")
    if pool.labels is None:
        raise InputError(f"{args.pool}: the scoring images need labels")
    if pool.image_shape[2] != 3:
        pool = pool.to_rgb()
    if args.resume:
        run = Run(Path(args.resume), "search")
        if not (run.path / "trained.safetensors").is_file():
            raise InputError(f"{args.resume}: no trained.safetensors to resume from")
    else:
        run = start_run("search", out=args.out)
        run.write_config({"search": vars(args) | {"func": None}, "settings": settings.__dict__}, seed=args.seed)
    partial = run.path / "scores.jsonl"
    with run:
        gen = as_generator(args.seed)
        if not (run.path / "trained.safetensors").is_file():
            data = load_images(args.data)
            share = data.subset(n=max(1, int(round(len(data) * args.share))), rng=gen)
            run.log(f"training {args.model} on {len(share)} images ({args.share:.0%}) for {args.epochs} epochs")
            r = train(share, pool, settings=TrainSettings(model=args.model, epochs=args.epochs,
                                                                         lr=0.1, batch_size=128),
                      seed=args.seed, progress=None if not args.quiet else False)
            clf = r["classifier"]
            save_model(run.path / "trained.safetensors", clf, arch=args.model, num_classes=pool.num_classes,
                       mean=clf.mean, std=clf.std, info={"test_acc": r["test_acc"], "share": args.share})
            run.log(f"briefly trained model: test accuracy {r['test_acc']:.4f}")
        trained = load_model(run.path / "trained.safetensors")
        if not (run.path / "init.safetensors").is_file():    # kept, so that a resumed search scores the same net
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(gen.integers(0, 2**62)))
                init = Normalized(create_model(args.model, num_classes=pool.num_classes), trained.mean.flatten(),
                                  trained.std.flatten()).eval()
            save_model(run.path / "init.safetensors", init, arch=args.model, num_classes=pool.num_classes,
                       mean=init.mean, std=init.std, info={"initialisation": True})
        init = load_model(run.path / "init.safetensors")
        done = [json.loads(line) for line in partial.read_text().splitlines()] if partial.is_file() else []
        candidates = [p.strip() for p in args.policies.split(",")] if args.policies else None

        def save(r: dict) -> None:
            with partial.open("a") as f:
                f.write(json.dumps(r) + "\n")

        res = search(trained=trained, init=init, images=pool.to_tensor(), labels=torch.from_numpy(pool.labels),
                     settings=settings, candidates=candidates, rng=args.seed, done=done, on_result=save,
                     progress=None if not args.quiet else False,
                     extra=[p.strip() for p in args.also.split(",") if p.strip()] if args.also else ())
        run.add_metrics(chosen=", ".join(res["chosen"]) or "none admissible", acc_threshold=res["threshold"],
                        candidates=len(res["table"]), seconds=res["seconds"], workers=res["workers"],
                        ranked_policies=[{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                                         for r in res["table"]])
        from .fileio import write_text

        write_text(run.path / "search.json", json.dumps(res, indent=1) + "\n")
    print(f"{'policy':20s} {'S_pri':>7s} {'S_acc':>8s}  chosen")
    for r in res["table"][:args.show]:
        print(f"{r['policy']:20s} {r['s_pri']:7.4f} {r['s_acc']:8.2f}  {'*' if r['chosen'] else ''}")
    print(f"chosen (S_acc >= {res['threshold']:.2f}, lowest S_pri): {', '.join(res['chosen']) or 'none'}; "
          f"table in {run.path / 'search.json'}")
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    import torch

    from .data import load_images
    from .gradient_privacy import attack_model, export_rating_set, summary
    from .models import load_model
    from .runs import start_run

    model = load_model(args.model_file)
    data = load_images(args.data, split="test")
    if data.labels is None:
        raise InputError(f"{args.data}: the attacked images need labels (the client's labels)")
    if data.image_shape[2] != 3 and len(model.mean.flatten()) == 3:
        data = data.to_rgb()
    sub = data.subset(n=args.images, rng=args.seed)
    x, y = sub.to_tensor(), torch.from_numpy(sub.labels).long()
    classifier = load_model(args.classifier) if args.classifier else None
    attack_settings = _parse_sets(args.set)
    if args.iterations:
        attack_settings["iterations"] = args.iterations
    with start_run(f"attack-{args.attack}", out=args.out) as run:
        run.write_config({"attack": vars(args) | {"func": None}, "settings": attack_settings}, seed=args.seed)
        res = attack_model(model, x, y, policy=args.policy or "none", always=args.always, attack=args.attack,
                           attack_settings=attack_settings, known_labels=not args.no_labels, classifier=classifier,
                           rng=args.seed, progress=None if not args.quiet else False)
        sm = summary(res)
        run.add_metrics(**sm, attack=res["attack"], iterations=res["iterations"], seconds=res["seconds"],
                        policy=res["policy"], images=len(x),
                        per_image=[{"psnr": round(float(p), 3), "ssim": round(float(q), 4), "label": int(t),
                                    "label_used": int(u)}
                                   for p, q, t, u in zip(res["psnr"], res["ssim"], y, res["labels_used"])])
        run.save_grid("reconstructions", torch.cat([x, res["transformed"], res["reconstructions"]]), ncol=len(x),
                      scale=2, caption="rows: original, what the client's gradient was computed on, "
                                       "reconstruction")
        if args.rating_set:
            export_rating_set(run.path / "rating", {"original": x, f"{res['policy']}": res["reconstructions"]},
                              y.tolist(), data.classes or [str(i) for i in range(data.num_classes)], rng=args.seed)
    mr = f", MR {sm['mr']:.3f}" if "mr" in sm else ""
    print(f"{args.attack} on {len(x)} images (policy {res['policy']}): PSNR {sm['psnr']:.2f} dB, "
          f"SSIM {sm['ssim']:.3f}{mr} ({res['seconds']:.0f}s); run folder {run.path}")
    return 0


def cmd_challenge_make(args: argparse.Namespace) -> int:
    from .challenge import make_challenge, public_pool
    from .data import load_images
    from .runs import start_run

    private = load_images(args.private, split=args.split)
    if private.image_shape[2] != 3:
        private = private.to_rgb()
    needed = args.n_private * (args.k - 2)
    public = public_pool(args.public, needed, size=private.image_shape[0], rng=args.seed)
    with start_run("challenge-make", out=args.run_out) as run:
        summary = make_challenge(private, public, args.out, args.truth, n_private=args.n_private,
                                 per_image=args.per_image, k=args.k, rng=args.seed)
        run.write_config({"private": args.private, "public": args.public, "n_private": args.n_private,
                          "per_image": args.per_image, "k": args.k, "out": args.out, "truth": args.truth},
                         seed=args.seed)
        run.add_metrics(**summary)
        import numpy as np

        enc = np.load(Path(args.out) / "encryption.npy")[:40]
        run.save_grid("encodings", np.clip(np.round(np.abs(enc) * 255), 0, 255).astype(np.uint8), ncol=10, scale=2,
                      caption="|encodings| (first 40)")
    print(f"challenge: {summary['encodings']} encodings in {args.out} (encryption.npy, label.npy); "
          f"truth in {args.truth}")
    return 0


def cmd_challenge_attack(args: argparse.Namespace) -> int:
    from .attacks.instahide_challenge import ChallengeAttackSettings, attack_challenge
    from .runs import Run

    settings = ChallengeAttackSettings(n_private=args.n_private, use_labels=not args.no_labels,
                                       colour=not args.no_colour, seed=args.seed, rounds=args.rounds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = Run(out, "challenge-attack")
    try:
        res = attack_challenge(args.dir, out, public=args.public, aux=args.aux, settings=settings,
                               prior=args.prior, log=run.log)
        run.save_grid("private_images", res["private_images"], ncol=10, scale=2,
                      caption=f"the {len(res['private_images'])} recovered private images")
        run.add_metrics(**{k: v for k, v in res.items() if k not in ("private_images", "settings")})
    finally:
        run.close()
    times = ", ".join(f"{k} {v:.1f}s" for k, v in res["seconds"].items())
    print(f"challenge attack: {res['encodings']} recoveries in {res['decryption']}; "
          f"{res.get('images_found', '?')} private images in {out / 'private_images.png'}; {times}")
    return 0


def cmd_challenge_prepare(args: argparse.Namespace) -> int:
    from .attacks.instahide_prior import PriorSettings, prepare_prior

    try:
        passes = tuple(_positive_int(v.strip()) for v in args.passes.split(","))
    except argparse.ArgumentTypeError as exc:
        raise InputError(f"--passes: {exc} (a comma-separated list of T, e.g. 10,20,50)") from None
    settings = PriorSettings(passes=passes, challenges=args.challenges, steps=args.steps, seed=args.seed)
    rec = prepare_prior(args.aux, args.out, public=args.public, settings=settings, log=print)
    record = Path(args.out).with_suffix(".json")
    from .fileio import write_json

    write_json(record, {"file": Path(args.out).name, **rec})
    print(f"challenge prior: {args.out} (sha256 {rec['sha256'][:16]}…; {rec['pairs']} training pairs, "
          f"{rec['simulation_seconds'] / 60:.0f} min simulating, {rec['training_seconds'] / 60:.0f} min training); "
          f"record in {record}")
    return 0


def cmd_challenge_score(args: argparse.Namespace) -> int:
    import json

    from .challenge import score_challenge, summary_json
    from .runs import start_run

    scores = score_challenge(args.truth, args.recovered)
    with start_run("challenge-score", out=args.out) as run:
        run.write_config({"truth": args.truth, "recovered": args.recovered})
        summary = json.loads(summary_json(scores))
        run.add_metrics(**summary, per_image_best_ssim=[round(float(v), 4) for v in scores["per_image_best_ssim"]])
    if args.json:
        print(summary_json(scores))
    else:
        print(f"success rate (Max_SSIM > 0.8)  {scores['success_rate']:.4f}")
        print(f"mean Max_SSIM                  {scores['mean_max_ssim']:.4f}")
        print(f"mean Mean_SSIM                 {scores['mean_mean_ssim']:.4f}")
        print(f"mean Min_RMSE                  {scores['mean_min_rmse']:.4f}")
        print(f"mean Mean_RMSE                 {scores['mean_mean_rmse']:.4f}")
        print(f"private images recovered       {scores['private_recovered']} of {scores['private_images']}")
    return 0


# -- parser --------------------------------------------------------------------------------------------------------
def _add_scheme_options(p: argparse.ArgumentParser) -> None:
    """Scheme settings shared by protect and train (read back by _scheme_settings and _public_pool_for)."""
    p.add_argument("--public", help="public photos folder or patch .npz (cross-dataset InstaHide)")
    p.add_argument("--public-patches", type=_positive_int, default=10000,
                   help="at most this many patches to cut from photos (default 10000)")
    p.add_argument("--k", type=_positive_int, help="InstaHide: images per mix")
    p.add_argument("--mode", choices=["inside", "cross"], help="InstaHide: inside or cross dataset")
    p.add_argument("--private-per-mix", type=_positive_int, help="InstaHide cross mode: private images per mix")
    p.add_argument("--pixel-scale", choices=["[-1,1]", "[0,1]", "normalize"], help="InstaHide pixel scale")
    p.add_argument("--scope", choices=["fixed", "vector", "element"],
                   help="ShuffleBits: one key for everything, per vector (default) or per number")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any scheme setting")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="masquerade",
        description="Protect images and features, attack the protections, score privacy and utility.")
    parser.add_argument("--version", action="version", version=f"masquerade {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="offline tour on bundled data; writes an HTML report")
    p.add_argument("--out", help="run folder (default runs/demo/<timestamp>)")
    p.add_argument("--seed", type=_seed, default=0, help="seed for a reproducible demo (default 0)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("report", help="build an HTML report from run folders")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--out", help="HTML file (default: report.html in the run folder)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("list", help="list schemes, attacks and bundled data")
    p.set_defaults(func=cmd_list)

    data = sub.add_parser("data", help="inspect, download and prepare data")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data.set_defaults(func=lambda a: _missing_action(data))
    p = dsub.add_parser("info", help="load a data source and summarise it")
    p.add_argument("source", help="folder, image, .npz, CIFAR archive or bundled:NAME")
    p.add_argument("--split", default="train", choices=["train", "test"], help="CIFAR split")
    p.set_defaults(func=cmd_data_info)
    p = dsub.add_parser("fetch", help="download a data set (checksum verified)")
    p.add_argument("name", choices=["cifar10", "cifar100"])
    p.add_argument("--root", help="folder to keep it in (default ~/.cache/masquerade/datasets)")
    p.add_argument("--url", help="a mirror of the official archive")
    p.add_argument("--md5", help="expected MD5 (defaults to the published one)")
    p.set_defaults(func=cmd_data_fetch)
    p = dsub.add_parser("patches", help="cut a SIFT-filtered public patch pool from photos")
    p.add_argument("--from", dest="photos", required=True, help="folder of photos or bundled:photos")
    p.add_argument("--out", required=True, help="output .npz (images, names)")
    p.add_argument("--n", type=_positive_int, required=True, help="number of patches")
    p.add_argument("--size-min", type=_positive_int, default=64, help="smallest crop side in pixels (64)")
    p.add_argument("--size-max", type=_positive_int, default=160, help="largest crop side in pixels (160)")
    p.add_argument("--out-size", type=_positive_int, default=32, help="patch side after resizing (32)")
    p.add_argument("--min-keypoints", type=int, default=40, help="keep crops with more SIFT keypoints than this")
    p.add_argument("--seed", type=_seed, help="seed (reproducible and cached); default: OS randomness")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the patch cache")
    p.add_argument("--run-out", help="run folder (default runs/data-patches/<timestamp>)")
    p.set_defaults(func=cmd_data_patches)

    p = sub.add_parser("metrics", help="SSIM / PSNR / RMSE between two image sets of equal shape")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--gaussian", action="store_true", help="Gaussian-weighted SSIM window")
    p.add_argument("--out", help="run folder")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("protect", help="protect a data set with a scheme; writes encodings and a key file")
    p.add_argument("scheme", help="scheme name (masquerade list)")
    p.add_argument("--in", dest="input", required=True,
                   help="images: folder, .npz, CIFAR archive or bundled:NAME; features (shufflebits): .npy/.npz")
    p.add_argument("--out", required=True,
                   help="output folder for encodings.npy (and labels.npy), or features.npy for feature schemes")
    p.add_argument("--key", required=True, help="key file to write (.safetensors), kept apart from --out")
    _add_scheme_options(p)
    p.add_argument("--seed", type=_seed, help="seed for a reproducible experiment (default: OS randomness)")
    p.add_argument("--force", action="store_true", help="overwrite an existing key file")
    p.add_argument("--run-out", help="run folder")
    p.set_defaults(func=cmd_protect)

    p = sub.add_parser("reveal", help="decode encodings with their key (invertible schemes)")
    p.add_argument("scheme")
    p.add_argument("--in", dest="input", required=True, help="encodings.npy (features.npy) written by protect")
    p.add_argument("--key", required=True, help="the key file protect wrote")
    p.add_argument("--public", help="the public patch .npz (cross-mode InstaHide; default: beside the key)")
    p.add_argument("--out", required=True, help="output .npz of uint8 images (.npy of features)")
    p.set_defaults(func=cmd_reveal)

    p = sub.add_parser("camouflage", help="make a quality model call good photos bad, through JPEG re-compression")
    p.add_argument("--in", dest="input", required=True, help="photos: a folder, one file, or bundled:photos")
    p.add_argument("--out", required=True, help="folder for the camouflaged JPEG files")
    p.add_argument("--method", choices=["pgd", "cw", "filter"], default="pgd",
                   help="pgd (L2 budget), cw (Carlini-Wagner L2) or filter (visible tone curves); default pgd")
    p.add_argument("--model", default="brisque",
                   help="brisque (default), koncept512:WEIGHTS.pth (the task's model, koniq-PyTorch port), or a "
                        "TorchScript .pt / torch.export .pt2 file")
    p.add_argument("--input-range", type=float, nargs=2, default=(0.0, 1.0), metavar=("LO", "HI"),
                   help="pixel range a user model expects (KonCept512: -1 1)")
    p.add_argument("--output-range", type=float, nargs=2, default=(0.0, 100.0), metavar=("LO", "HI"),
                   help="score range of a user model, mapped onto 0-100")
    p.add_argument("--threshold", type=float, default=50.0, help="good quality above this score (default 50)")
    p.add_argument("--quality", type=_int_at_least(1, "a JPEG quality"), default=90,
                   help="JPEG quality of the re-compression and of the output files (default 90)")
    p.add_argument("--psnr", type=float, default=40.0, help="pgd: L2 budget as a PSNR in dB (default 40)")
    p.add_argument("--steps", type=_positive_int, default=60, help="pgd: gradient steps (default 60)")
    p.add_argument("--no-jpeg", action="store_true", help="optimise without the differentiable JPEG")
    p.add_argument("--batch", type=_positive_int, default=4, help="photos of one size optimised together")
    p.add_argument("--max-pixels", type=_positive_int, default=4096 * 4096, help="refuse larger photos")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any CamouflageSettings field")
    p.add_argument("--seed", type=_seed, help="seed for the JPEG qualities drawn while optimising")
    p.add_argument("--run-out", help="run folder")
    p.set_defaults(func=cmd_camouflage)

    p = sub.add_parser("train", help="train a classifier on protected data and test it on clean data")
    p.add_argument("--data", required=True, help="training images (labelled)")
    p.add_argument("--test", required=True, help="test images (labelled; CIFAR archives use their test split)")
    p.add_argument("--scheme", default="identity", help="protection applied on the fly (default identity)")
    _add_scheme_options(p)
    p.add_argument("--model", default="fastresnet",
                   help="fastresnet (default), resnet9, resnet18, resnet20, resnet20-4, convnet, convnet16, lenet-zhu")
    p.add_argument("--policy", help="train with an ATS transformation policy, e.g. 3-1-7 or 3-1-7+43-18-18")
    p.add_argument("--always", action="store_true",
                   help="apply every sub-policy of --policy always (the published code), ignoring probabilities")
    p.add_argument("--snapshots", metavar="E1,E2", help="also save the model after these epochs (to attack them)")
    p.add_argument("--epochs", type=_positive_int, default=15)
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--schedule", choices=["onecycle", "step"], default="onecycle")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--infer-encodings", type=int, default=0, metavar="T",
                   help="also test in the paper's inference mode: average over T encodings")
    p.add_argument("--seed", type=_seed)
    p.add_argument("--out", help="run folder (default runs/train/<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("search", help="ATS: search transformation policies against gradient inversion")
    p.add_argument("--data", required=True, help="training images; a share trains the model S_pri is scored on")
    p.add_argument("--pool", required=True, help="labelled held-out images the scores are computed on")
    p.add_argument("--model", default="resnet20", help="architecture (default resnet20)")
    p.add_argument("--share", type=float, default=0.1, help="share of --data for the brief training (0.1)")
    p.add_argument("--epochs", type=_positive_int, default=10, help="epochs of the brief training (10)")
    p.add_argument("--candidates", type=_positive_int, default=100, help="random candidate policies (100)")
    p.add_argument("--policies", help="score these comma-separated policies instead of random candidates")
    p.add_argument("--also", metavar="P1,P2", help="score these policies too, for reference (e.g. none,3-1-7)")
    p.add_argument("--keep", type=_positive_int, default=5, help="policies chosen (5)")
    p.add_argument("--acc-threshold", type=float, default=-85.0,
                   help="admit policies with S_acc >= this (ATS: -85, for 64-image batches)")
    p.add_argument("--honour-probabilities", action="store_true",
                   help="score policies with their sub-policies' probabilities (default: always applied, as ATS)")
    p.add_argument("--workers", type=int, default=0, help="processes (0 = one per core)")
    p.add_argument("--show", type=_positive_int, default=15, help="table rows printed (15)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any SearchSettings field")
    p.add_argument("--seed", type=_seed)
    p.add_argument("--out", help="run folder (default runs/search/<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted search")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("attack", help="gradient inversion of a model's shared gradients (per image, batch 1)")
    p.add_argument("attack", choices=["inverting_gradients", "dlg"])
    p.add_argument("--model-file", required=True, help="model file (.safetensors from train, search or snapshots)")
    p.add_argument("--data", required=True, help="the clients' private images (labelled); --images are drawn")
    p.add_argument("--images", type=_positive_int, default=8, help="images attacked (8)")
    p.add_argument("--policy", help="the clients' ATS policy (default none)")
    p.add_argument("--always", action="store_true", help="apply every sub-policy always (the published code)")
    p.add_argument("--iterations", type=_positive_int, help="optimisation steps (IG 4800, DLG 300)")
    p.add_argument("--no-labels", action="store_true", help="labels unknown: read them off the gradient (iDLG)")
    p.add_argument("--classifier", help="a clean model file for model-based recognition (MR)")
    p.add_argument("--rating-set", action="store_true", help="export a HitL rating set into the run folder")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any InversionSettings field")
    p.add_argument("--seed", type=_seed)
    p.add_argument("--out", help="run folder (default runs/attack-<name>/<timestamp>)")
    p.set_defaults(func=cmd_attack)

    ch = sub.add_parser("challenge", help="make, attack or score an InstaHide Challenge")
    csub = ch.add_subparsers(dest="challenge_command", metavar="ACTION")
    ch.set_defaults(func=lambda a: _missing_action(ch))
    p = csub.add_parser("make", help="make a challenge (official recipe)")
    p.add_argument("--private", required=True, help="labelled private images (e.g. a CIFAR-10 .npz)")
    p.add_argument("--split", default="test", choices=["train", "test"], help="CIFAR archive split (test)")
    p.add_argument("--public", required=True, help="photos folder (patches are cut) or a ready patch .npz")
    p.add_argument("--out", required=True, help="challenge folder: encryption.npy, label.npy")
    p.add_argument("--truth", required=True, help="ground-truth folder (kept apart)")
    p.add_argument("--n-private", type=_positive_int, default=100)
    p.add_argument("--per-image", type=_positive_int, default=50)
    p.add_argument("--k", type=_positive_int, default=6)
    p.add_argument("--seed", type=_seed, help="seed (reproducible); default: OS randomness")
    p.add_argument("--run-out", help="run folder")
    p.set_defaults(func=cmd_challenge_make)
    p = csub.add_parser("attack", help="recover the private images from a challenge's encodings alone")
    p.add_argument("dir", help="challenge folder (encryption.npy, label.npy); the truth folder is never read")
    p.add_argument("--out", required=True, help="attack folder: decryption.npy, private_images.*, stages/ (resumes)")
    p.add_argument("--public", help="public photos (folder) or patch .npz for the public pixel statistics "
                                    "(default: bundled:photos)")
    p.add_argument("--aux", help="labelled images disjoint from the private ones (.npz) to learn the colour "
                                 "correction on a simulated challenge")
    p.add_argument("--n-private", type=_positive_int, help="number of private images if known (default: estimated "
                                                           "per class from the spectrum)")
    p.add_argument("--no-labels", action="store_true", help="ignore label.npy (coefficients and classes unknown)")
    p.add_argument("--no-colour", action="store_true", help="skip the learned colour correction")
    p.add_argument("--seed", type=_seed, default=0, help="the attacker's own seed (clustering, simulation)")
    p.add_argument("--rounds", type=_nonnegative_int, default=8,
                   help="reconstruct + reassign rounds after the clustering (default 8; 0 = clustering only)")
    p.add_argument("--prior", default="default",
                   help="learned image prior: a .safetensors from `challenge prepare`, 'none', or 'default' (the "
                        "weights shipped with the package)")
    p.set_defaults(func=cmd_challenge_attack)
    p = csub.add_parser("prepare", help="train the attack's image prior on challenges simulated from your own "
                                        "labelled images (offline, once)")
    p.add_argument("--aux", required=True, help="labelled images disjoint from any private set (e.g. CIFAR-10 "
                                                "training images)")
    p.add_argument("--public", help="photos to cut public patches from (default: bundled:photos)")
    p.add_argument("--out", required=True, help="the prior's .safetensors (a .json record is written beside it)")
    p.add_argument("--passes", default="10,20,50", help="T of the simulated challenges (default 10,20,50)")
    p.add_argument("--challenges", type=_positive_int, default=20, help="simulated challenges per T (default 20)")
    p.add_argument("--steps", type=_positive_int, default=8000, help="training steps (default 8000)")
    p.add_argument("--seed", type=_seed, default=0)
    p.set_defaults(func=cmd_challenge_prepare)
    p = csub.add_parser("score", help="score recoveries against the truth")
    p.add_argument("--truth", required=True)
    p.add_argument("--recovered", required=True, help="an attack's output folder (its decryption.npy), a folder of "
                                                      "i_recover.png, or an .npy E×H×W×C")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--out", help="run folder")
    p.set_defaults(func=cmd_challenge_score)

    key = sub.add_parser("key", help="inspect key files (never prints key material)")
    ksub = key.add_subparsers(dest="key_command", metavar="ACTION")
    key.set_defaults(func=lambda a: _missing_action(key))
    p = ksub.add_parser("show", help="scheme and fingerprint of a key file")
    p.add_argument("keyfile")
    p.set_defaults(func=cmd_key_show)
    return parser


def _missing_action(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    from .progress import set_quiet

    set_quiet(args.quiet)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("masquerade: interrupted", file=sys.stderr)
        return 130
    except MasqueradeError as exc:
        if args.debug:
            raise
        print(f"masquerade: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into a clean message
        if args.debug:
            raise
        print(f"masquerade: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
