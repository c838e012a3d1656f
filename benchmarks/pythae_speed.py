"""Speed against a peer library: Pythae 0.1.2's trainer and vaekit's on the same model, one thread each.

Model: the PyTorch example VAE, 784-400-20, Bernoulli likelihood (sigmoid + BCE in Pythae, logits in
vaekit: the same model), KL in closed form, Adam 1e-3, batch 128, MNIST grey values in [0, 1].
Each measurement runs in its own child process with one thread (``torch.set_num_threads(1)``), and the
two libraries alternate (Pythae, vaekit, Pythae, vaekit, ...) so that a drift of this shared machine's
speed hits both alike. Per epoch: Pythae's ``train_step`` (its loop over its DataLoader, no evaluation
pass) and vaekit's ``train_seconds`` (its loop, no test pass). Also printed: the same step's matrix
products alone at one thread (``speed.matmul_floor``), the time no trainer can go below without fewer
FLOPs, so the ratio can be read against what is physically left: with torch's default BLAS, which Pythae
uses, and as vaekit runs them (through oneDNN where ``matmul.cpu_matmul`` finds it keeps float32). On a CPU with bfloat16 matrix
instructions vaekit also runs with ``--precision bf16`` in the same rotation (Pythae 0.1.2 cannot:
its mixed precision is CUDA-only), with its test loss beside fp32's.

Needs Pythae (not a vaekit dependency): ``.venv/bin/pip install pythae==0.1.2``
(``bash scripts/bench.sh pythae`` installs it and runs this).

    python benchmarks/pythae_speed.py --data-dir ../shared/data/mnist                  # 3 rounds of 3 epochs
    python benchmarks/pythae_speed.py --data-dir ../shared/data/mnist --rounds 1 --epochs 2   # quick look
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import platform
import statistics
import tempfile
import time

from speed import _in_child, _peak_mb, example_config, linear_sizes, matmul_floor, matmul_gflops


def pythae_run(data_dir: str | None, epochs: int, out: mp.Queue) -> None:
    """Pythae's VAE and BaseTrainer on the example model; seconds of each epoch's training loop."""
    import logging
    import os

    os.environ["TQDM_DISABLE"] = "1"  # Pythae's per-epoch progress bars would bury the benchmark's table
    import torch
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from torch import nn

    from vaekit.data.standard import load_idx_source

    for name in list(logging.root.manager.loggerDict):  # each Pythae module sets its own logger to INFO
        if name.startswith("pythae"):
            logging.getLogger(name).setLevel(logging.WARNING)

    torch.set_num_threads(1)
    torch.manual_seed(0)
    arrays = load_idx_source("mnist", data_dir, download=True, progress=False)
    train = BaseDataset(torch.as_tensor(arrays["train_x"].copy()).float().div_(255).view(-1, 1, 28, 28),
                        torch.from_numpy(arrays["train_y"].astype("int64")))

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.mu, self.logvar = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)

        def forward(self, x):
            h = torch.relu(self.fc1(x.reshape(x.shape[0], -1)))
            return ModelOutput(embedding=self.mu(h), log_covariance=self.logvar(h))

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            super().__init__()
            self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

        def forward(self, z):
            x = torch.sigmoid(self.fc4(torch.relu(self.fc3(z))))
            return ModelOutput(reconstruction=x.reshape(z.shape[0], 1, 28, 28))

    times: list[float] = []

    class TimedTrainer(BaseTrainer):
        def train_step(self, epoch: int):
            t = time.perf_counter()
            loss = super().train_step(epoch)
            times.append(time.perf_counter() - t)
            return loss

    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=20, reconstruction_loss="bce"),
                encoder=Encoder(), decoder=Decoder())
    with tempfile.TemporaryDirectory() as tmp:
        cfg = BaseTrainerConfig(output_dir=tmp, num_epochs=epochs, per_device_train_batch_size=128,
                                learning_rate=1e-3, optimizer_cls="Adam", steps_saving=None, no_cuda=True)
        TimedTrainer(model=model, train_dataset=train, training_config=cfg).train()
    out.put({"epoch_seconds": times, "peak_mb": _peak_mb()})


def vaekit_run(data_dir: str | None, epochs: int, out: mp.Queue, precision: str = "fp32") -> None:
    """vaekit's trainer on the same model at one thread; seconds of each epoch's training loop."""
    import torch

    from vaekit.checkpoint import read_history
    from vaekit.train import fit

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        fit(example_config(data_dir, epochs, precision), f"{tmp}/run", progress=False, log=lambda s: None)
        history = read_history(f"{tmp}/run")
    out.put({"epoch_seconds": [r["train_seconds"] for r in history], "test_loss": history[-1]["test_loss"],
             "peak_mb": _peak_mb()})


def vaekit_bf16_run(data_dir: str | None, epochs: int, out: mp.Queue) -> None:
    """The same with ``--precision bf16``, where the CPU has bfloat16 matrix instructions (Pythae
    0.1.2 has no CPU autocast: its ``amp`` is CUDA's)."""
    vaekit_run(data_dir, epochs, out, "bf16")


def floor_run(data_dir: str | None, epochs: int, out: mp.Queue) -> None:
    """The example step's matrix products alone at one thread, and a 2048^2 matmul's rate: with torch's
    defaults (Pythae's) and as vaekit runs them (through oneDNN where ``matmul.cpu_matmul`` uses it)."""
    import torch

    from vaekit.matmul import cpu_matmul

    torch.set_num_threads(1)
    sizes = linear_sizes(example_config)
    res = {"floor_seconds": matmul_floor(sizes), "matmul_gflops": matmul_gflops()}
    with cpu_matmul() as routed:  # vaekit's products differ from Pythae's only where routed to oneDNN
        res.update(floor_seconds_vaekit=matmul_floor(sizes) if routed else res["floor_seconds"],
                   matmul_gflops_vaekit=matmul_gflops() if routed else res["matmul_gflops"])
    out.put(res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None, help="folder with the MNIST files (default: vaekit's data folder)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per measurement (default 3)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating Pythae/vaekit rounds (default 3)")
    args = ap.parse_args()
    if importlib.util.find_spec("pythae") is None:
        raise SystemExit("pythae_speed.py: Pythae is not installed; run .venv/bin/pip install pythae==0.1.2 "
                         "(or bash scripts/bench.sh pythae)")
    import torch

    from vaekit.precision import native

    contenders = [("pythae", pythae_run), ("vaekit", vaekit_run)]
    if native("bf16"):
        contenders.append(("vaekit bf16", vaekit_bf16_run))
    epochs: dict[str, list[float]] = {name: [] for name, _ in contenders}
    peaks: dict[str, float] = {}
    losses: dict[str, list[float]] = {}
    floors = []
    for r in range(args.rounds):
        for name, fn in contenders:
            res = _in_child(fn, args.data_dir, args.epochs)
            steady = res["epoch_seconds"][1:] or res["epoch_seconds"]  # the first epoch carries one-time costs
            epochs[name] += steady
            peaks[name] = max(peaks.get(name, 0.0), res["peak_mb"])
            if "test_loss" in res:
                losses.setdefault(name, []).append(res["test_loss"])
            print(f"round {r + 1}: {name:>6} {', '.join(f'{t:.2f}' for t in res['epoch_seconds'])} s per epoch",
                  flush=True)
        floors.append(_in_child(floor_run, args.data_dir, 0))
    med = {k: statistics.median(v) for k, v in epochs.items()}
    floor = statistics.median(f["floor_seconds"] for f in floors)
    floor_vaekit = statistics.median(f["floor_seconds_vaekit"] for f in floors)
    summary = {
        "pythae_epoch_seconds": med["pythae"], "vaekit_epoch_seconds": med["vaekit"],
        "speedup_pythae_over_vaekit": med["pythae"] / med["vaekit"],
        "pythae_range": [min(epochs["pythae"]), max(epochs["pythae"])],
        "vaekit_range": [min(epochs["vaekit"]), max(epochs["vaekit"])],
        "matmul_floor_seconds": floor, "matmul_floor_seconds_vaekit": floor_vaekit,
        "vaekit_over_floor": med["vaekit"] / floor_vaekit, "pythae_over_floor": med["pythae"] / floor,
        "matmul_gflops_1_thread": [f["matmul_gflops"] for f in floors],
        "matmul_gflops_1_thread_vaekit": [f["matmul_gflops_vaekit"] for f in floors],
        "peak_mb": peaks, "epochs": args.epochs, "rounds": args.rounds, "threads": 1,
        "torch": torch.__version__, "pythae": _version("pythae"), "machine": platform.machine(),
    }
    print(f"one thread, median of {len(epochs['vaekit'])} epochs each: Pythae {med['pythae']:.2f} s "
          f"({min(epochs['pythae']):.2f}-{max(epochs['pythae']):.2f}), vaekit {med['vaekit']:.2f} s "
          f"({min(epochs['vaekit']):.2f}-{max(epochs['vaekit']):.2f}): vaekit {summary['speedup_pythae_over_vaekit']:.2f}x "
          f"faster; peak memory {peaks['pythae']:.0f} vs {peaks['vaekit']:.0f} MB")
    print(f"the step's matrix products alone at one thread: {floor:.2f} s per epoch with torch's defaults (Pythae "
          f"{summary['pythae_over_floor']:.2f}x that), {floor_vaekit:.2f} s as vaekit runs them (vaekit "
          f"{summary['vaekit_over_floor']:.2f}x that); 2x Pythae would be {med['pythae'] / 2:.2f} s")
    if "vaekit bf16" in med:
        b = med["vaekit bf16"]
        summary.update({"vaekit_bf16_epoch_seconds": b, "speedup_pythae_over_vaekit_bf16": med["pythae"] / b,
                        "vaekit_bf16_range": [min(epochs["vaekit bf16"]), max(epochs["vaekit bf16"])],
                        "test_loss": {k: statistics.median(v) for k, v in losses.items()}})
        print(f"vaekit --precision bf16 (one thread): {b:.2f} s ({min(epochs['vaekit bf16']):.2f}-"
              f"{max(epochs['vaekit bf16']):.2f}), {summary['speedup_pythae_over_vaekit_bf16']:.2f}x faster than Pythae "
              f"in fp32; test loss after {args.epochs} epochs {summary['test_loss']['vaekit bf16']:.2f} against "
              f"{summary['test_loss']['vaekit']:.2f} in fp32")
    print(json.dumps(summary))


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
