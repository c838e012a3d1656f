"""Metrics from a model and data: the negative ELBO and its parts per example, with beta = 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_run
from .data import Dataset, load_dataset
from .objectives import elbo_parts


@torch.no_grad()
def elbo_metrics(
    model: torch.nn.Module, data: Dataset, split: str = "test", batch_size: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Mean per-example ``loss`` (= recon + KL, the negative ELBO), ``recon``, ``kl`` and ``n``.

    One reparameterised sample per example, drawn from a fixed seed so repeated calls agree.
    """
    was_training = model.training
    model.eval()
    stored = data.test_x if split == "test" else data.train_x
    device = stored.device
    gen = torch.Generator(device=device).manual_seed(seed)
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    for start in range(0, len(stored), batch_size):
        x = data.features(stored[start : start + batch_size])
        recon, kl = elbo_parts(model, x, gen)
        sums += torch.stack([recon.sum(), kl.sum()]).double()
    model.train(was_training)
    n = len(stored)
    recon, kl = (sums / max(n, 1)).tolist()
    return {"loss": recon + kl, "recon": recon, "kl": kl, "n": n}


def evaluate_run(
    run_dir: str | Path, data: Dataset | None = None, device: str = "cpu", progress: bool = True
) -> dict[str, Any]:
    """Test-split metrics of the model saved in ``run_dir``, whatever beta it was trained with."""
    run = load_run(run_dir, device)
    data = (data or load_dataset(run.config.data, progress=progress)).to(device)
    metrics = elbo_metrics(run.model, data, "test", run.config.train.eval_batch_size, run.config.seed)
    return {**metrics, "epoch": run.epoch, "model": run.config.model.kind,
            "likelihood": run.config.model.likelihood, "dataset": run.config.data.dataset}
