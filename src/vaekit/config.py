"""One dataclass per component, composed into the RunConfig that describes a whole run.

A RunConfig is built from a preset plus overrides, saved as ``config.json`` in the run
folder, and every later command rebuilds data, model and objective from that file alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError, VaekitError, did_you_mean, integer, real, show
from .files import user_path

FORMAT_VERSION = 1
RESIZES = ("crop", "squash")  # how folder images of another shape become N x N
MAX_WIDTH = 65536  # latent and hidden sizes above this are typos, not models
MAX_IMAGE_SIZE = 8192
MAX_CONFIG_BYTES = 1 << 20
MAX_CLASSES = 10_000  # a conditional model's label one-hot is this wide at most
MAX_BETA = 1e6  # past this the KL is switched off entirely, and beta * KL soon overflows float32
PRECISIONS = ("fp32", "bf16", "fp16")  # train.precision; vaekit.precision maps each to its dtype
STANDARDIZABLE = ("gaussian", "mse")  # the likelihoods model.standardize can wrap (of real values)
_NAME = re.compile(r"(?!.*\.\.)[A-Za-z0-9._-]*")


class RepeatedKey(ValueError):
    """A JSON object names one key twice (json keeps the last silently, a typo's likely sign)."""


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for key, value in pairs:
        if key in d:
            raise RepeatedKey(key)
        d[key] = value
    return d


@dataclass
class DataConfig:
    """Where the data comes from and how it is prepared."""

    dataset: str = "digits"  # mnist | fashion-mnist | cifar10 | digits | blobs[:D] | folder:PATH | vectors:PATH
    data_dir: str | None = None  # folder with the IDX files (else $VAEKIT_DATA, else a user cache)
    download: bool = True  # fetch missing IDX files from the official mirrors when online
    binarize: str = "none"  # none | static (once, fixed seed) | dynamic (fresh every epoch)
    channels: int = 1  # folder images: 1 = grayscale, 3 = RGB
    image_size: int | None = None  # folder images: resize to this square size (None: keep, all equal)
    resize: str = "crop"  # how to make them square: crop (the centred square, scaled) | squash (both sides scaled)
    labels: str | None = None  # vectors: optional .npy of integer labels, one per row
    image_shape: list[int] = field(default_factory=list)  # vectors: rows read as images of this shape (H,W or C,H,W or H,W,C)
    test_fraction: float = 0.1  # held-out share for sources without an official test split
    split_seed: int = 0  # fixes that held-out split and static binarisation
    holdout_classes: list[int] = field(default_factory=list)  # left out of training (anomaly detection)


@dataclass
class ModelConfig:
    """The generative model: architecture, latent size and observation model p(x|z)."""

    kind: str = "vae"  # vae | ae | hvae
    arch: str = "mlp"  # mlp | conv | resnet
    hidden: list[int] = field(default_factory=lambda: [400, 400])  # MLP widths, or conv/resnet channels per stage
    res_blocks: int = 1  # resnet: residual blocks per stage
    latent_dim: int = 20
    spatial_latent: bool = False  # conv/resnet: z is a C x h x w map at the deepest resolution (latent_dim = C h w)
    likelihood: str = "bernoulli"  # bernoulli | gaussian | mse | dlogistic
    mixtures: int = 1  # dlogistic: logistic components per pixel
    output: str = "auto"  # auto | logits | identity | sigmoid (decoder's last activation)
    sigma: float = 1.0  # gaussian: the fixed sigma, or the initial one when learn_sigma
    learn_sigma: bool = False  # gaussian: learn one shared sigma with the weights
    standardize: bool = False  # gaussian/mse: the model standardises each value with the training set's mean and std
    prior: str = "normal"  # normal | vamp (models.priors.PRIORS)
    latent_dims: list[int] = field(default_factory=list)  # hvae: latent layers, bottom first (e.g. [64, 32])
    block_width: int = 256  # hvae: width of each latent layer's blocks
    pseudo_inputs: int = 500  # vamp: number of learned pseudo-inputs
    conditional: bool = False  # a conditional model p(x|z,y), q(z|x,y): encoder and decoder see the class label
    classes: int = 0  # conditional: number of classes (0: taken from the data's labels when training starts)


@dataclass
class ObjectiveConfig:
    """What training optimises: the ELBO (loss = recon + beta(epoch) * KL) or the IWAE bound, by name."""

    kind: str = "elbo"  # elbo | iwae (objectives.OBJECTIVES)
    iwae_samples: int = 5  # iwae: importance samples per example during training
    iwae_gradient: str = "standard"  # iwae: standard | dreg (objectives.IWAE_GRADIENTS)
    free_bits: float = 0.0  # elbo: floor (nats) on each latent dimension's batch-mean KL; 0 disables
    beta: float = 1.0
    schedule: str = "constant"  # constant | linear | cyclical
    warmup_epochs: int = 5  # linear: beta(epoch) = beta * min(1, epoch / warmup_epochs)
    cycle_epochs: int = 10  # cyclical: length of one cycle
    cycle_ramp: float = 0.5  # cyclical: share of each cycle spent ramping up from 0


@dataclass
class TrainConfig:
    """Optimisation settings."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # max gradient norm; 0 disables clipping
    lr_schedule: str = "constant"  # constant | cosine | linear (decay from lr to lr_min over the run)
    lr_warmup_epochs: float = 0.0  # linear warm-up from ~0 to lr over this many epochs
    lr_min: float = 0.0  # where cosine/linear decay ends
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    eval_batch_size: int = 1000
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast for the networks; fp16 with a gradient scaler)
    compile: bool = False  # torch.compile the training step
    log: list[str] = field(default_factory=list)  # loggers besides history.jsonl, e.g. ["tensorboard"] (loggers.py)


@dataclass
class RunConfig:
    """Everything that defines a run; ``config.json`` in a run folder is this, serialised."""

    preset: str = ""
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        """A section given as a dict (``RunConfig(train={"epochs": 2})``) becomes its dataclass, its
        keys checked as config.json's are; keys left out take their defaults."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Mapping):
                setattr(self, f.name, as_section(value, _hints(type(self))[f.name], "config", f"{f.name}."))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> RunConfig:
        """Strictly parse a dict: unknown keys, wrong types and other versions are errors. Keys left
        out take their defaults (a config written by hand may give only what it changes; without
        ``format_version`` it is read as this version)."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(d).__name__}")
        version = d.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ConfigError(
                f"{source}: format_version {version!r} is not supported by this vaekit "
                f"(it reads version {FORMAT_VERSION}); use the vaekit release that wrote it"
            )
        if "format_version" in d and isinstance(d.get("data"), dict) and "resize" not in d["data"]:
            d = {**d, "data": {**d["data"], "resize": "squash"}}  # what vaekit did before it could crop
        cfg = _build(cls, d, source, "")
        if "format_version" in d:  # written by vaekit, complete: a setting that does not apply was no one's choice
            cfg = cfg.without_misplaced()
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        from .files import read_regular

        path = Path(path)
        if path.is_dir() and (path / "config.json").is_file():
            raise ConfigError(f"{path}: a folder (a run's?); to start from its config, give {path / 'config.json'}")
        try:
            text = read_regular(path, "config file", MAX_CONFIG_BYTES).decode("utf-8-sig")  # a BOM (Notepad) is fine
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); not a config.json") from None
        except VaekitError as e:
            raise ConfigError(str(e)) from None
        try:
            d = json.loads(text, object_pairs_hook=_no_repeated_keys)
        except RepeatedKey as e:
            raise ConfigError(f"{path}: the key '{show(str(e))}' is given twice in one object; keep one") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        except RecursionError:
            raise ConfigError(f"{path}: nested too deeply to be a config.json") from None
        return cls.from_dict(d, source=str(path))

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> RunConfig:
        """A copy with dotted keys (``model.latent_dim``) set; string values are parsed by field type."""
        overrides = dotted(overrides)
        cfg = self._overridden(overrides).without_misplaced(keep=overrides)
        cfg.validate()
        return cfg

    def with_choices(self, chosen: Mapping[str, Any], given: Mapping[str, Any] | None) -> RunConfig:
        """A copy with the settings ``given`` by the user over those ``chosen`` for them (a model picked
        to fit the data): a chosen setting that does not apply to the result is dropped, a given one refused."""
        given = dotted(given)
        cfg = self._overridden({**dotted(chosen), **given}).without_misplaced(keep=given)
        cfg.validate()
        return cfg

    def check_values(self, overrides: Mapping[str, Any] | None) -> None:
        """Refuse an override that is unknown, of the wrong type or out of its range, without the data:
        what a model chosen from the data would change (whether a setting applies to it) is checked
        once it is chosen, and the rest is refused before any file is read."""
        self._overridden(dotted(overrides)).check_ranges()

    def _overridden(self, overrides: dict[str, Any]) -> RunConfig:
        d = self.to_dict()

        def unknown(key: str) -> ConfigError:  # the known keys are listed only when one is mistyped
            keys = [f"{k}.{sub}" if isinstance(v, dict) else k
                    for k, v in d.items() for sub in (v if isinstance(v, dict) else [k])]
            return ConfigError(f"unknown config key '{show(key)}'{did_you_mean(key, keys)}; see `vaekit train --help`")

        for key, value in overrides.items():
            parts = key.split(".")
            target = d
            for p in parts[:-1]:
                if not isinstance(target.get(p), dict):
                    raise unknown(key)
                target = target[p]
            if parts[-1] not in target or isinstance(target[parts[-1]], dict):
                raise unknown(key)
            ftype = _field_type(type(self), parts)
            target[parts[-1]] = _coerce(value, ftype, key) if isinstance(value, str) else value
        return _build(type(self), d, "override", "")

    def validate(self) -> None:
        """Range checks on values, and no setting given where it does not apply; names (presets, data
        sets, kinds) are checked by their registries."""
        self.check_ranges()
        for why in list(_misplaced(self).values())[:1]:
            raise ConfigError(why)

    def check_ranges(self) -> None:
        """Each value of its type (a RunConfig built in Python is not checked when made) and within its range."""
        _build(type(self), asdict(self), "config", "")
        m, o, t, dc = self.model, self.objective, self.train, self.data
        checks = [
            (_NAME.fullmatch(self.preset) is not None, "preset", self.preset,
             "may only hold letters, digits, '.', '_' and '-'"),
            (self.format_version == FORMAT_VERSION, "format_version", self.format_version,
             f"is vaekit's own (this release writes {FORMAT_VERSION}); leave it out"),
            (0 <= self.seed < 2**63, "seed", self.seed, "must be in 0..2**63-1"),
            (0 <= dc.split_seed < 2**63, "data.split_seed", dc.split_seed, "must be in 0..2**63-1"),
            (1 <= m.latent_dim <= MAX_WIDTH, "model.latent_dim", m.latent_dim, f"must be in 1..{MAX_WIDTH}"),
            (all(1 <= h <= MAX_WIDTH for h in m.hidden) and len(m.hidden) <= 32, "model.hidden", m.hidden,
             f"needs at most 32 widths, each in 1..{MAX_WIDTH}"),
            (_finite(m.sigma) and m.sigma > 0, "model.sigma", m.sigma, "must be a positive number"),
            (0 <= m.res_blocks <= 64, "model.res_blocks", m.res_blocks, "must be in 0..64"),
            (1 <= m.mixtures <= 64, "model.mixtures", m.mixtures, "must be in 1..64"),
            (1 <= m.pseudo_inputs <= 10**4, "model.pseudo_inputs", m.pseudo_inputs, "must be in 1..10000"),
            (len(m.latent_dims) <= 16 and all(1 <= d <= MAX_WIDTH for d in m.latent_dims), "model.latent_dims",
             m.latent_dims, f"needs at most 16 layers, each of 1..{MAX_WIDTH} dimensions"),
            (1 <= m.block_width <= MAX_WIDTH, "model.block_width", m.block_width, f"must be in 1..{MAX_WIDTH}"),
            (0 <= m.classes <= MAX_CLASSES, "model.classes", m.classes, f"must be in 0..{MAX_CLASSES}"),
            (m.conditional or not m.classes, "model.classes", m.classes, "applies to --conditional models only"),
            (not m.conditional or m.kind in ("vae", "ae"), "model.conditional", m.conditional,
             f"applies to --model vae or ae (not {show(m.kind)})"),
            (not m.conditional or m.prior == "normal", "model.conditional", m.conditional,
             "needs --prior normal (the VampPrior's pseudo-inputs have no class)"),
            (_finite(o.beta) and 0 <= o.beta <= MAX_BETA, "objective.beta", o.beta, f"must be in 0..{MAX_BETA:g}"),
            (o.warmup_epochs >= 1, "objective.warmup_epochs", o.warmup_epochs, "must be at least 1"),
            (1 <= o.iwae_samples <= 10**4, "objective.iwae_samples", o.iwae_samples, "must be in 1..10000"),
            (_finite(o.free_bits) and 0 <= o.free_bits <= 1000, "objective.free_bits", o.free_bits,
             "must be in 0..1000 nats"),
            (o.cycle_epochs >= 1, "objective.cycle_epochs", o.cycle_epochs, "must be at least 1"),
            (0 < o.cycle_ramp <= 1, "objective.cycle_ramp", o.cycle_ramp, "must be in (0, 1]"),
            (0 <= t.epochs <= 10**6, "train.epochs", t.epochs, "must be in 0..1000000"),
            (1 <= t.batch_size <= 2**31, "train.batch_size", t.batch_size, "must be in 1..2**31"),
            (1 <= t.eval_batch_size <= 2**31, "train.eval_batch_size", t.eval_batch_size, "must be in 1..2**31"),
            (_finite(t.lr) and t.lr > 0, "train.lr", t.lr, "must be a positive number"),
            (_finite(t.weight_decay) and t.weight_decay >= 0, "train.weight_decay", t.weight_decay,
             "must be >= 0"),
            (_finite(t.grad_clip) and t.grad_clip >= 0, "train.grad_clip", t.grad_clip, "must be >= 0"),
            (_finite(t.lr_warmup_epochs) and 0 <= t.lr_warmup_epochs <= 10**6, "train.lr_warmup_epochs",
             t.lr_warmup_epochs, "must be in 0..1000000"),
            (_finite(t.lr_min) and 0 <= t.lr_min <= t.lr, "train.lr_min", t.lr_min, "must be in 0..train.lr"),
            (0 < dc.test_fraction < 1, "data.test_fraction", dc.test_fraction, "must be in (0, 1)"),
            (dc.channels in (1, 3), "data.channels", dc.channels, "must be 1 (grayscale) or 3 (RGB)"),
            (dc.image_size is None or 4 <= dc.image_size <= MAX_IMAGE_SIZE, "data.image_size", dc.image_size,
             f"must be in 4..{MAX_IMAGE_SIZE}"),
            (all(0 <= c < 2**31 for c in dc.holdout_classes), "data.holdout_classes", dc.holdout_classes,
             "must be class numbers >= 0"),
            (len(set(dc.holdout_classes)) == len(dc.holdout_classes), "data.holdout_classes", dc.holdout_classes,
             "names a class twice"),
            (not dc.image_shape or (len(dc.image_shape) in (2, 3) and all(1 <= s <= MAX_IMAGE_SIZE for s in dc.image_shape)
                                    and (len(dc.image_shape) == 2 or bool(set(dc.image_shape[::2]) & {1, 3}))),
             "data.image_shape", dc.image_shape,
             f"must be H,W (grey) or C,H,W or H,W,C with C 1 or 3, each side 1..{MAX_IMAGE_SIZE}"),
            (len(set(t.log)) == len(t.log), "train.log", t.log, "names a logger twice"),
            (len(self.train.device) <= 64 and len(dc.dataset) <= 4096, "train.device/data.dataset",
             self.train.device if len(self.train.device) > 64 else dc.dataset, "is too long"),
            (t.precision in PRECISIONS, "train.precision", t.precision, f"must be one of {', '.join(PRECISIONS)}"),
            (dc.binarize in ("none", "static", "dynamic"), "data.binarize", dc.binarize,
             "must be none, static or dynamic"),
            (dc.resize in RESIZES, "data.resize", dc.resize, f"must be {' or '.join(RESIZES)}"),
        ]
        for ok, name, value, why in checks:
            if not ok:
                raise ConfigError(f"{name}={show(value)} {why}")

    def without_misplaced(self, keep: Iterable[str] = ()) -> RunConfig:
        """This config with each setting that does not apply here back at its default, except those in
        ``keep`` (what the user gave, which validate then refuses)."""
        reset = [key for key in _misplaced(self) if key not in set(keep)]
        if not reset:
            return self
        d, default = self.to_dict(), RunConfig().to_dict()
        for key in reset:
            section, name = key.split(".")
            d[section][name] = default[section][name]
        # a reset may stop another setting from applying (an AE's schedule, then its warm-up): again
        return _build(type(self), d, "config", "").without_misplaced(keep)


def _iwae(c: RunConfig) -> bool:
    return c.objective.kind == "iwae"


DOWNLOADED = ("mnist", "fashion-mnist", "cifar10")  # the data sets read from files in --data-dir (with a test split)


def _own_split(c: RunConfig) -> bool:
    return c.data.dataset not in DOWNLOADED


# Settings that only mean something where others allow them: (key, flag, does it apply?, where it does,
# the settings that decide).
# One that differs from its default where it does not apply is refused when the user gave it (a flag,
# --set, a key of --config or of the API's overrides) rather than ignored, and reset to its default
# when it came with the starting config (a preset's --mixtures, once --likelihood gaussian is given).
APPLIES: list[tuple[str, str, Callable[[RunConfig], bool], str, str]] = [
    ("objective.iwae_samples", "--iwae-samples", _iwae, "--objective iwae", "objective.kind"),
    ("objective.iwae_gradient", "--iwae-gradient", _iwae, "--objective iwae", "objective.kind"),
    ("objective.free_bits", "--free-bits", lambda c: c.objective.kind == "elbo",
     "--objective elbo (the IWAE bound has no separate KL term)", "objective.kind"),
    ("objective.beta", "--beta", lambda c: c.model.kind != "ae", "a VAE (an autoencoder has no KL term to weigh)",
     "model.kind"),
    ("objective.schedule", "--schedule", lambda c: c.model.kind != "ae", "a VAE (an autoencoder has no KL term to weigh)",
     "model.kind"),
    ("objective.warmup_epochs", "--warmup", lambda c: c.objective.schedule == "linear", "--schedule linear",
     "objective.schedule"),
    ("objective.cycle_epochs", "--cycle-epochs", lambda c: c.objective.schedule == "cyclical", "--schedule cyclical",
     "objective.schedule"),
    ("objective.cycle_ramp", "--set objective.cycle_ramp", lambda c: c.objective.schedule == "cyclical",
     "--schedule cyclical", "objective.schedule"),
    ("model.mixtures", "--mixtures", lambda c: c.model.likelihood == "dlogistic", "--likelihood dlogistic",
     "model.likelihood"),
    ("model.sigma", "--sigma", lambda c: c.model.likelihood == "gaussian", "--likelihood gaussian", "model.likelihood"),
    ("model.learn_sigma", "--learn-sigma", lambda c: c.model.likelihood == "gaussian", "--likelihood gaussian",
     "model.likelihood"),
    ("model.standardize", "--standardize", lambda c: c.model.likelihood in STANDARDIZABLE,
     f"a likelihood of real values ({' or '.join(STANDARDIZABLE)})", "model.likelihood"),
    ("model.pseudo_inputs", "--pseudo-inputs", lambda c: c.model.prior == "vamp", "--prior vamp", "model.prior"),
    ("model.latent_dims", "--latent-dims", lambda c: c.model.kind == "hvae",
     "--model hvae (one-layer models take --latent-dim)", "model.kind"),
    ("model.block_width", "--block-width", lambda c: c.model.kind == "hvae", "--model hvae", "model.kind"),
    ("model.res_blocks", "--res-blocks", lambda c: c.model.arch == "resnet", "--arch resnet", "model.arch"),
    ("model.spatial_latent", "--spatial-latent", lambda c: c.model.arch in ("conv", "resnet")
     and c.model.kind in ("vae", "ae") and not c.model.conditional,
     "unconditional --model vae or ae with --arch conv or resnet", "model.arch model.kind model.conditional"),
    ("train.lr_min", "--lr-min", lambda c: c.train.lr_schedule != "constant", "--lr-schedule cosine or linear",
     "train.lr_schedule"),
    ("data.channels", "--channels", lambda c: c.data.dataset.startswith("folder:"), "folder: data", "data.dataset"),
    ("data.image_shape", "--image-shape", lambda c: c.data.dataset.startswith("vectors:"), "vectors: data", "data.dataset"),
    ("data.image_size", "--image-size", lambda c: c.data.dataset.startswith("folder:"), "folder: data",
     "data.dataset"),
    ("data.resize", "--resize", lambda c: c.data.dataset.startswith("folder:") and c.data.image_size is not None,
     "folder: data resized to --image-size (given, or chosen for images of several sizes or over 128 px)",
     "data.image_size"),
    ("data.data_dir", "--data-dir", lambda c: c.data.dataset in DOWNLOADED,
     "mnist, fashion-mnist and cifar10 (folder: and vectors: data name their own path: where they have moved, give "
     "--dataset folder:PATH or vectors:PATH)", "data.dataset"),
    ("data.labels", "--labels", lambda c: c.data.dataset.startswith("vectors:"), "vectors: data", "data.dataset"),
    ("data.test_fraction", "--test-fraction", _own_split, "data sets without a test split of their own (mnist, "
     "fashion-mnist and cifar10 have one)", "data.dataset"),
]


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _misplaced(cfg: RunConfig) -> dict[str, str]:
    """Each setting that differs from its default where it does not apply, and a one-line reason."""
    default, found = RunConfig(), {}
    for key, flag, applies, where, controls in APPLIES:
        if _get(cfg, key) != _get(default, key) and not applies(cfg):
            here = ", ".join(f"{c}={show(str(_get(cfg, c)))}" for c in controls.split())
            found[key] = f"{flag} ({key}={show(_get(cfg, key))}) applies only to {where}, not with {here}"
    return found


def as_section(value: Any, cls: type, what: str, prefix: str = "") -> Any:
    """A config section (DataConfig, ModelConfig ...) as the Python API takes it: the dataclass or a
    dict of its fields (keys left out take their defaults), each value's type checked."""
    if isinstance(value, cls):
        value = asdict(value)
    elif not isinstance(value, Mapping):
        raise ConfigError(f"{what}: a {type(value).__name__}; give a {cls.__name__} or a dict of its fields")
    return _build(cls, dict(value), what, prefix)


def as_run_config(cfg: RunConfig | Mapping[str, Any] | str | Path, what: str = "cfg") -> RunConfig:
    """A config as the Python API takes it: a RunConfig, a dict like config.json (keys left out take
    their defaults) or the path of such a JSON file, as `--config` takes it."""
    if isinstance(cfg, RunConfig):
        return cfg
    if isinstance(cfg, Mapping):
        return RunConfig.from_dict(dict(cfg), source=what)
    if isinstance(cfg, (str, Path)):
        return RunConfig.load(user_path(cfg, what))
    raise ConfigError(f"{what}: a {type(cfg).__name__}; give a RunConfig (e.g. vaekit.get_preset(...)), "
                      "a dict like config.json or a JSON file's path")


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field_type(cls: type, parts: list[str]) -> Any:
    for p in parts[:-1]:
        cls = _hints(cls)[p]
    return _hints(cls)[parts[-1]]


# What a run may change when it resumes, or a sweep's kept run differ in: the epochs extend it; where the
# (checksummed) files are, the device, the loggers and the evaluation batch do not change what is trained.
RESUME_MAY_CHANGE = frozenset({"train.epochs", "train.device", "train.log", "train.eval_batch_size", "data.data_dir"})


def flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as dotted keys: {"train": {"lr": 0.1}} -> {"train.lr": 0.1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, Mapping) else {f"{prefix}{k}": v})
    return out


def dotted(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Overrides as one flat dict of dotted keys: None is none, and a section given as a dict
    (``{"train": {"epochs": 2}}``, as config.json nests it) is spelled out (``train.epochs``)."""
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"overrides: a {type(overrides).__name__}; give a dict of dotted keys, "
                          "e.g. {'train.epochs': 2}")
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if not isinstance(key, str):
            raise ConfigError(f"overrides: key {show(key)} is not a string; give dotted keys, e.g. 'train.epochs'")
        if isinstance(value, Mapping):
            out.update({f"{key}.{k}": v for k, v in dotted(value).items()})
        else:
            out[key] = value
    return out


def _build(cls: type, d: dict[str, Any], source: str, prefix: str) -> Any:
    """Recursively build dataclass ``cls`` from ``d``, checking keys and value types."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown key '{show(prefix + str(unknown[0]))}'")
    kwargs = {}
    for name, value in d.items():
        ftype = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(ftype):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{key}' must be an object")
            kwargs[name] = _build(ftype, value, source, key + ".")
        else:
            kwargs[name] = _check_type(value, ftype, source, key)
    return cls(**kwargs)


def _check_type(value: Any, ftype: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(ftype)
    args = typing.get_args(ftype)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _check_type(value, inner, source, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):  # a tuple from Python is a list to JSON
            raise ConfigError(f"{source}: '{key}' must be a list")
        return [_check_type(v, args[0], source, key) for v in value]
    number = real(value)  # any real number, numpy's too, as Python's float (None for anything else)
    if ftype is float and number is not None:
        return number
    if ftype is int:
        whole = integer(value)
        if whole is None and number is not None and number.is_integer():
            whole = int(number)  # 2.0, as JSON may spell a count
        if whole is not None:
            return whole
    if not isinstance(value, ftype) or (ftype is not bool and isinstance(value, bool)):
        given = f"the string {show(repr(value))}" if isinstance(value, str) else show(value)
        raise ConfigError(f"{source}: '{key}' must be {ftype.__name__}, got {given}")
    return value


def _coerce(text: str, ftype: Any, key: str) -> Any:
    """Parse a command-line string into the field's type."""
    origin = typing.get_origin(ftype)
    args = typing.get_args(ftype)
    if origin is not None and type(None) in args:
        if text.lower() in ("none", "null", ""):
            return None
        ftype = [a for a in args if a is not type(None)][0]
        origin = typing.get_origin(ftype)
        args = typing.get_args(ftype)
    try:
        if origin is list:  # 400,400 or, as JSON writes it, [400, 400]
            inner = text.strip()[1:-1] if text.strip()[:1] == "[" and text.strip()[-1:] == "]" else text
            items = [t.strip() for t in inner.split(",")] if inner.strip() else []
            if "" in items:
                raise ConfigError(f"{key}: '{show(text)}' has an empty value between commas")
            return [_coerce(t, args[0], key) for t in items]
        if ftype is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if ftype is int:
            return int(text)
        if ftype is float:
            return float(text)
        return text
    except ValueError:
        name = getattr(ftype, "__name__", str(ftype))
        raise ConfigError(f"{key}: '{show(text)}' is not a valid {name}") from None
