"""Run folders: config.json, model.safetensors, training_state.safetensors, history.jsonl.

No pickle anywhere: tensors go to safetensors, everything else to JSON. Each file is written
to a temporary name in the same folder, fsynced and renamed, so a crash leaves either the
old complete file or the new complete file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import RunConfig
from .errors import ConfigError, RunFolderError
from .models import LatentModel, build_model

CONFIG = "config.json"
MODEL = "model.safetensors"
STATE = "training_state.safetensors"
HISTORY = "history.jsonl"
RUN_ARTIFACTS = ("samples.png", "reconstructions.png", "report.html", "plots")  # made from the weights


@dataclass
class Run:
    """A loaded run folder: its config, its model (in eval mode) and the epochs it has done."""

    path: Path
    config: RunConfig
    model: LatentModel
    epoch: int
    data_shape: tuple[int, ...]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=meta)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise RunFolderError(
                f"{path}: could not be written ({e.strerror or e}); the previous complete checkpoint is "
                "kept. Free some disk space and resume with --resume"
            ) from None
        raise
    _fsync_dir(path.parent)


def check_free_space(run_dir: Path, model: LatentModel) -> None:
    """Refuse to start when the disk cannot hold two checkpoints (written side by side)."""
    import shutil

    params = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    need = 2 * (params * 4) + (16 << 20)  # model + (weights, two Adam moments) + slack
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise RunFolderError(
            f"{run_dir}: only {free / 2**20:.1f} MiB free, checkpoints need about {need / 2**20:.1f} MiB; "
            "free some space or choose another --out"
        )


def _load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return load_file(str(path)), meta
    except FileNotFoundError:
        raise RunFolderError(f"{path}: missing; this run folder has no saved weights yet") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise RunFolderError(f"{path}: not a readable safetensors file ({e})") from None


def prepare_run_dir(path: Path, overwrite: bool) -> None:
    """Create ``path`` for a new run; refuse a non-empty folder unless ``overwrite``."""
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{path}: exists and is not a folder; choose another --out")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise RunFolderError(
                f"{path}: folder is not empty; pass --overwrite to replace it, "
                "--resume to continue it, or choose another --out"
            )
        import shutil

        for name in (CONFIG, MODEL, STATE, HISTORY, *RUN_ARTIFACTS):  # only what vaekit writes
            target = path / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        for tmp in path.glob(".*.tmp"):
            tmp.unlink()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise RunFolderError(f"{path}: cannot write here ({e.strerror or e}); choose another --out") from None


def save_config(run_dir: Path, cfg: RunConfig) -> None:
    atomic_write_bytes(run_dir / CONFIG, (cfg.to_json() + "\n").encode())


def load_config(run_dir: Path) -> RunConfig:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: no such run folder")
    if not (run_dir / CONFIG).is_file():
        raise RunFolderError(f"{run_dir}: not a run folder (no {CONFIG}); pass a folder made by `vaekit train`")
    try:
        return RunConfig.load(run_dir / CONFIG)
    except ConfigError as e:
        raise RunFolderError(str(e)) from None


@dataclass
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
) -> None:
    """training_state.safetensors (weights, optimizer, RNG: self-consistent, used to resume), then
    model.safetensors (the weights users load). ``step`` > 0 marks a stop inside epoch + 1."""
    meta = {"epoch": str(epoch), "step": str(step), "data_shape": json.dumps(list(model.data_shape)),
            "format_version": "1"}
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
    _atomic_save_tensors(run_dir / STATE, tensors, {**meta, "optimizer": json.dumps(opt_meta)})
    _atomic_save_tensors(run_dir / MODEL, weights, meta)


def load_training_state(run_dir: Path, model: LatentModel, optimizer: torch.optim.Optimizer) -> TrainingState:
    """Restore weights and optimizer in place from training_state.safetensors."""
    path = run_dir / STATE
    tensors, meta = _load_tensors(path)
    try:
        opt_meta = json.loads(meta["optimizer"])
        epoch, step = int(meta["epoch"]), int(meta.get("step", 0))
    except (KeyError, ValueError) as e:
        raise RunFolderError(f"{path}: metadata is incomplete ({e}); cannot resume") from None
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise RunFolderError(f"{path}: weights do not match {CONFIG} ({str(e).splitlines()[0]})") from None
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in opt_meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": opt_meta["param_groups"]})
    except (ValueError, KeyError) as e:
        raise RunFolderError(f"{path}: optimizer state does not fit the model ({e})") from None
    rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    return TrainingState(epoch, step, rng, tensors.get("partial.sums"))


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Run:
    """Rebuild the model from config.json and load its weights; nothing but the folder is needed."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    tensors, meta = _load_tensors(run_dir / MODEL)
    try:
        shape = tuple(int(s) for s in json.loads(meta["data_shape"]))
        epoch = int(meta.get("epoch", 0))
    except (KeyError, ValueError, TypeError):
        raise RunFolderError(f"{run_dir / MODEL}: metadata lacks the data shape; not written by vaekit") from None
    model = build_model(cfg.model, shape)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "mismatch"
        raise RunFolderError(
            f"{run_dir / MODEL}: weights do not match {CONFIG} ({first}); "
            "the files come from different runs"
        ) from None
    model.to(device).train(False)  # inference mode
    return Run(run_dir, cfg, model, epoch, shape)


def append_history(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / HISTORY, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / HISTORY
    if not path.is_file():
        return []
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise RunFolderError(f"{path}: line {n} is not valid JSON") from None
    return records


def truncate_history(run_dir: Path, epoch: int) -> None:
    """Keep only the records of epochs up to ``epoch`` (those the checkpoint covers)."""
    kept = [r for r in read_history(run_dir) if int(r.get("epoch", 0)) <= epoch]
    atomic_write_bytes(Path(run_dir) / HISTORY, "".join(json.dumps(r) + "\n" for r in kept).encode())
