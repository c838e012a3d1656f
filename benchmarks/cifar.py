"""Colour benchmark: bits per dimension of CIFAR-10 test images, against lossless PNG and WebP.

One command, three measurements on the same 10,000 test images:
  1. the classical lossless codecs: each image written as its own PNG (zlib level 9) and as a
     lossless WebP (Pillow, method 6); bits/dim = 8 x total file bytes / (10,000 x 3072). These are
     the sizes a user would get, headers included;
  2. the ``cifar10-resnet`` preset trained on the 50,000 training images within ``--minutes``
     (epochs fitted to the budget as in nll.py, see timed_fit.py);
  3. its test NLL: the IWAE estimate with the largest K that fits ``--eval-minutes`` (timed on a
     first slice, capped by ``--k-max``), in bits per dimension of the 256-level data (no offset:
     the discretised logistic is a distribution over the 256 levels itself).

Data: ``--data`` is the folder holding ``train/`` and ``test/`` class folders of images (or a
.tar of it, unpacked into a temporary folder), by default ``../shared/data/cifar10-jpeg``, whose
pixels come from JPEG files (not the official ones: figures are comparable among themselves, not
with published CIFAR-10 numbers). ``--dataset cifar10`` uses the official binary files instead.

    python benchmarks/cifar.py                                   # 60-minute budget
    python benchmarks/cifar.py --minutes 3 --n 500 --eval-minutes 1   # smoke run
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import platform
import tarfile
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from timed_fit import fit_within
from vaekit.data import Dataset, load_dataset
from vaekit.evaluate import elbo_metrics, iwae_nll
from vaekit.files import atomic_write, strict_json
from vaekit.presets import get_preset

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"


def codec_bits_per_dim(images: np.ndarray) -> dict[str, float]:
    """Lossless PNG (zlib 9) and WebP file sizes of uint8 images (N, 3, H, W), in bits per dimension."""
    from PIL import Image

    sizes = {"png": 0, "webp": 0}
    for arr in images:
        im = Image.fromarray(arr.transpose(1, 2, 0))
        for fmt, kw in (("png", dict(format="PNG", compress_level=9, optimize=True)),
                        ("webp", dict(format="WEBP", lossless=True, quality=100, method=6))):
            buf = io.BytesIO()
            im.save(buf, **kw)
            sizes[fmt] += buf.tell()
    dims = images.size
    return {f"{k}_bits_per_dim": 8 * v / dims for k, v in sizes.items()}


def _folder(data: Path, scratch: Path) -> Path:
    """The image folder, unpacking a .tar (or the one .tar inside ``data``) into ``scratch``."""
    tars = [data] if data.is_file() else sorted(data.glob("*.tar"))
    if not tars or (data.is_dir() and (data / "train").is_dir()):
        return data
    with tarfile.open(tars[0]) as tar:
        tar.extractall(scratch, filter="data")
    return scratch


def _iwae_k_for(model, data: Dataset, minutes: float, k_max: int, batch: int) -> int:
    """The largest K (at most k_max) whose IWAE pass over the test set fits in ``minutes``: timed with
    K = 16 on the first 200 images."""
    probe = replace(data, test_x=data.test_x[:200], test_y=None)
    t0 = time.perf_counter()
    iwae_nll(model, probe, 16, batch_size=batch, progress=False)
    per_sample = (time.perf_counter() - t0) / (16 * len(probe.test_x))
    return int(max(1, min(k_max, minutes * 60 / (per_sample * len(data.test_x)))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="folder with train/ and test/ image folders, or a .tar of it (default: the shared JPEG copy)")
    p.add_argument("--dataset", choices=["folder", "cifar10"], default="folder",
                   help="folder: the images under --data; cifar10: the official binary files (in --data-dir)")
    p.add_argument("--data-dir", default=None, help="with --dataset cifar10: where the official files are")
    p.add_argument("--minutes", type=float, default=60.0, help="training budget in minutes (default 60)")
    p.add_argument("--eval-minutes", type=float, default=15.0, help="budget for the IWAE evaluation (default 15)")
    p.add_argument("--k-max", type=int, default=5000, help="most importance samples per image (default 5000)")
    p.add_argument("--n", type=int, default=None, help="first N test images only (default: all 10,000)")
    p.add_argument("--preset", default="cifar10-resnet")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change the preset (repeatable)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/bench-cifar", help="run folder (overwritten)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="vaekit-cifar-") as scratch:
        overrides = dict(item.split("=", 1) for item in args.set)
        overrides["train.device"] = args.device
        if args.dataset == "folder":
            overrides.update({"data.dataset": f"folder:{_folder(args.data, Path(scratch))}", "data.channels": 3})
        elif args.data_dir:
            overrides["data.data_dir"] = args.data_dir
        cfg = get_preset(args.preset).with_overrides(overrides)
        data = load_dataset(cfg.data, progress=False)
        if args.n:
            data = replace(data, test_x=data.test_x[: args.n], test_y=None if data.test_y is None else data.test_y[: args.n])
        print(f"data: {len(data.train_x):,} training and {len(data.test_x):,} test images of {data.shape}", flush=True)

        t0 = time.perf_counter()
        codecs = codec_bits_per_dim(data.test_x.numpy())
        print(f"lossless codecs on the test images: PNG {codecs['png_bits_per_dim']:.3f}, WebP "
              f"{codecs['webp_bits_per_dim']:.3f} bits/dim ({time.perf_counter() - t0:.0f} s)", flush=True)

        run_dir = Path(args.out)
        run, epochs, train_minutes = fit_within(cfg, run_dir, args.minutes, probe=1, every=1)
        model = run.model
        model.train(False)
        device = next(model.parameters()).device
        test = data.to(device)
        t1 = time.perf_counter()
        batch = max(1, min(64, cfg.train.eval_batch_size))
        elbo = elbo_metrics(model, test, "test", cfg.train.eval_batch_size, cfg.seed)
        k = _iwae_k_for(model, test, args.eval_minutes, args.k_max, batch)
        nll = float(iwae_nll(model, test, k, batch_size=batch, seed=cfg.seed, progress=False).mean())
        eval_minutes = (time.perf_counter() - t1) / 60
    dims = math.prod(data.shape) * math.log(2)
    result = {
        "bits_per_dim": round(nll / dims, 4), "elbo_bits_per_dim": round(elbo["loss"] / dims, 4), "iwae_k": k,
        **{key: round(v, 4) for key, v in codecs.items()}, "n_test": len(data.test_x), "epochs": run.epoch,
        "epochs_planned": epochs, "train_minutes": round(train_minutes, 1), "budget_minutes": args.minutes,
        "eval_minutes": round(eval_minutes, 1), "kl_nats": round(elbo["kl"], 1), "preset": args.preset,
        "changes": args.set, "data": cfg.data.dataset if args.dataset == "cifar10" else str(args.data),
        "run": str(run_dir), "device": _device_name(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "date": datetime.date.today().isoformat(),
    }
    atomic_write(run_dir / "bench_cifar.json", strict_json(result, indent=2) + "\n")
    verdict = "below" if result["bits_per_dim"] < result["webp_bits_per_dim"] else "not below"
    print(f"test bits/dim (IWAE, K={k}, {len(data.test_x)} images): {result['bits_per_dim']:.3f} (ELBO "
          f"{result['elbo_bits_per_dim']:.3f}); PNG {result['png_bits_per_dim']:.3f}, lossless WebP "
          f"{result['webp_bits_per_dim']:.3f}: {verdict} WebP; {run.epoch} of {epochs} planned epochs in "
          f"{result['train_minutes']} min, evaluation {result['eval_minutes']} min")
    print(json.dumps(result))


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU"


if __name__ == "__main__":
    main()
