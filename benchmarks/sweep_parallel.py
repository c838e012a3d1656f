"""Is a beta sweep faster as several small models at once? Three ways to train K copies of a VAE
(one per beta) for the same number of steps on the same MNIST batches, timed in one run:

  sequential   one model after another, each with all of torch's threads (what `vaekit sweep` does)
  stacked      the K models as one: weights stacked, forward and backward through torch.func.vmap,
               one Adam over the stacked tensors (Adam is elementwise, so this is K Adams), one process
  processes    K processes at once, the cores shared out (each process gets cores / K threads, at least 1)

Each way runs ``--repeats`` times, alternating, and the medians are compared (this machine's speed
drifts); the spread is printed. The model is the sweep's: `mnist-mlp` (784-400-400-20, Bernoulli).

    python benchmarks/sweep_parallel.py --data-dir ../shared/data/mnist            # K = 4, 200 steps
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time

import torch
from torch.func import functional_call, stack_module_state, vmap

from vaekit.config import DataConfig
from vaekit.data import load_dataset
from vaekit.models import build_model
from vaekit.objectives import elbo_parts
from vaekit.presets import get_preset


def _batches(data_dir: str, steps: int, batch: int) -> torch.Tensor:
    data = load_dataset(DataConfig(dataset="mnist", data_dir=data_dir, download=False), progress=False)
    idx = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(0))[: steps * batch]
    return data.features(data.train_x[idx]).view(steps, batch, 1, 28, 28)


def _model(seed: int):
    torch.manual_seed(seed)
    return build_model(get_preset("mnist-mlp").model, (1, 28, 28))


LAST: dict[str, list[float]] = {}  # each way's final training loss per model: the ways must train alike


def sequential(x: torch.Tensor, betas: list[float]) -> float:
    t0 = time.perf_counter()
    LAST["sequential"] = []
    for k, beta in enumerate(betas):
        model = _model(k)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        gen = torch.Generator().manual_seed(k)
        for xb in x:
            recon, kl = elbo_parts(model, xb, gen)
            loss = (recon + beta * kl).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        LAST["sequential"].append(round(float(loss.detach()), 2))
    return time.perf_counter() - t0


class _Elbo(torch.nn.Module):
    """The model's per-example (recon, KL) as a module's forward, for functional_call."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return elbo_parts(self.model, x)


def stacked(x: torch.Tensor, betas: list[float]) -> float:
    wrapped = [_Elbo(_model(k)) for k in range(len(betas))]
    params, buffers = stack_module_state(wrapped)
    beta = torch.tensor(betas)
    opt = torch.optim.Adam(list(params.values()), 1e-3)

    def one(p, b, xb, beta_k):
        recon, kl = functional_call(wrapped[0], (p, b), (xb,))
        return (recon + beta_k * kl).mean()

    losses = vmap(one, in_dims=(0, 0, None, 0), randomness="different")
    t0 = time.perf_counter()
    for xb in x:
        each = losses(params, buffers, xb, beta)
        opt.zero_grad(set_to_none=True)
        each.sum().backward()
        opt.step()
    LAST["stacked"] = [round(float(v), 2) for v in each.detach()]
    return time.perf_counter() - t0


def _worker(args: tuple[torch.Tensor, float, int, int]) -> None:
    x, beta, k, threads = args
    torch.set_num_threads(threads)
    sequential(x, [beta])


def processes(x: torch.Tensor, betas: list[float]) -> float:
    threads = max(1, (os.cpu_count() or 1) // len(betas))
    ctx = mp.get_context("fork")
    t0 = time.perf_counter()
    with ctx.Pool(len(betas)) as pool:
        pool.map(_worker, [(x, b, k, threads) for k, b in enumerate(betas)])
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--betas", default="0.5,1,2,4")
    p.add_argument("--steps", type=int, default=200, help="training steps per model (batch 128)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    betas = [float(b) for b in args.betas.split(",")]
    x = _batches(args.data_dir, args.steps, 128)
    ways = {"sequential": sequential, "stacked": stacked, "processes": processes}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(args.repeats):
        for name, fn in ways.items():
            times[name].append(fn(x, betas))
            print(f"repeat {r + 1}: {name:<10} {times[name][-1]:6.2f} s", flush=True)
    base = statistics.median(times["sequential"])
    result = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        result[name] = {"median_s": round(med, 2), "min_s": round(min(ts), 2), "max_s": round(max(ts), 2),
                        "speedup_vs_sequential": round(base / med, 2)}
        print(f"{name:<10} median {med:6.2f} s (range {min(ts):.2f}-{max(ts):.2f}), {base / med:.2f}x sequential")
    print(f"last-step loss per model: sequential {LAST['sequential']}, stacked {LAST['stacked']}")
    print(json.dumps({"models": len(betas), "steps": args.steps, "cores": os.cpu_count(), "last_loss": LAST,
                      "torch": torch.__version__, "results": result}))


if __name__ == "__main__":
    main()
