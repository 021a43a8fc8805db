"""The evaluation's plan: threat levels, the scheme settings compared, and the cells (one unit of work each) that
:func:`masquerade.workflows.evaluate.evaluate` runs. Plain data, no computation."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from masquerade.contracts import Knowledge, public_slots, settings_against
from masquerade.errors import InputError

__all__ = [
    "LEVELS",
    "LEVEL_NAMES",
    "TIMING_FIELDS",
    "SchemeSetting",
    "PLAIN",
    "is_plain",
    "default_settings",
    "EvaluateSettings",
    "Cell",
    "plan_cells",
    "knowledge",
]

K = Knowledge
LEVELS: dict[int, frozenset[Knowledge]] = {
    1: frozenset({K.ENCODINGS, K.LABELS, K.PUBLIC_POOL}),
    2: frozenset({K.ENCODINGS, K.LABELS, K.PUBLIC_POOL, K.AUXILIARY}),
    3: frozenset({K.ENCODINGS, K.LABELS, K.PUBLIC_POOL, K.AUXILIARY, K.KNOWN_PAIRS}),
}
LEVEL_NAMES = {1: "protected data only", 2: "+ the data distribution", 3: "+ known pairs"}
SHARES = ("data", "gradients", "features")
# fields that measure time on the machine that ran the cell: the only ones that differ between two runs of a plan
TIMING_FIELDS = ("cost_s", "train_s", "train_vs_plain", "encode_images_per_s")


@dataclass(frozen=True)
class SchemeSetting:
    """One scheme with one set of settings, as a row group of the scorecard.

    ``params`` may hold ``"data"`` for InstaHide's ``mean``/``std``: the training images' own statistics.
    ``per_image``: encodings released per private image (InstaHide draws a fresh one-time key per pass)."""

    scheme: str
    label: str
    params: tuple[tuple[str, Any], ...] = ()
    per_image: int = 1
    public: bool = False  # mixes in a public pool (InstaHide across datasets)
    note: str = ""  # what a reader should know to read the row (shown in the report)
    shares: str = "data"  # what leaves the owner: the protected "data", "gradients" of them (ATS), or
    # "features": deep features of them (ShuffleBits)

    def __post_init__(self) -> None:
        if self.shares not in SHARES:
            raise InputError(f"evaluate: a setting shares one of {SHARES}, got {self.shares!r}")

    @property
    def slug(self) -> str:
        return _slug(f"{self.scheme}-{self.label}")


# the unprotected baseline: its utility is every cost's reference and its model the recogniser of MR
PLAIN = SchemeSetting("identity", "no protection")


def is_plain(setting: SchemeSetting) -> bool:
    """Whether ``setting`` releases the images unprotected (:data:`PLAIN`, or a plan's own setting of its scheme)."""
    return setting.scheme == PLAIN.scheme and setting.shares == "data"


def default_settings(quick: bool) -> list[SchemeSetting]:
    """The settings compared: the papers' defaults, and in a full run the neighbours that show the trade-off."""
    ih_passes = 20 if quick else 50
    out = [
        PLAIN,
        SchemeSetting(
            "instahide",
            "inside k=4",
            (("k", 4), ("mode", "inside"), ("pixel_scale", "normalize"), ("mean", "data"), ("std", "data")),
            per_image=ih_passes,
            note="Pixels standardised with the training images' own mean and deviation before mixing, as "
            "the InstaHide training code does.",
        ),
        SchemeSetting(
            "instahide",
            "cross k=6 (challenge)",
            (("k", 6), ("mode", "cross"), ("private_per_mix", 2)),
            per_image=ih_passes,
            public=True,
            note="The InstaHide Challenge's recipe: two private images and four public patches per "
            "encoding, pixels in [-1, 1] as the challenge released them. On near-binary images "
            "(digits) strokes and background both have magnitude 1 on that scale, so the sign mask "
            "leaves a model little to learn from; the inside setting standardises first.",
        ),
        SchemeSetting("disguise", "RMT b=4", (("transform", "rmt"), ("block", 4))),
        SchemeSetting("disguise", "AES-ECB b=4", (("transform", "aes"), ("block", 4), ("aes_mode", "ecb"))),
    ]
    if not quick:
        out[2:2] = [
            SchemeSetting(
                "instahide",
                "inside k=2",
                (("k", 2), ("mode", "inside"), ("pixel_scale", "normalize"), ("mean", "data"), ("std", "data")),
                per_image=ih_passes,
            )
        ]
        out += [
            SchemeSetting("disguise", "permutation b=4", (("transform", "none"), ("block", 4))),
            SchemeSetting("disguise", "RMT b=8", (("transform", "rmt"), ("block", 8))),
            SchemeSetting("disguise", "AES-ECB b=8", (("transform", "aes"), ("block", 8), ("aes_mode", "ecb"))),
            SchemeSetting("disguise", "AES-CTR b=4", (("transform", "aes"), ("block", 4), ("aes_mode", "ctr"))),
        ]
    # ATS protects what federated learning shares, a client's gradient, by transforming the image first; the
    # published code applies every sub-policy of a chosen list (always), and "none" is plain federated learning.
    # --quick leaves them out unless --schemes names ats: gradient inversion is the costliest attack here.
    ats_note = (
        "Federated learning: a client shares the gradient of one transformed image; the server holds the "
        "model at initialisation and the label. Scored on the first targets only."
    )
    policies = ("none", "3-1-7+43-18-18") if quick else ("none", "3-1-7", "3-1-7+43-18-18")
    out += [
        SchemeSetting("ats", f"ATS {policy}", (("policy", policy), ("always", True)), shares="gradients", note=ats_note)
        for policy in policies
    ]
    # ShuffleBits protects deep features (here the clean-trained model's penultimate ones) on their way to a server;
    # the features in the clear are its baseline
    feat_note = (
        "The release is the penultimate features of the clean-trained model; the adversary queries that "
        "model as a black box (from level 2, with the auxiliary images) to train a decoder."
    )
    out += [SchemeSetting("identity", "features in the clear", shares="features", note=feat_note)]
    out += [
        SchemeSetting("shufflebits", f"ShuffleBits {scope}", (("scope", scope),), shares="features", note=feat_note)
        for scope in ("fixed", "vector", "element")
    ]
    return out


def plugin_setting(name: str) -> SchemeSetting:
    """The row of a scheme the built-in plan does not know (another package's): its default settings, one encoding
    of each image, what it protects (images or features) and whether it mixes in a public pool from the plugin's
    own declarations."""
    from masquerade.registry import SCHEMES

    scheme = SCHEMES.create(name)
    features = scheme.data_kind == "features"
    return SchemeSetting(
        name,
        "defaults",
        shares="features" if features else "data",
        public=public_slots(scheme) > 0,
        note=f"A plugin scheme ({type(scheme).__module__}.{type(scheme).__qualname__}) at its "
        "default settings, one encoding of each image.",
    )


def knowledge(level: int, setting: SchemeSetting) -> frozenset[Knowledge]:
    """What an adversary at ``level`` holds against ``setting``. A gradient-sharing setting releases no data: its
    adversary is the server, which holds the model and each client's gradient (and label) in place of encodings."""
    know = LEVELS[level]
    if setting.shares == "gradients":
        know = (know - {K.ENCODINGS, K.PUBLIC_POOL}) | {K.MODEL, K.GRADIENTS}
    if setting.shares == "features" and K.AUXILIARY in know:
        know = know | {K.API}  # the feature extractor, queried as a black box
    if not setting.public:
        know = know - {K.PUBLIC_POOL}
    return know


@dataclass(frozen=True)
class EvaluateSettings:
    data: str = "bundled:mnist"
    size: int | None = None  # None: as loaded (one size for all images); else resized to size×size
    quick: bool = False
    schemes: tuple[str, ...] = ("identity", "instahide", "disguise", "ats", "shufflebits")
    levels: tuple[int, ...] = (1, 2, 3)
    seed: int = 0
    targets: int = 40  # private images scored
    pairs: int = 20  # private images the adversary knows with their encodings (level 3)
    auxiliary: int = 500  # clean images from the same distribution (level 2)
    test: int = 1000
    train: int = 3500  # training images for utility (the private set is their first images); with
    # the test and auxiliary images, the 5,000 bundled digits
    epochs: int = 10
    model: str = "fastresnet"
    augment: bool = False  # crop and flip in training (off for digits, whose flips are other digits)
    public: int = 1000  # public patches for InstaHide across datasets
    public_photos: str = "bundled:photos"  # where they are cut from: a folder of photos, or an .npz of patches
    threads: int = 1  # CPU threads of each cell: numbers depend on it, so it belongs to the plan
    inversion_iterations: int = 4800  # gradient inversion (ATS's configuration of Inverting Gradients)
    inversion_images: int = 8  # targets attacked by gradient inversion (one client update each)
    inversion_model: str = "convnet16"  # the federated model the server attacks, at initialisation
    codebook_decoder_steps: int = 300  # the AES-ECB codebook's fill network (0: nearest auxiliary images)
    device: str = "cpu"  # where trainings and model-based attacks run; numbers depend on it (a plan field)
    settings: tuple[SchemeSetting, ...] = ()

    def __post_init__(self) -> None:
        if not self.settings:
            object.__setattr__(self, "settings", tuple(default_settings(self.quick)))
        planned = {s.scheme for s in default_settings(False)} | {s.scheme for s in self.settings}
        others = [name for name in dict.fromkeys(self.schemes) if name not in planned]
        if others:
            # another package's scheme (entry point masquerade.schemes) is scored at its default settings
            from masquerade.registry import SCHEMES

            unknown = sorted(set(others) - set(SCHEMES.names()))
            if unknown:
                raise InputError(f"evaluate: unknown schemes {unknown}; choose from {', '.join(SCHEMES.names())}")
            object.__setattr__(self, "settings", self.settings + tuple(plugin_setting(name) for name in others))
        if not self.levels or any(lv not in LEVELS for lv in self.levels):
            raise InputError(f"evaluate: levels are 1, 2 and 3, got {list(self.levels)}")
        if self.size is not None and self.size < 4:
            raise InputError(f"evaluate: size must be at least 4 pixels, got {self.size}")
        for name in (
            "targets",
            "test",
            "train",
            "epochs",
            "auxiliary",
            "public",
            "threads",
            "inversion_iterations",
            "inversion_images",
        ):
            if getattr(self, name) < 1:
                raise InputError(f"evaluate: {name} must be positive, got {getattr(self, name)}")
        from masquerade.models import list_models

        for name in ("model", "inversion_model"):
            if getattr(self, name) not in list_models():
                raise InputError(
                    f"evaluate: unknown {name.replace('_', ' ')} {getattr(self, name)!r}; available: "
                    f"{', '.join(list_models())}"
                )
        if self.pairs < 0:
            raise InputError(f"evaluate: pairs must be >= 0, got {self.pairs}")
        if not isinstance(self.public_photos, str) or not self.public_photos:
            raise InputError("evaluate: public_photos names a folder of photos, an .npz of patches or bundled:photos")
        from masquerade.devices import check_device_name

        object.__setattr__(self, "device", check_device_name(self.device))
        if self.codebook_decoder_steps < 0:
            raise InputError(f"evaluate: codebook_decoder_steps must be >= 0, got {self.codebook_decoder_steps}")
        if self.targets + self.pairs > self.train:
            raise InputError(
                f"evaluate: {self.targets} targets + {self.pairs} pairs exceed the {self.train} "
                "training images they are drawn from"
            )
        if self.targets + self.pairs < 2:
            raise InputError("evaluate: the private set needs at least 2 images (InstaHide mixes pairs)")

    @classmethod
    def for_quick(cls, **overrides: Any) -> "EvaluateSettings":
        """``--quick``: a few minutes on 2 cores (fewer images and epochs, twenty InstaHide passes; ATS and ShuffleBits
        only when ``schemes`` names them, with 300 inversion iterations on four images)."""
        base: dict[str, Any] = dict(
            quick=True,
            targets=20,
            pairs=20,
            auxiliary=300,
            test=500,
            train=1500,
            epochs=8,
            public=500,
            schemes=("identity", "instahide", "disguise"),
            inversion_iterations=300,
            inversion_images=4,
            codebook_decoder_steps=0,
        )
        base.update(overrides)
        return cls(**base)

    def chosen(self) -> list[SchemeSetting]:
        keep = set(self.schemes) | {PLAIN.scheme}  # plain training is every cost's reference
        picked = [s for s in self.settings if s.scheme in keep]
        # features in the clear are the baseline of feature protection, planned with it
        protects_features = any(s.shares == "features" and s.scheme != PLAIN.scheme for s in picked)
        return [
            s for s in picked if not (s.scheme == PLAIN.scheme and s.shares == "features" and not protects_features)
        ]

    def digest(self) -> str:
        doc = dataclasses.asdict(self)
        if doc["device"] == "cpu":  # the plans made before devices existed keep their digests
            del doc["device"]
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    """One unit of work: the utility of a setting, or one attack on it with a given knowledge."""

    kind: str  # "utility" or "attack"
    setting: SchemeSetting
    attack: str = ""
    attack_settings: tuple[tuple[str, Any], ...] = ()
    uses: tuple[str, ...] = ()  # the knowledge the attack is given
    levels: tuple[int, ...] = ()  # the levels whose rows it fills

    @property
    def id(self) -> str:
        if self.kind == "utility":
            return f"utility/{self.setting.slug}"
        return f"attack/{self.setting.slug}/{self.attack}/{'+'.join(self.uses)}"

    @property
    def file_stem(self) -> str:
        return _slug(self.id.replace("/", "--"))


def _slug(text: str) -> str:
    out = "".join(ch if ch.isalnum() else "-" for ch in text.lower())
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-")


def _make_scheme(setting: SchemeSetting, stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> Any:
    from masquerade.registry import SCHEMES, create_scheme

    params = dict(setting.params)
    if "seeded_aes_key" in SCHEMES.setting_names(setting.scheme):
        # an evaluation is a reproducible experiment: keys a scheme draws from the OS even in seeded runs unless
        # asked (DisguisedNets' AES keys) derive from the seed too, for every setting, the user's own included
        params.setdefault("seeded_aes_key", True)
    for name, pos in (("mean", 0), ("std", 1)):
        if params.get(name) == "data":
            if stats is None:
                params.pop(name)
            else:
                params[name] = stats[pos]
    return create_scheme(setting.scheme, **params)


def plan_cells(s: EvaluateSettings, skip: frozenset[str] | set[str] = frozenset()) -> list[Cell]:
    """Every cell of the evaluation, in scorecard order; ``skip``: labels of settings the data do not fit."""
    from masquerade.registry import ATTACKS, BUILTIN_ATTACKS

    attacks: list[tuple[str, Any]] = []
    for name in ATTACKS.names():
        try:
            cls = ATTACKS.get(name)
        except InputError as exc:
            if name in BUILTIN_ATTACKS:
                raise
            # another package's plugin that does not import must not stop everyone's evaluation
            import logging

            logging.getLogger("masquerade.evaluate").warning("masquerade: warning: %s; left out", exc)
            continue
        attacks.append((name, cls))
    cells: list[Cell] = []
    for setting in s.chosen():
        if setting.label in skip:
            continue
        scheme = _make_scheme(setting)
        cells.append(Cell("utility", setting))
        by_uses: dict[tuple[str, str], Cell] = {}
        for level in sorted(s.levels):
            know = knowledge(level, setting)
            for name, cls in attacks:
                # an attack on images attacks released images or gradients of them; one on features, features
                if (getattr(cls, "data_kind", None) == "features") != (setting.shares == "features"):
                    continue
                against = settings_against(cls, scheme)
                tm = cls.threat_model
                if against is None or not tm.requires <= know:
                    continue
                fields = ATTACKS.setting_names(name)
                if setting.per_image > 1 and "n_private" in fields:
                    # a release of one-time encodings publishes its size: n images × T encodings each (the
                    # InstaHide challenge: 100 × 50), so the adversary is told n rather than left to estimate it
                    against = {**against, "n_private": s.targets + s.pairs}
                if K.GRADIENTS in tm.requires:
                    against = {**against, "iterations": s.inversion_iterations}
                if K.AUXILIARY in know and s.codebook_decoder_steps and "decoder_steps" in fields:
                    # an attack that fills what it cannot decode with a network trained on the auxiliary images
                    against = {**against, "decoder_steps": s.codebook_decoder_steps}
                uses = tuple(sorted(k.value for k in (tm.requires | (tm.optional & know))))
                prev = by_uses.get((name, "+".join(uses)))
                if prev is not None:
                    by_uses[(name, "+".join(uses))] = dataclasses.replace(prev, levels=prev.levels + (level,))
                else:
                    by_uses[(name, "+".join(uses))] = Cell(
                        "attack", setting, name, tuple(sorted(against.items())), uses, (level,)
                    )
        cells += list(by_uses.values())
    return cells


def __getattr__(name: str) -> Any:
    if name == "SUCCESS_SSIM":  # its home is masquerade.metrics.privacy (which loads torch); kept for a release
        from masquerade.metrics.privacy import SUCCESS_SSIM

        return SUCCESS_SSIM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
