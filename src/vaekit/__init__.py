"""vaekit: train, evaluate, explore and generate with variational autoencoders.

The public API, importable from the top level (loaded on first use, so ``import vaekit`` is cheap):

    cfg = vaekit.get_preset("mnist-mlp").with_overrides({"train.epochs": 2})
    run = vaekit.fit(cfg, "runs/mnist")          # same as `vaekit train`
    vaekit.evaluate_run("runs/mnist")            # same as `vaekit evaluate`
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "RunConfig": "config", "DataConfig": "config", "ModelConfig": "config",
    "ObjectiveConfig": "config", "TrainConfig": "config",
    "get_preset": "presets", "PRESETS": "presets",
    "load_dataset": "data", "Dataset": "data",
    "build_model": "models", "VAE": "models", "AE": "models", "DiagonalGaussian": "models",
    "elbo_parts": "objectives", "beta_at": "objectives",
    "fit": "train",
    "load_run": "checkpoint", "Run": "checkpoint",
    "evaluate_run": "evaluate", "elbo_metrics": "evaluate",
    "sample_grid": "grids", "reconstruction_grid": "grids", "save_png": "grids",
    "walkthrough": "walkthrough",
    "Explorer": "explore", "serve": "server", "export_run": "export", "model_card": "modelcard",
    "VaekitError": "errors",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'vaekit' has no attribute '{name}'")
