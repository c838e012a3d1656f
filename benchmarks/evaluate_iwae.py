"""Benchmark: `vaekit evaluate --iwae-k 5000` on the seed-003 preset trained 10 epochs on MNIST.

The literature's protocol for the importance-sampled NLL (K = 5000) on all 10,000 test images.
Target (issue 3): under 15 minutes on 2 CPU cores.

    python benchmarks/evaluate_iwae.py --data-dir ../shared/data/mnist [--run RUN_DIR] [--k 5000]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from vaekit.evaluate import evaluate_run
from vaekit.presets import get_preset
from vaekit.train import fit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--run", help="an existing mnist-mlp run folder (else one is trained, 10 epochs)")
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--out", default="runs/bench-mnist-mlp")
    args = p.parse_args()

    run_dir = Path(args.run or args.out)
    if not args.run:
        cfg = get_preset("mnist-mlp").with_overrides({"data.data_dir": args.data_dir, "train.epochs": 10})
        t = time.perf_counter()
        fit(cfg, run_dir, overwrite=True, progress=False)
        print(f"trained 10 epochs in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    metrics = evaluate_run(run_dir, data_dir=args.data_dir, iwae_k=args.k)
    seconds = time.perf_counter() - t
    result = {
        "k": args.k, "n": metrics["n"], "seconds": round(seconds, 1), "minutes": round(seconds / 60, 2),
        "nll_iwae": metrics["nll_iwae"], "loss": metrics["loss"], "bits_per_dim": metrics["bits_per_dim"],
        "active_units": metrics["active_units"], "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
