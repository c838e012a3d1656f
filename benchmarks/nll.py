"""Quality benchmark: test NLL of seed 003's VAE under the literature's protocol, in a time budget.

Protocol: MNIST binarised afresh every epoch for training, the test set binarised once with a
fixed seed, Bernoulli likelihood, log p(x) estimated by importance sampling with K = 5000 on all
10,000 test images. Network: 784-400-400-20 (preset ``mnist-nll``: lr warm-up over two epochs,
then cosine decay; beta warm-up over 10 epochs; batch 128).

The number of epochs is fitted to ``--minutes`` (``timed_fit.py``): the first two epochs are timed
(the preset's lr warm-up lasts two epochs, so nothing in them depends on the total), the remaining
budget sets the total, and the run continues to it, so the same run is ``vaekit train --preset
mnist-nll --epochs N`` (if an epoch would overrun the budget, training stops early: ``max_minutes``). Anchors: Pythae's VAE 89.78 nats; Burda et al. (2016) VAE 86.76, IWAE (k=50) 84.78.

    python benchmarks/nll.py --data-dir ../shared/data/mnist                 # 30-minute budget
    python benchmarks/nll.py --data-dir ../shared/data/mnist --minutes 2 --k 100 --n 1000   # smoke run
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from timed_fit import fit_within
from vaekit.evaluate import evaluate_model, run_data
from vaekit.files import atomic_write, strict_json
from vaekit.presets import get_preset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="folder with the MNIST files (default: vaekit's data folder)")
    p.add_argument("--minutes", type=float, default=30.0, help="training budget in minutes (default 30)")
    p.add_argument("--k", type=int, default=5000, help="importance samples per test image (default 5000)")
    p.add_argument("--n", type=int, default=None, help="first N test images only (default: all 10,000)")
    p.add_argument("--preset", default="mnist-nll", help="mnist-nll (one layer) or mnist-hvae (hierarchy + IWAE)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change the preset, e.g. --set objective.kind=iwae or --set model.prior=vamp (repeatable)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/bench-nll", help="run folder (overwritten)")
    args = p.parse_args()

    overrides = dict(item.split("=", 1) for item in args.set)
    overrides["train.device"] = args.device
    if args.data_dir:
        overrides["data.data_dir"] = args.data_dir
    cfg = get_preset(args.preset).with_overrides(overrides)
    run_dir = Path(args.out)
    run, epochs, train_minutes = fit_within(cfg, run_dir, args.minutes, probe=2)
    reached = run.epoch

    t1 = time.perf_counter()
    data = run_data(run, args.data_dir, progress=False)
    if args.n:
        data = replace(data, test_x=data.test_x[: args.n],
                       test_y=None if data.test_y is None else data.test_y[: args.n])
    device = next(run.model.parameters()).device  # fit returns the run on its training device
    metrics = evaluate_model(run.model, data.to(device), args.k, run.config.train.eval_batch_size, run.config.seed)
    eval_minutes = (time.perf_counter() - t1) / 60
    result = {
        "nll_iwae": round(metrics["nll_iwae"], 2), "elbo": round(-metrics["loss"], 2),
        "iwae_k": args.k, "n_test": metrics["n"], "epochs": reached, "epochs_planned": epochs,
        "train_minutes": round(train_minutes, 1), "budget_minutes": args.minutes,
        "eval_minutes": round(eval_minutes, 1), "active_units": metrics["active_units"],
        "preset": args.preset, "changes": args.set, "run": str(run_dir), "device": _device_name(args.device),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }
    atomic_write(run_dir / "bench_nll.json", strict_json(result, indent=2) + "\n")
    print(f"test NLL (IWAE, K={args.k}, {metrics['n']} images): {result['nll_iwae']:.2f} nats; "
          f"ELBO {result['elbo']:.2f}; {reached} of {epochs} planned epochs in {result['train_minutes']} min "
          f"(budget {args.minutes:g}); evaluation {result['eval_minutes']} min")
    print(json.dumps(result))


def _device_name(device: str) -> str:
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} CPU"


if __name__ == "__main__":
    main()
