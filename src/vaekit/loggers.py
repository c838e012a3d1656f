"""Where training reports besides history.jsonl (which stays the source of truth): a registry of
loggers named by ``--log NAME`` (``--tensorboard`` is ``--log tensorboard``).

A logger sees each epoch's record and the model after it, on rank 0 only, and draws no random
numbers from the generators training uses, so a logged run and an unlogged one are the same run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Protocol

import torch

from .data import Dataset
from .errors import ConfigError
from .models import LatentModel

TENSORBOARD_DIR = "tensorboard"
IMAGES = 64  # prior samples per epoch; reconstructions: the first 32 test images
EMBEDDING_POINTS = 2000


class Logger(Protocol):
    def epoch(self, record: dict[str, Any], model: LatentModel, data: Dataset) -> None: ...
    def finish(self, model: LatentModel, data: Dataset, epoch: int) -> None: ...
    def close(self) -> None: ...


class TensorBoard:
    """Scalars (loss parts, beta, lr, KL per dimension), sample and reconstruction grids per epoch,
    and at the end the test codes for the projector, in RUN_DIR/tensorboard."""

    name = "tensorboard"

    @staticmethod
    def check() -> None:
        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("--tensorboard needs the tensorboard package: pip install -e '.[tensorboard]'")

    def __init__(self, run_dir: Path, first_epoch: int, seed: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # Events after the checkpoint a resumed run starts from are hidden (purge_step), as in the history.
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=first_epoch if first_epoch > 1 else None)
        self.seed = seed

    def epoch(self, record: dict[str, Any], model: LatentModel, data: Dataset) -> None:
        from .grids import image_grid

        step, w = record["epoch"], self.writer
        for part in ("loss", "recon", "kl"):
            for split in ("train", "test"):
                w.add_scalar(f"{part}/{split}", record[f"{split}_{part}"], step)
        w.add_scalar("schedule/beta", record["beta"], step)
        w.add_scalar("schedule/lr", record["lr"], step)
        w.add_scalar("time/epoch_seconds", record["seconds"], step)
        for i, v in enumerate((record.get("test_kl_per_dim") or [])[:256]):
            w.add_scalar(f"kl_per_dim/z{i + 1:03d}", v, step)
        if data.is_image:
            samples, recon = self._pictures(model, data)
            w.add_image("samples", image_grid(samples), step, dataformats=_format(data))
            w.add_image("reconstructions", image_grid(recon), step, dataformats=_format(data))
        w.flush()

    def finish(self, model: LatentModel, data: Dataset, epoch: int) -> None:
        from .evaluate import latent_means

        was = model.training
        model.train(False)
        try:
            n = min(EMBEDDING_POINTS, len(data.test_x))
            codes = latent_means(model, data, "test")[:n].float().cpu()
            labels = None if data.test_y is None else [
                data.class_names[int(y)] if data.class_names else str(int(y)) for y in data.test_y[:n].tolist()]
            thumbs = data.features(data.test_x[:n]).float().cpu() if data.is_image else None
            self.writer.add_embedding(codes, metadata=labels, label_img=thumbs, global_step=epoch, tag="test_codes")
        finally:
            model.train(was)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    @torch.no_grad()
    def _pictures(self, model: LatentModel, data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        was = model.training
        model.train(False)
        try:
            gen = torch.Generator(device=model.device).manual_seed(self.seed)
            samples = model.sample(IMAGES, generator=gen)
            x = data.features(data.test_x[:32])
            from .evaluate import labels_for

            recon = model.reconstruct(x, labels_for(model, data, "test", 0, len(x)))
            pairs = torch.stack([x, recon], 1).reshape(-1, *x.shape[1:])  # input, reconstruction, ...
            return samples, pairs
        finally:
            model.train(was)


def _format(data: Dataset) -> str:
    return "HW" if data.shape[0] == 1 else "HWC"


LOGGERS: dict[str, type] = {TensorBoard.name: TensorBoard}


def check_loggers(names: list[str]) -> None:
    """Before training: every name is known and its package is installed."""
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"--log {name}: unknown logger; choose from {', '.join(sorted(LOGGERS))}")
        LOGGERS[name].check()


class Loggers:
    """The run's loggers together (none: every call does nothing)."""

    def __init__(self, names: list[str], run_dir: Path, first_epoch: int, seed: int) -> None:
        self.items = [LOGGERS[n](run_dir, first_epoch, seed) for n in dict.fromkeys(names)]

    def epoch(self, record: dict[str, Any], model: LatentModel, data: Dataset) -> None:
        for item in self.items:
            item.epoch(record, model, data)

    def finish(self, model: LatentModel, data: Dataset, epoch: int) -> None:
        for item in self.items:
            item.finish(model, data, epoch)

    def close(self) -> None:
        for item in self.items:
            item.close()

