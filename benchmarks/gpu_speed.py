"""Seconds per epoch on a GPU: the 784-400-20 example model, the `mnist-mlp` preset and the
`cifar10-resnet` colour preset, in each precision asked for, eager and compiled.

Each configuration trains ``--epochs`` epochs with vaekit's own trainer (data resident on the
device, channels-last for the conv net) and reports the median ``train_seconds`` of the epochs
after the first (which holds the warm-up and any compiling), its range, and the last test loss.
The colour preset trains on random 8-bit images of CIFAR-10's shape (50,000 + 10,000): an epoch's
time does not depend on the pixels, and the photos need not travel to the GPU machine. A large
matrix product timed in the same run (bf16 and fp32) gives the device's reference rate.

    python benchmarks/gpu_speed.py --data-dir ../shared/data/mnist --out gpu_speed.json
    python benchmarks/gpu_speed.py --device cpu --epochs 2 --only example   # the script's logic, here
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from speed import example_config, matmul_gflops, preset_config
from vaekit.checkpoint import read_history
from vaekit.data.dataset import Dataset
from vaekit.train import fit


def cifar_shaped(cfg, seed: int = 0) -> tuple:
    """``cfg`` and random 8-bit colour images and labels with CIFAR-10's sizes, standing in for the
    data its config names (``source``: fit trains only on data its config would load; the run folder
    is thrown away, so nothing reloads them)."""
    g = torch.Generator().manual_seed(seed)
    images = lambda n: torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)  # noqa: E731
    labels = lambda n: torch.randint(0, 10, (n,), generator=g)  # noqa: E731
    return cfg, Dataset("cifar10", images(50000), labels(50000), images(10000), labels(10000), scale=255.0,
                        source=cfg.data)


def matmul_tflops(device: str, dtype: torch.dtype) -> float:
    """speed.matmul_gflops at 8192 on a GPU (2048 elsewhere), in TFLOP/s."""
    n = 8192 if device.startswith("cuda") else 2048
    return matmul_gflops(n, device=device, dtype=dtype) / 1e3


def time_config(name: str, cfg, device: str, precision: str, compile_: bool, data: Dataset | None) -> dict:
    overrides = {"train.device": device, "train.precision": precision, "train.compile": compile_}
    cfg = cfg.with_overrides(overrides)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        fit(cfg, Path(tmp) / "run", data=data, progress=False, log=lambda s: None)
        wall = time.perf_counter() - t0
        history = read_history(Path(tmp) / "run")
    seconds = [r["train_seconds"] for r in history[1:]] or [history[0]["train_seconds"]]
    return {"model": name, "precision": precision, "compile": compile_, "epochs": len(history),
            "seconds_per_epoch": statistics.median(seconds), "min": min(seconds), "max": max(seconds),
            "first_epoch_seconds": history[0]["train_seconds"], "test_loss": history[-1]["test_loss"],
            "wall_seconds": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16")
    ap.add_argument("--compile", choices=["no", "yes", "both"], default="both")
    ap.add_argument("--only", default="example,mnist-mlp,cifar10-resnet", help="comma-separated models to time")
    ap.add_argument("--out", default=None, help="JSON file for the results")
    args = ap.parse_args()

    configs = {
        "example": lambda: (example_config(args.data_dir, args.epochs), None),
        "mnist-mlp": lambda: (preset_config(args.data_dir, args.epochs), None),
        "cifar10-resnet": lambda: cifar_shaped(preset_config(None, args.epochs, "cifar10-resnet")),
    }
    modes = {"no": [False], "yes": [True], "both": [False, True]}[args.compile]
    on_gpu = args.device.startswith("cuda")
    name = torch.cuda.get_device_name(args.device) if on_gpu else (platform.processor() or platform.machine())
    result = {"device": name, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "matmul_tflops": {"fp32": matmul_tflops(args.device, torch.float32),
                                "bf16": matmul_tflops(args.device, torch.bfloat16)}, "runs": []}
    print(f"{name}, torch {torch.__version__}; matmul {result['matmul_tflops']['fp32']:.1f} TFLOP/s fp32, "
          f"{result['matmul_tflops']['bf16']:.1f} bf16", flush=True)
    for model in args.only.split(","):
        cfg, data = configs[model]()
        for precision in args.precisions.split(","):
            for compile_ in modes:
                row = time_config(model, cfg, args.device, precision, compile_, data)
                result["runs"].append(row)
                print(f"{model:15s} {precision:5s} compile={'yes' if compile_ else 'no ':3s} "
                      f"{row['seconds_per_epoch']:.3f} s/epoch (range {row['min']:.3f}-{row['max']:.3f}; first "
                      f"{row['first_epoch_seconds']:.1f} s)  test loss {row['test_loss']:.2f}", flush=True)
                if args.out:  # after every row: a run stopped at its time limit keeps what it measured
                    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
