"""vaekit: train, evaluate, explore and generate with variational autoencoders.

The public API, importable from the top level (loaded on first use, so ``import vaekit`` is cheap):

    cfg = vaekit.get_preset("mnist-mlp").with_overrides({"train.epochs": 2})
    run = vaekit.fit(cfg, "runs/mnist")          # same as `vaekit train`
    vaekit.evaluate_run("runs/mnist")            # same as `vaekit evaluate`

``COMMANDS`` names the function behind each command of the `vaekit` CLI.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "RunConfig": "config", "DataConfig": "config", "ModelConfig": "config",
    "ObjectiveConfig": "config", "TrainConfig": "config",
    "get_preset": "presets", "PRESETS": "presets", "config_for_data": "autoconfig",
    "load_dataset": "data", "Dataset": "data",
    "build_model": "models", "VAE": "models", "AE": "models", "DiagonalGaussian": "models",
    "elbo_parts": "objectives", "beta_at": "objectives",
    "fit": "train",
    "load_run": "checkpoint", "Run": "checkpoint",
    "evaluate_run": "evaluate", "elbo_metrics": "evaluate",
    "sample_run": "grids", "reconstruct_run": "grids",
    "sample_grid": "grids", "reconstruction_grid": "grids", "save_png": "grids",
    "plot_run": "figures", "compare_runs": "figures", "report_run": "report", "run_sweep": "sweep",
    "probe_run": "downstream", "anomaly_run": "downstream",
    "walkthrough": "walkthrough",
    "Explorer": "explore", "serve": "server", "export_run": "export", "model_card": "modelcard",
    "VaekitError": "errors",
}

# each command of the `vaekit` CLI and the function that does the same from Python
COMMANDS = {
    "train": "fit", "evaluate": "evaluate_run", "sample": "sample_run", "reconstruct": "reconstruct_run",
    "plot": "plot_run", "report": "report_run", "compare": "compare_runs", "sweep": "run_sweep",
    "export": "export_run", "serve": "serve", "probe": "probe_run", "anomaly": "anomaly_run",
    "walkthrough": "walkthrough", "presets": "PRESETS",
}

__all__ = sorted(_API) + ["COMMANDS", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'vaekit' has no attribute '{name}'")


def __dir__() -> list[str]:
    return __all__
