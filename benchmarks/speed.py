"""Speed benchmark: vaekit's trainer against a conventional PyTorch pipeline, same model and settings.

Model: the PyTorch example VAE, 784-400-20 (one hidden layer each way), Bernoulli likelihood
(BCE) + KL summed, Adam 1e-3, batch 128, MNIST. Two pipelines, each in its own child process
(so each one's peak memory is its own), one after the other:

(a) conventional: a map-style ``Dataset`` that makes a Pillow image per item and converts it
    to a float tensor (what torchvision's MNIST + ToTensor do), a shuffling ``DataLoader``;
(b) vaekit: ``vaekit.train.fit`` on the same model (data held as one uint8 tensor, batches by
    index), timing the training loop only (``train_seconds`` in history.jsonl).

Prints seconds per epoch (median, with the range), test loss after the same epochs, peak memory,
the ratio (a)/(b) and vaekit's achieved GFLOP/s against a large fp32 matmul timed before, between
and after the runs; when the machine's speed drifts by more than 30 % (matmul probes or epochs),
it says the run is noisy and the ratio unreliable, instead of printing a bare number;
then the same for vaekit's ``mnist-mlp`` preset (784-400-400-20, beta warm-up), for reference.
It also times the example step's matrix products alone (same shapes and threads; ``matmul_floor``):
the part of an epoch no trainer can remove without doing fewer FLOPs, beside vaekit's whole epoch.
Where vaekit routes float32 matrix products to oneDNN (``matmul.cpu_matmul``: on CPUs where oneDNN keeps
them full float32 and torch's default BLAS, MKL, is slower, as on AMD's AVX-512 cores), it also trains the
example model with torch's default BLAS, and gives the matmul rate and the floor both ways.
On a CPU with bfloat16 matrix instructions (AVX512-BF16, AMX) it also trains the example model with
``--precision bf16`` and prints its epoch time, test loss and rate against the same fp32 matmul.
With ``--nproc N`` the example model is also trained data-parallel by N processes (torchrun, gloo on
the CPU, one thread each, the same global batch of 128): on a machine with few cores this measures the
cost of the processes and the all-reduce, not a speed-up.

    python benchmarks/speed.py --data-dir ../shared/data/mnist            # 10 epochs each
    python benchmarks/speed.py --data-dir ../shared/data/mnist --quick    # 2 epochs, under a minute
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import queue
import resource
import statistics
import tempfile
import time

NOISY = 1.3  # a speed spread above this (between matmul probes, or between epochs) marks the run as noisy
FLOP_PER_EXAMPLE = 3 * 2 * (784 * 400 + 400 * 20 * 2 + 20 * 400 + 400 * 784)  # fwd + bwd (2x fwd), 2 FLOP/MAC


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def conventional(data_dir: str, epochs: int, out: mp.Queue) -> None:
    """The usual pipeline: PIL image per item -> float tensor, DataLoader, sigmoid + BCE."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    from vaekit.data.standard import load_idx_source

    arrays = load_idx_source("mnist", data_dir, download=True, progress=False)

    class PilMnist(Dataset):
        def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
            self.images, self.labels = images, labels

        def __len__(self) -> int:
            return len(self.images)

        def __getitem__(self, i: int):
            img = Image.fromarray(self.images[i], mode="L")
            x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).view(784)
            return x, int(self.labels[i])

    class ExampleVAE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
            self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

        def forward(self, x):
            h = F.relu(self.fc1(x))
            mu, logvar = self.fc21(h), self.fc22(h)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar

    def loss_fn(recon, x, mu, logvar):
        bce = F.binary_cross_entropy(recon, x, reduction="sum")
        return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())

    torch.manual_seed(0)
    train = DataLoader(PilMnist(arrays["train_x"], arrays["train_y"]), batch_size=128, shuffle=True)
    test = DataLoader(PilMnist(arrays["test_x"], arrays["test_y"]), batch_size=1000)
    model = ExampleVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for _ in range(epochs):
        model.train()
        t = time.perf_counter()
        for x, _ in train:
            opt.zero_grad()
            loss = loss_fn(*_unpack(model(x), x))
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t)
    model.eval()
    total = 0.0
    with torch.no_grad():
        for x, _ in test:
            total += float(loss_fn(*_unpack(model(x), x)))
    out.put({"epoch_seconds": times, "test_loss": total / len(test.dataset), "peak_mb": _peak_mb()})


def _unpack(outputs, x):
    recon, mu, logvar = outputs
    return recon, x, mu, logvar


def example_config(data_dir: str | None, epochs: int, precision: str = "fp32"):
    """The conventional pipeline's model and settings as a vaekit RunConfig."""
    from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    return RunConfig(seed=0, data=DataConfig(dataset="mnist", data_dir=data_dir),
                     model=ModelConfig(hidden=[400], latent_dim=20, likelihood="bernoulli"),
                     train=TrainConfig(epochs=epochs, batch_size=128, lr=1e-3, precision=precision))


def example_config_bf16(data_dir: str | None, epochs: int):
    """The same run with ``--precision bf16`` (the networks under bfloat16 autocast)."""
    return example_config(data_dir, epochs, "bf16")


def preset_config(data_dir: str | None, epochs: int, preset: str = "mnist-mlp"):
    """A named preset (the issue asks for mnist-mlp's epoch time too)."""
    from vaekit.presets import get_preset

    overrides = {"train.epochs": epochs, **({"data.data_dir": data_dir} if data_dir else {})}
    return get_preset(preset).with_overrides(overrides)


def vaekit_run(make_config, data_dir: str | None, epochs: int, out: mp.Queue) -> None:
    """vaekit's own trainer; the test loss is the last epoch's test pass (negative ELBO, beta = 1)."""
    from vaekit.checkpoint import read_history
    from vaekit.train import fit

    with tempfile.TemporaryDirectory() as tmp:
        fit(make_config(data_dir, epochs), f"{tmp}/run", progress=False, log=lambda s: None)
        history = read_history(f"{tmp}/run")
    out.put({"epoch_seconds": [r["train_seconds"] for r in history], "test_loss": history[-1]["test_loss"],
             "peak_mb": _peak_mb()})


def vaekit_default_blas_run(make_config, data_dir: str | None, epochs: int, out: mp.Queue) -> None:
    """vaekit's trainer with float32 matrix products left to torch's default BLAS (a choice the user
    makes with ``torch.backends.mkldnn.matmul.fp32_precision = "ieee"``, which vaekit leaves alone)."""
    import torch

    torch.backends.mkldnn.matmul.fp32_precision = "ieee"
    vaekit_run(make_config, data_dir, epochs, out)


def ddp_run(data_dir: str | None, epochs: int, nproc: int) -> dict:
    """The example model trained by ``nproc`` processes under torchrun; epoch times from history.jsonl."""
    import os
    import subprocess
    import sys

    from vaekit.checkpoint import read_history

    with tempfile.TemporaryDirectory() as tmp:
        with open(f"{tmp}/config.json", "w") as f:
            f.write(example_config(data_dir, epochs).to_json())
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m",
               "vaekit", "train", "--config", f"{tmp}/config.json", "--out", f"{tmp}/run", "--no-progress",
               "--device", "cpu"]
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if r.returncode:
            raise SystemExit(f"the {nproc}-process run failed: {r.stderr[-1000:]}")
        history = read_history(f"{tmp}/run")
    return {"epoch_seconds": [h["train_seconds"] for h in history], "test_loss": history[-1]["test_loss"],
            "peak_mb": float("nan")}


def matmul_gflops(n: int = 2048, repeats: int = 10, device: str = "cpu", dtype=None) -> float:
    """The rate of an n x n matrix product (after one warm-up), waiting for a GPU to finish."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    a @ b
    sync()
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * n**3 * repeats / (time.perf_counter() - t) / 1e9


def linear_sizes(make_config) -> list[tuple[int, int]]:
    """(inputs, outputs) of each linear layer of the config's model, in the order they run."""
    from torch import nn

    from vaekit.models import build_model

    model = build_model(make_config(None, 1).model, (1, 28, 28))
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def matmul_floor(sizes: list[tuple[int, int]], n_train: int = 60000, batch: int = 128, repeats: int = 3,
                 dtype=None) -> float:
    """Seconds per epoch of a training step's matrix products alone, same shapes and threads: each
    layer's forward (with its bias), weight gradient and input gradient (none for the first layer,
    whose input is the data). What no trainer can go below on this machine without fewer FLOPs
    (``dtype``: in that precision, as autocast runs them)."""
    import torch

    rows = [batch] * (n_train // batch) + ([n_train % batch] if n_train % batch else [])

    def randn(*shape):
        return torch.randn(*shape, dtype=dtype)

    tensors = {b: [(randn(b, i), randn(o, i), randn(o), randn(b, o)) for i, o in sizes] for b in set(rows)}
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for b in rows:
            for j, (x, w, bias, g) in enumerate(tensors[b]):
                torch.addmm(bias, x, w.t())
                g.t() @ x
                if j:
                    g @ w
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _in_child(fn, *args) -> dict:
    """``fn(*args, queue)`` in a fresh process; a child that dies without an answer ends the benchmark."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=fn, args=(*args, q))
    p.start()
    while True:
        try:
            result = q.get(timeout=1.0)
            break
        except queue.Empty:
            if not p.is_alive() and q.empty():
                raise SystemExit(f"{fn.__name__} failed (exit code {p.exitcode}); its error is above")
    p.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None,
                    help="folder with the MNIST files (default: vaekit's data folder, downloading if needed)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="2 epochs each, the preset 1 (under a minute)")
    ap.add_argument("--nproc", type=int, default=0, metavar="N",
                    help="also train the example model with N data-parallel processes (torchrun)")
    args = ap.parse_args()
    epochs = 2 if args.quick else args.epochs

    import torch

    results = {}
    # --quick times the preset for one epoch only, which keeps the whole run under a minute here
    runs = [("conventional", conventional, (), epochs), ("vaekit", vaekit_run, (example_config,), epochs),
            ("mnist-mlp", vaekit_run, (preset_config,), 1 if args.quick else epochs)]
    from vaekit.matmul import cpu_matmul, routes_to_onednn
    from vaekit.precision import native

    bf16, onednn = native("bf16"), routes_to_onednn()
    if onednn:
        runs.insert(2, ("default BLAS", vaekit_default_blas_run, (example_config,), epochs))
    if bf16:
        runs.insert(2, ("vaekit bf16", vaekit_run, (example_config_bf16,), epochs))
    else:
        print("this CPU has no bfloat16 matrix instructions: --precision bf16 is not timed", flush=True)
    if args.nproc:
        runs.append((f"vaekit x{args.nproc}", None, (), epochs))
    probes = [matmul_gflops()]  # the machine's speed before, between and after the runs
    for name, fn, first_args, n in runs:
        r = ddp_run(args.data_dir, n, args.nproc) if fn is None else _in_child(fn, *first_args, args.data_dir, n)
        times = r["epoch_seconds"]
        r["median_epoch_seconds"] = statistics.median(times)
        steady = times[1:] if len(times) >= 3 else times  # the first epoch carries one-time costs
        r["epoch_spread"] = max(steady) / min(steady)
        results[name] = r
        print(f"{name:>13}: {r['median_epoch_seconds']:.2f} s/epoch (median of {n}, epochs {min(times):.2f}-"
              f"{max(times):.2f} s), test loss {r['test_loss']:.2f} after {n} epochs, peak memory "
              f"{r['peak_mb']:.0f} MB", flush=True)
        probes.append(matmul_gflops())
    floor = matmul_floor(linear_sizes(example_config))
    probes.append(matmul_gflops())
    floor_vaekit, onednn_gflops = floor, probes[-1]  # the products as vaekit runs them: the same unless routed
    if onednn:
        with cpu_matmul():
            floor_vaekit, onednn_gflops = matmul_floor(linear_sizes(example_config)), matmul_gflops()
    peak = statistics.median(probes)
    machine_spread = max(probes) / min(probes)
    epoch_spread = max(results[k]["epoch_spread"] for k in ("conventional", "vaekit"))
    noisy = machine_spread > NOISY or epoch_spread > NOISY
    v = results["vaekit"]
    achieved = FLOP_PER_EXAMPLE * 60000 / v["median_epoch_seconds"] / 1e9
    summary = {
        "epochs": epochs,
        "speedup_conventional_over_vaekit": results["conventional"]["median_epoch_seconds"] / v["median_epoch_seconds"],
        "vaekit_gflops": achieved, "matmul_gflops": peak, "gflop_per_epoch": FLOP_PER_EXAMPLE * 60000 / 1e9,
        "matmul_floor_seconds": floor, "matmul_floor_seconds_vaekit": floor_vaekit,
        "vaekit_over_floor": v["median_epoch_seconds"] / floor_vaekit, "onednn_fp32_matmul": onednn,
        "matmul_gflops_vaekit": onednn_gflops,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
        "matmul_gflops_probes": probes, "machine_spread": machine_spread, "epoch_spread": epoch_spread,
        "noisy": noisy, "results": results,
    }
    print(f"   speed-up (a)/(b): {summary['speedup_conventional_over_vaekit']:.2f}x; vaekit {achieved:.0f} GFLOP/s "
          f"= {achieved / peak:.0%} of {peak:.0f} GFLOP/s (2048^2 fp32 matmul with torch's defaults, median of "
          f"{len(probes)}: {min(probes):.0f}-{max(probes):.0f}), {summary['gflop_per_epoch']:.0f} GFLOP per epoch")
    if onednn:
        d = results["default BLAS"]
        summary["speedup_onednn_over_default_blas"] = d["median_epoch_seconds"] / v["median_epoch_seconds"]
        print(f"   fp32 products through oneDNN: {onednn_gflops:.0f} GFLOP/s on the 2048^2 matmul; vaekit's epoch "
              f"{summary['speedup_onednn_over_default_blas']:.2f}x as fast as with torch's default BLAS "
              f"({d['median_epoch_seconds']:.2f} s = {FLOP_PER_EXAMPLE * 60000 / d['median_epoch_seconds'] / 1e9 / peak:.0%} "
              f"of its rate); vaekit reaches {achieved / onednn_gflops:.0%} of oneDNN's 2048^2 rate")
    print(f"   the step's matrix products alone (same shapes and threads, as vaekit runs them): {floor_vaekit:.2f} s per "
          f"epoch ({floor:.2f} s with torch's defaults); vaekit's epoch is {summary['vaekit_over_floor']:.2f}x that "
          "(the rest: Adam, element-wise work, autograd and dispatch)")
    if bf16:
        b = results["vaekit bf16"]
        floor_bf16 = matmul_floor(linear_sizes(example_config), dtype=torch.bfloat16)
        summary.update({
            "bf16_epoch_seconds": b["median_epoch_seconds"],
            "speedup_bf16_over_fp32": v["median_epoch_seconds"] / b["median_epoch_seconds"],
            "speedup_conventional_over_vaekit_bf16":
                results["conventional"]["median_epoch_seconds"] / b["median_epoch_seconds"],
            "bf16_gflops": FLOP_PER_EXAMPLE * 60000 / b["median_epoch_seconds"] / 1e9,
            "bf16_test_loss_minus_fp32": b["test_loss"] - v["test_loss"],
            "matmul_floor_seconds_bf16": floor_bf16, "bf16_matmul_gflops": matmul_gflops(dtype=torch.bfloat16),
        })
        print(f"   --precision bf16: {b['median_epoch_seconds']:.2f} s/epoch, {summary['speedup_bf16_over_fp32']:.2f}x "
              f"fp32 vaekit and {summary['speedup_conventional_over_vaekit_bf16']:.2f}x the conventional pipeline; "
              f"{summary['bf16_gflops']:.0f} GFLOP/s = {summary['bf16_gflops'] / peak:.0%} of the fp32 matmul rate "
              f"(bf16 matmul {summary['bf16_matmul_gflops']:.0f} GFLOP/s); test loss {b['test_loss']:.2f} "
              f"({summary['bf16_test_loss_minus_fp32']:+.2f} against fp32); the matrix products alone in bf16: "
              f"{floor_bf16:.2f} s per epoch")
    if args.nproc:
        d = results[f"vaekit x{args.nproc}"]
        summary[f"vaekit_{args.nproc}_processes_over_1"] = d["median_epoch_seconds"] / v["median_epoch_seconds"]
        print(f"   {args.nproc} processes (1 thread each) take {summary[f'vaekit_{args.nproc}_processes_over_1']:.2f}x "
              f"the time per epoch of 1 process ({torch.get_num_threads()} threads) on this {mp.cpu_count()}-core "
              "machine: with cores this few it measures the processes' and the all-reduce's cost, not a speed-up")
    if noisy:
        print(f"   NOISY MACHINE: its speed varied {machine_spread:.2f}x between runs and epochs varied up to "
              f"{epoch_spread:.2f}x within a run (limit {NOISY}x); the ratio above is not reliable: run again on "
              "a quieter machine", flush=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
