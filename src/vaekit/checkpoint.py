"""Run folders: config.json, model.safetensors, training_state.safetensors, history.jsonl.

No pickle anywhere: tensors go to safetensors, everything else to JSON. Every file is written
through ``files.atomic_write``, so a crash leaves either the old complete file or the new one.
Everything read back is untrusted: any fault in it becomes a one-line ``RunFolderError``
naming the file, never a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import re
import shutil
import unicodedata
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch

from . import files
from .config import MAX_CONFIG_BYTES, RESUME_MAY_CHANGE, RunConfig, flat
from .devices import pick_device
from .errors import ConfigError, RunFolderError, VaekitError, brief, show
from .models import LatentModel, build_model, check_data_shape
from .runlock import LOCK

CONFIG = "config.json"
MODEL = "model.safetensors"
STATE = "training_state.safetensors"
HISTORY = "history.jsonl"
DATA_RECORD = "data.json"  # where the data came from and their fingerprint
METRICS = "metrics.json"  # what `vaekit evaluate` measured last
# Everything vaekit may write into a run folder: --overwrite removes these and nothing else.
RUN_FILES = (CONFIG, MODEL, STATE, HISTORY, DATA_RECORD, "samples.png", "reconstructions.png", "report.html", "bench_nll.json",
             "README.md", METRICS, "sampler_gmm.safetensors")
RUN_DIRS = ("tensorboard", "onnx")  # folders only vaekit writes (TensorBoard events, exported graphs)
PLOTS_DIR = "plots"
PLOT_FILES = ("curves", "kl-per-dim", "latent-scatter", "latent-grid", "samples", "real-vs-generated",
              "reconstructions", "error-histogram", "interpolation", "traversals", "probe-confusion",
              "anomaly-scores", "compare")
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on its JSON header


@dataclasses.dataclass
class Run:
    """A loaded run folder: its config, its model (in eval mode) and the epochs it has done."""

    path: Path
    config: RunConfig
    model: LatentModel
    epoch: int
    data_shape: tuple[int, ...]

    @property
    def history(self) -> list[dict[str, Any]]:
        """The per-epoch records of history.jsonl (losses, beta, lr, seconds), read now and checked."""
        return read_history(self.path)

    @property
    def metrics(self) -> dict[str, Any] | None:
        """What `vaekit evaluate` last wrote to metrics.json (None before it has run)."""
        found = files.read_json_if_there(self.path / METRICS, "metrics file", MAX_CONFIG_BYTES)
        return found if isinstance(found, dict) else None


@contextlib.contextmanager
def untrusted(path: Path, what: str) -> Iterator[None]:
    """Any exception while parsing the bytes of ``path`` is the file's fault: one line, naming it."""
    try:
        yield
    except VaekitError:
        raise
    except MemoryError:
        raise RunFolderError(f"{path}: {what} asks for more memory than this machine has; the file is damaged") from None
    except Exception as e:  # hostile bytes raise anything (seen: ValueError, KeyError, RuntimeError, TypeError)
        raise RunFolderError(f"{path}: {what} is damaged or not written by vaekit ({brief(e)})") from None


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=meta)
    try:
        files.atomic_write(path, data)
    except files.OutputError as e:
        raise RunFolderError(f"{e}; the previous complete checkpoint is kept. Free some disk space and "
                             "resume with --resume") from None


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of a safetensors file, read as untrusted bytes."""
    from safetensors.torch import load

    if not path.exists() and not path.is_symlink():
        raise RunFolderError(f"{path}: missing; this run folder has no saved weights yet")
    data = files.read_regular(path, "safetensors file")
    with untrusted(path, "safetensors file"):
        n = int.from_bytes(data[:8], "little")
        if len(data) < 8 or n > min(len(data) - 8, MAX_HEADER_BYTES):
            raise RunFolderError(f"{path}: not a safetensors file (header size {n} of {len(data)} bytes)")
        header = json.loads(data[8 : 8 + n])
        meta = header.get("__metadata__") or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise RunFolderError(f"{path}: its metadata is not a map of strings; not written by vaekit")
        return load(data), meta


def check_free_space(run_dir: Path, params: int, resume: bool = False) -> None:
    """Refuse to start when the disk cannot hold two checkpoints (written side by side), or is
    mounted read-only (whose free space says nothing)."""
    need = 2 * (params * 4 * 4) + (16 << 20)  # model + (weights, two Adam moments) + slack
    where = files.existing_ancestor(run_dir)
    if hasattr(os, "statvfs") and os.statvfs(where).f_flag & os.ST_RDONLY:  # (POSIX; Windows has no statvfs)
        raise RunFolderError(f"{run_dir}: cannot write here ({os.strerror(errno.EROFS)}); "
                             + ("check the folder's permissions" if resume else "choose another --out"))
    free = shutil.disk_usage(where).free
    if free < need:
        what = "free some space on its disk (a resumed run goes on in its own folder)" if resume else \
            "free some space or choose another --out"
        raise RunFolderError(f"{run_dir}: only {free / 2**20:.1f} MiB free, checkpoints need about "
                             f"{need / 2**20:.1f} MiB; {what}")


def _user_entries(path: Path) -> list[Path]:
    """What a folder holds apart from vaekit's own lock and temporary files."""
    return [p for p in path.iterdir() if p.name != LOCK and not (p.name.startswith(".") and p.name.endswith(".tmp"))]


def holds_nothing(path: Path) -> bool:
    """The folder is missing, or holds nothing but vaekit's lock and temporary files."""
    return not path.is_dir() or not _user_entries(path)


def remove_if_unused(path: Path) -> None:
    """Remove a folder vaekit made for a run that never wrote into it (its lock file aside)."""
    if path.is_dir() and not _user_entries(path):
        with contextlib.suppress(OSError):
            for p in path.iterdir():
                p.unlink()
            path.rmdir()


def is_run_folder(path: Path) -> bool:
    """A folder vaekit made: its config.json is a vaekit config (any version), or its weights carry
    vaekit's metadata."""
    try:
        d = json.loads(files.read_regular(path / CONFIG, "config", MAX_CONFIG_BYTES))
        if isinstance(d, dict) and "format_version" in d and "model" in d:
            return True
    except (VaekitError, ValueError, RecursionError):
        pass
    for name in (STATE, MODEL):
        try:
            if "format_version" in _read_tensors(path / name)[1]:
                return True
        except VaekitError:
            pass
    return False


def check_new_run_dir(path: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that cannot become a new run, before anything is written: a file, a
    folder under a file, an unwritable place, or a non-empty folder (unless ``overwrite`` and it
    is a vaekit run)."""
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{path}: exists and is not a folder; choose another --out")
    files.check_can_write(path / CONFIG, str(path), "choose another --out")
    if path.is_dir() and _user_entries(path):
        if not overwrite:
            raise RunFolderError(
                f"{path}: folder is not empty; pass --overwrite (Python: overwrite=True) to replace the run in "
                "it, --resume to continue it, or choose another --out"
            )
        if not is_run_folder(path):
            raise RunFolderError(
                f"{path}: folder is not empty and is not a vaekit run (no vaekit config.json); --overwrite only "
                "replaces vaekit runs, so nothing was removed; choose another --out"
            )


def create_run_dir(path: Path) -> bool:
    """Make the folder (and parents); returns whether it was created here."""
    existed = path.is_dir()
    files.make_folder(path, "choose another --out", RunFolderError)
    return not existed


def clear_run_dir(path: Path) -> None:
    """Remove the files vaekit wrote in a run folder (for --overwrite); the user's own files stay."""
    for name in RUN_FILES:
        (path / name).unlink(missing_ok=True)
    plots = path / PLOTS_DIR
    if plots.is_dir():
        for name in PLOT_FILES:
            (plots / f"{name}.png").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            plots.rmdir()  # only when nothing of the user's is left in it
    for name in RUN_DIRS:
        if (path / name).is_dir() and not (path / name).is_symlink():
            shutil.rmtree(path / name)
    for tmp in path.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def save_config(run_dir: Path, cfg: RunConfig) -> None:
    files.atomic_write(run_dir / CONFIG, cfg.to_json() + "\n")


def _runs_inside(folder: Path, shown: int = 3) -> str:
    """What to pass instead of a folder that holds run folders (a sweep's, a runs/ folder)."""
    try:
        runs = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and (p / CONFIG).is_file())
    except OSError:
        runs = []
    if not runs:
        return "pass a folder made by `vaekit train`"
    named = ", ".join(show(str(p)) for p in runs[:shown]) + (f" and {len(runs) - shown} more" if len(runs) > shown else "")
    return f"the run folder{'s' if len(runs) > 1 else ''} in it: {named}; pass one of them"


def load_config(run_dir: str | Path) -> RunConfig:
    run_dir = files.user_path(run_dir, "run_dir")
    if not run_dir.is_dir():
        what = "a file, not a run folder" if run_dir.exists() else "no such run folder"
        raise RunFolderError(f"{run_dir}: {what}")
    if not (run_dir / CONFIG).exists():
        raise RunFolderError(f"{run_dir}: not a run folder (no {CONFIG}); {_runs_inside(run_dir)}")
    try:
        return RunConfig.load(run_dir / CONFIG)
    except ConfigError as e:
        raise RunFolderError(str(e)) from None


def saved_data_shape(path: Path, meta: dict[str, str]) -> tuple[int, ...]:
    try:
        shape = json.loads(meta["data_shape"])
    except (KeyError, ValueError, RecursionError):
        raise RunFolderError(f"{path}: metadata lacks the data shape; not written by vaekit") from None
    try:
        return check_data_shape(shape, f"{path}: data_shape")
    except ConfigError as e:
        raise RunFolderError(str(e)) from None


def _int_meta(path: Path, meta: dict[str, str], key: str, default: int | None = None) -> int:
    text = meta.get(key)
    if text is None and default is not None:
        return default
    if text is None or not text.isdigit() or len(text) > 12:
        raise RunFolderError(f"{path}: metadata '{key}' is {show(text)}, not a count; not written by vaekit")
    return int(text)


@dataclasses.dataclass
class TrainingState:
    """Where a run stands: completed epochs, steps into the next one, RNG states, partial sums."""

    epoch: int
    step: int
    rng: dict[str, torch.Tensor]
    partial: torch.Tensor | None


def save_checkpoint(
    run_dir: Path,
    model: LatentModel,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    rng: dict[str, torch.Tensor],
    step: int = 0,
    partial: torch.Tensor | None = None,
    cfg: RunConfig | None = None,
) -> None:
    """training_state.safetensors (weights, optimizer, RNG: self-consistent, used to resume), then
    model.safetensors (the weights users load). ``step`` > 0 marks a stop inside epoch + 1. Both
    record the config they were trained with (``cfg``), so that an edited config.json can be named."""
    meta = {"epoch": str(epoch), "step": str(step), "data_shape": json.dumps(list(model.data_shape)),
            "format_version": "1"}
    if cfg is not None:
        meta["config"] = json.dumps(cfg.to_dict())
    state = optimizer.state_dict()
    weights = model.state_dict()
    tensors: dict[str, torch.Tensor] = {f"rng.{k}": v for k, v in rng.items()}
    tensors.update({f"model.{k}": v for k, v in weights.items()})
    if partial is not None:
        tensors["partial.sums"] = partial
    scalars: dict[str, Any] = {}
    for idx, pstate in state["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    opt_meta = {"param_groups": state["param_groups"], "scalars": scalars}
    _save_tensors(run_dir / STATE, tensors, {**meta, "optimizer": json.dumps(opt_meta)})
    _save_tensors(run_dir / MODEL, weights, meta)


def _check_config_unedited(run_dir: Path, meta: dict[str, str]) -> None:
    """A resumed run goes on with the settings it was trained with: a config.json changed since the
    checkpoint (``meta``: its metadata) in a setting a resume may not change is refused, naming each."""
    then = _recorded_config(meta)
    if then is None:
        return
    now = {k: v for k, v in flat(load_config(run_dir).to_dict()).items() if k not in RESUME_MAY_CHANGE and k != "data.labels"}
    if str(now.get("data.dataset")).partition(":")[0] == str(then.get("data.dataset")).partition(":")[0]:
        now.pop("data.dataset", None)  # the data's new place (the fingerprint check says if they changed)
    edited = _edited(then, now, "the run was trained with")
    if edited:
        raise RunFolderError(f"{run_dir / CONFIG} says {edited}; edited after training? A resumed run goes on "
                             f"with the settings it was trained with: put it back, or train a new run from it "
                             f"(vaekit train --config {run_dir / CONFIG} --out NEW_DIR)")


def read_state_meta(run_dir: Path) -> tuple[int, tuple[int, ...]] | None:
    """(epoch, data shape) of the saved training state to resume, or None when there is none yet. A
    run that has weights but no training state (removed to save space, say) cannot be resumed: starting
    it again would overwrite what it learned; nor can one whose config.json was edited since."""
    path = run_dir / STATE
    if not path.exists():
        if (run_dir / MODEL).exists():
            raise RunFolderError(f"{path}: missing, so {run_dir} cannot be resumed (its {MODEL} is kept: "
                                 "evaluate, plot and the other commands still use it); to train this config "
                                 f"again from the start, give a new --out or --overwrite instead of --resume")
        return None
    _, meta = _read_tensors(path)
    _check_config_unedited(run_dir, meta)
    return _int_meta(path, meta, "epoch"), saved_data_shape(path, meta)


def _check_weights_fit(path: Path, model: LatentModel, weights: dict[str, torch.Tensor],
                      meta: dict[str, str]) -> None:
    """The saved weights must be exactly the model's: same names, shapes and kinds of number. Where
    they are not, the model settings config.json changed since the weights were saved are named."""
    expected = model.state_dict()
    differ = (sorted(set(expected) ^ set(weights))
              or [k for k in expected if weights[k].shape != expected[k].shape
                  or weights[k].is_floating_point() != expected[k].is_floating_point()])
    if not differ:
        return
    then = _recorded_config(meta)
    edited = _edited(then, flat({"model": dataclasses.asdict(model.config)}), "the weights were saved with") if then else ""
    if edited:
        raise RunFolderError(f"{path}: {CONFIG} says {edited}; edited after training? Put it back (or train a new "
                             "run with the new settings)")
    first = differ[0]
    shapes = (f" is {tuple(weights[first].shape)} in the file, {tuple(expected[first].shape)} for {CONFIG}"
              if first in weights and first in expected else "")
    raise RunFolderError(f"{path}: weights do not match {CONFIG} (first difference: {show(first)}{shapes}); "
                         "the files come from different runs")


def _recorded_config(meta: dict[str, str]) -> dict[str, Any] | None:
    """The config a weights file was saved with, as dotted keys (None for files written before they
    recorded it, or with the record damaged)."""
    try:
        saved = json.loads(meta.get("config", "null"))
    except ValueError:
        return None
    return flat(saved) if isinstance(saved, dict) else None


def _edited(then: dict[str, Any], now: dict[str, Any], saved_as: str) -> str:
    """'model.latent_dim=3 where the weights were saved with 16' (``saved_as``: 'the weights were saved
    with') for each setting of ``now`` that differs from ``then`` (both dotted keys)."""
    keys = [k for k in now if k in then and then[k] != now[k]]
    said = "; ".join(f"{k}={show(now[k])} where {saved_as} {show(then[k])}" for k in keys[:3])
    return said + (f" (and {len(keys) - 3} more)" if len(keys) > 3 else "")


def _check_rng(path: Path, rng: dict[str, torch.Tensor], step: int) -> None:
    need = ["torch", "data"] + (["data_epoch_start"] if step else [])
    for key in need:
        t = rng.get(key)
        if t is None or t.dtype != torch.uint8 or t.dim() != 1:
            raise RunFolderError(f"{path}: random-number state '{key}' is missing or malformed; cannot resume exactly")
        try:  # a CPU state torch does not accept fails here, not in the middle of training
            if key == "torch" or len(t) == len(torch.get_rng_state()):
                torch.Generator().set_state(t)
        except RuntimeError:
            raise RunFolderError(f"{path}: random-number state '{key}' is not a valid generator state") from None


def load_training_state(run_dir: Path, model: LatentModel, optimizer: torch.optim.Optimizer) -> TrainingState:
    """Restore weights and optimizer in place from training_state.safetensors, after checking
    every part of it (a damaged file is refused before it can change anything)."""
    path = run_dir / STATE
    tensors, meta = _read_tensors(path)
    epoch, step = _int_meta(path, meta, "epoch"), _int_meta(path, meta, "step", 0)
    with untrusted(path, "training state"):
        opt_meta = json.loads(meta["optimizer"])
        scalars = opt_meta["scalars"]
        if not isinstance(scalars, dict):
            raise ValueError("optimizer scalars are not a map")
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    _check_weights_fit(path, model, weights, meta)
    params = list(model.parameters())
    state: dict[int, dict[str, Any]] = {}
    with untrusted(path, "optimizer state"):
        for name, value in tensors.items():
            if name.startswith("optim."):
                _, idx, key = name.split(".", 2)
                i = int(idx)
                if not 0 <= i < len(params):
                    raise ValueError(f"state for parameter {i} of {len(params)}")
                if key != "step" and (value.shape != params[i].shape or not value.is_floating_point()):
                    raise ValueError(f"'{key}' of parameter {i} has shape {tuple(value.shape)}")
                if key == "step" and (value.numel() != 1 or not math.isfinite(float(value)) or float(value) < 0):
                    raise ValueError(f"step of parameter {i} is {show(value.tolist())}")
                state.setdefault(i, {})[key] = value
        for name, value in scalars.items():
            idx, key = name.split(".", 1)
            if not 0 <= int(idx) < len(params) or not isinstance(value, (int, float, bool)):
                raise ValueError(f"scalar {show(name)}")
            state.setdefault(int(idx), {})[key] = value
    rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    _check_rng(path, rng, step)
    partial = tensors.get("partial.sums")
    if step and (partial is None or partial.shape != (3,) or not partial.is_floating_point()):
        raise RunFolderError(f"{path}: a mid-epoch checkpoint without its partial sums; not written by vaekit")
    model.load_state_dict(weights, strict=True)
    # The hyper-parameters come from config.json (the optimizer was built from it); only the
    # per-parameter state is taken from the file.
    current = optimizer.state_dict()["param_groups"]
    with untrusted(path, "optimizer state"):
        optimizer.load_state_dict({"state": state, "param_groups": current})
    return TrainingState(epoch, step, rng, partial)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Run:
    """Rebuild the model from config.json and load its weights; nothing but the folder is needed."""
    run_dir = files.user_path(run_dir, "run_dir")
    device = pick_device(device) if isinstance(device, str) else device
    cfg = load_config(run_dir)
    tensors, meta = _read_tensors(run_dir / MODEL)
    shape = saved_data_shape(run_dir / MODEL, meta)
    epoch = _int_meta(run_dir / MODEL, meta, "epoch", 0)
    try:
        model = build_model(cfg.model, shape, batch_size=cfg.train.eval_batch_size)
    except ConfigError as e:
        raise RunFolderError(f"{run_dir / MODEL}: its data shape {list(shape)} does not fit {CONFIG} ({e})") from None
    _check_weights_fit(run_dir / MODEL, model, tensors, meta)
    with untrusted(run_dir / MODEL, "weights file"):
        model.load_state_dict(tensors, strict=True)
    model.to(device).train(False)  # inference mode
    return Run(run_dir, cfg, model, epoch, shape)


def save_data_record(run_dir: Path, cfg: RunConfig, data: Any) -> None:
    """data.json: the data set's name, where it was read, the example shape, split sizes and fingerprint."""
    from .data import fingerprint

    names = list(data.class_names or []) or None
    record = {"dataset": cfg.data.dataset, "data_dir": cfg.data.data_dir, "labels": cfg.data.labels,
              "shape": list(data.shape), "n_train": len(data.train_x), "n_test": len(data.test_x),
              "fingerprint": fingerprint(data),
              "class_names": names if names and sum(map(len, names)) <= MAX_CONFIG_BYTES // 16 else None}
    files.atomic_write(run_dir / DATA_RECORD, files.strict_json(record, indent=2) + "\n")


def _data_record(run_dir: str | Path) -> dict[str, Any]:
    record = files.read_json_if_there(Path(run_dir) / DATA_RECORD, "data record", MAX_CONFIG_BYTES)
    return record if isinstance(record, dict) else {}


def recorded_fingerprint(run_dir: str | Path) -> str | None:
    """The fingerprint of the data (split included) a run was trained on (None for older runs or damage)."""
    value = _data_record(run_dir).get("fingerprint")
    return value if isinstance(value, str) else None


def recorded_class_names(run_dir: str | Path) -> list[str] | None:
    """The class names data.json recorded at training (None for older runs, unnamed classes or damage)."""
    names = _data_record(run_dir).get("class_names")
    return names if isinstance(names, list) and names and all(isinstance(n, str) for n in names) else None


def known_classes(names: list[str] | None) -> str:
    """The class names a message offers when it was given one it does not know."""
    return f"its classes are {show(', '.join(names), 200)}" if names else "its classes have no names"


def class_index(names: list[str] | None, text: str) -> int | None:
    """The number of the class named ``text``: the same name, else the same once both are in one
    Unicode form (a folder made on macOS keeps 'é' as 'e' + accent) and case, where that is one class."""
    names = names or []
    if text in names:
        return names.index(text)
    key = lambda s: unicodedata.normalize("NFC", s).casefold()  # noqa: E731
    matches = [i for i, name in enumerate(names) if key(name) == key(text)]
    return matches[0] if len(matches) == 1 else None


def class_label(run_dir: str | Path, label: int | str | None, classes: int) -> tuple[int | None, str]:
    """A class to draw as its number: a class name data.json recorded (a class folder named ``3`` is
    that folder's class, whatever its number), else a number; and the name to show beside it."""
    if label is None:
        return None, ""
    text = str(label)
    if not classes:
        raise VaekitError(f"--label {show(text)}: {run_dir} is not a conditional model (train it with --conditional)")
    names = recorded_class_names(run_dir)
    named = class_index(names, text)
    if named is not None:
        number = named
    elif (isinstance(label, int) and not isinstance(label, bool)) or re.fullmatch(r"[+-]?\d{1,9}", text.strip()):
        number = int(label) if isinstance(label, int) else int(text)
    else:
        raise VaekitError(f"--label {show(text)}: not a class of {run_dir}; {known_classes(names)} (or give a number "
                          f"0..{classes - 1})")
    if not 0 <= number < classes:
        raise VaekitError(f"--label {number}: this model knows classes 0..{classes - 1}")
    shown = names[number] if names and number < len(names) and names[number] != str(number) else None
    return number, f" \"{show(shown, 60)}\"" if shown else ""


def check_data_record(run_dir: Path, data: Any) -> None:
    """Warn (one line) when the data now loaded differ from those the run recorded at training."""
    from .data import fingerprint

    path = Path(run_dir) / DATA_RECORD
    if not path.exists():
        return  # a run from before data.json existed
    try:
        record = json.loads(files.read_regular(path, "data record", MAX_CONFIG_BYTES))
        saved = record["fingerprint"]
    except (VaekitError, ValueError, KeyError, TypeError, RecursionError):
        warnings.warn(f"{path}: unreadable; cannot check that the data are the ones the run was trained on",
                      stacklevel=2)
        return
    if saved != fingerprint(data):
        warnings.warn(f"{data.name}: these data differ from the ones {run_dir} was trained on (fingerprint "
                      f"{show(saved, 20)} in {DATA_RECORD}); its numbers will not match the run's", stacklevel=2)


HISTORY_NUMBERS = ("beta", "lr", "train_loss", "train_recon", "train_kl", "test_loss", "test_recon", "test_kl",
                   "train_seconds", "seconds")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _history_record(record: Any, path: Path, n: int) -> dict[str, Any]:
    """One line's record as every reader may take it: an epoch number, numbers (or null) where
    vaekit writes numbers, a list of them for the KL per dimension; NaN/inf (which vaekit writes as
    null) read as None. Anything else is damage, named by line and key."""
    if not isinstance(record, dict):
        raise RunFolderError(f"{path}: line {n} is not a JSON object")
    epoch = record.get("epoch")
    if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 1):
        raise RunFolderError(f"{path}: line {n} has no epoch number (\"epoch\": {show(json.dumps(epoch), 30)})")
    for key in (k for k in HISTORY_NUMBERS if record.get(k) is not None):
        if not _is_number(record[key]):
            raise RunFolderError(f"{path}: line {n}: \"{key}\": {show(json.dumps(record[key]), 30)} is not a number")
    dims = record.get("test_kl_per_dim")
    if dims is not None and not (isinstance(dims, list) and all(v is None or _is_number(v) for v in dims)):
        raise RunFolderError(f"{path}: line {n}: \"test_kl_per_dim\" is not a list of numbers")
    return files.finite_or_none(record)


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records, each checked (``_history_record``). A last line cut short (a crash of
    an older vaekit mid-append) is dropped with a warning; damage anywhere else is an error."""
    path = Path(run_dir) / HISTORY
    if not path.exists():
        return []
    text = files.read_regular(path, "history file").decode("utf-8", "replace")
    lines = text.split("\n")
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            if n == len(lines) and not text.endswith("\n"):
                warnings.warn(f"{path}: its last line was cut short (a crash while writing it); it is ignored "
                              "and will be rewritten", stacklevel=2)
                break
            raise RunFolderError(f"{path}: line {n} is not valid JSON") from None
        records.append(_history_record(record, path, n))
    return records


class History:
    """A training run's history.jsonl: its records, kept with their JSON lines so that each is
    serialised once. The file is rewritten whole each epoch (atomically); serialising every record
    again made a long run of a small model spend most of its time here (0.58 s per epoch at
    40,000 epochs, against 0.02 s for the bytes)."""

    def __init__(self, run_dir: Path, records: list[dict[str, Any]]) -> None:
        self.path = Path(run_dir) / HISTORY
        self._lines = [files.strict_json(r) + "\n" for r in records]

    def write(self) -> None:
        """Rewrite history.jsonl atomically with the records held."""
        files.atomic_write(self.path, "".join(self._lines))

    def append(self, record: dict[str, Any]) -> None:
        """Add one epoch's record and rewrite the file with it."""
        self._lines.append(files.strict_json(record) + "\n")
        self.write()


def truncate_history(run_dir: Path, epoch: int) -> History:
    """Keep only the records of epochs up to ``epoch`` (those the checkpoint covers); returns them."""
    kept = [r for r in read_history(run_dir) if r["epoch"] <= epoch]  # read_history checked each epoch
    missing = sorted(set(range(1, epoch + 1)) - {r["epoch"] for r in kept})
    if missing:
        which = f"epoch {missing[0]}" if len(missing) == 1 else f"{len(missing)} epochs ({missing[0]}..{missing[-1]})"
        warnings.warn(f"{Path(run_dir) / HISTORY}: no record of {which} of the {epoch} trained so far (the file was "
                      "removed or edited); training goes on, and the curves will lack "
                      f"{'it' if len(missing) == 1 else 'them'}", stacklevel=2)
    history = History(run_dir, kept)
    history.write()
    return history
