"""Quality benchmark: test NLL of seed 003's VAE under the literature's protocol, in a time budget.

Protocol: MNIST binarised afresh every epoch for training, the test set binarised once with a
fixed seed, Bernoulli likelihood, log p(x) estimated by importance sampling with K = 5000 on all
10,000 test images. Network: 784-400-400-20 (preset ``mnist-nll``: lr warm-up over two epochs,
then cosine decay; beta warm-up over 10 epochs; batch 128).

The number of epochs is fitted to ``--minutes``: the first two epochs are timed (they are the
run's own, and the schedules during them do not depend on the total), the remaining budget sets
the total, and the run continues to it, so the same run is ``vaekit train --preset mnist-nll
--epochs N`` (if an epoch would overrun the budget, training stops early: ``max_minutes``). Anchors: Pythae's VAE 89.78 nats; Burda et al. (2016) VAE 86.76, IWAE (k=50) 84.78.

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

from vaekit.checkpoint import read_history
from vaekit.evaluate import evaluate_model, run_data
from vaekit.files import atomic_write, strict_json
from vaekit.presets import get_preset
from vaekit.train import fit

PROBE = 2  # epochs timed first: the preset's lr warm-up lasts 2 epochs, so nothing in them depends on the total
SAFETY = 0.87  # plan for 87% of the remaining budget: on this 2-core machine epochs ran 10-20% slower
# after the first few than during them; the hard stop (max_minutes) catches the rest


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
    overrides.update({"train.device": args.device, "train.epochs": PROBE})
    if args.data_dir:
        overrides["data.data_dir"] = args.data_dir
    cfg = get_preset(args.preset).with_overrides(overrides)
    run_dir = Path(args.out)
    budget = args.minutes * 60

    t0 = time.perf_counter()
    run = fit(cfg, run_dir, overwrite=True, progress=False)
    first = time.perf_counter() - t0
    per_epoch = max(r["seconds"] for r in read_history(run_dir))
    epochs = PROBE + max(0, int((budget - first) * SAFETY / per_epoch))
    print(f"epochs 1-{PROBE} took {first:.1f} s (up to {per_epoch:.2f} s each): planning {epochs} epochs "
          f"for a {args.minutes:g}-minute budget", flush=True)
    if epochs > PROBE:
        remaining = (budget - (time.perf_counter() - t0)) / 60
        run = fit(None, run_dir, resume=True, epochs=epochs, progress=False, log=_every(25, epochs),
                  max_minutes=remaining)
    train_minutes = (time.perf_counter() - t0) / 60
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


def _every(n: int, total: int):
    """Log the epoch lines of every n-th epoch and the last one."""
    def log(line: str) -> None:
        if line.startswith("epoch"):
            done = int(line.split()[1].split("/")[0])
            if done % n and done != total:
                return
        print(line, flush=True)
    return log


def _device_name(device: str) -> str:
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} CPU"


if __name__ == "__main__":
    main()
