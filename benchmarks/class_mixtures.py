"""Benchmark: how a conditional VAE's samples depend on where their codes come from.

Trains (or reuses) `mnist-mlp --conditional` for 10 epochs, then generates 10,000 samples, each asked
for the class of the test image it is compared with, with codes from the prior N(0, I), from one
Gaussian mixture fitted to all training codes (pooled), and from a mixture per class (what `vaekit
sample` and `evaluate --generation --sampler gmm` use for a conditional run); prints FID, precision,
recall and the feature net's class accuracy of each.

    python benchmarks/class_mixtures.py --data-dir ../shared/data/mnist [--run RUN_DIR] [--components 10]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vaekit.checkpoint import load_run
from vaekit.evaluate import generate_for_test, labels_for, latent_means, run_data
from vaekit.generation import generation_metrics
from vaekit.presets import get_preset
from vaekit.samplers import fit_gmm, fit_gmm_by_class
from vaekit.train import fit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--run", help="an existing conditional run folder (else one is trained, 10 epochs)")
    p.add_argument("--out", default="runs/bench-mnist-cvae")
    p.add_argument("--components", type=int, default=10)
    p.add_argument("--n", type=int, default=10_000)
    args = p.parse_args()

    run_dir = Path(args.run or args.out)
    if not args.run:
        cfg = get_preset("mnist-mlp").with_overrides({"data.data_dir": args.data_dir, "train.epochs": 10,
                                                      "model.conditional": True})
        t = time.perf_counter()
        fit(cfg, run_dir, overwrite=True, progress=False)
        print(f"trained 10 epochs in {time.perf_counter() - t:.1f} s")
    run = load_run(run_dir)
    data = run_data(run, args.data_dir, progress=False)
    model, seed = run.model, run.config.seed
    model.train(False)
    with torch.no_grad():
        codes = latent_means(model, data, "train")
    t = time.perf_counter()
    mixtures = {"pooled mixture": fit_gmm(codes, args.components, seed),
                "mixture per class": fit_gmm_by_class(codes, data.train_y, args.components, seed)}
    print(f"fitted both mixtures in {time.perf_counter() - t:.1f} s")
    n = min(args.n, len(data.test_x))
    rows = {}
    for name, gmm in [("prior N(0, I)", None), *mixtures.items()]:
        gen = torch.Generator().manual_seed(seed)
        x = generate_for_test(model, data, n, "prior" if gmm is None else "gmm", gen, gmm)
        m = generation_metrics(x, data, seed, lambda s: None, labels_for(model, data, "test", 0, n))
        rows[name] = {k: m[k] for k in ("fid", "precision", "recall", "class_accuracy")}
        print(f"{name:>18}: FID {m['fid']:.1f}  precision {m['precision']:.3f}  recall {m['recall']:.3f}  "
              f"class accuracy {m['class_accuracy']:.3f}")
    print(json.dumps({"run": str(run_dir), "n": n, "components": args.components, "rows": rows}))


if __name__ == "__main__":
    main()
