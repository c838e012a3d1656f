"""Whether capturing a whole training step as a CUDA graph reaches 0.3 s per MNIST epoch: the
784-400-20 example (batch 128) trained by a plain eager loop and by replaying one captured step
(gather the batch, forward, backward, vaekit's fused Adam, the loss sums), same model, same data;
and a third way, the step compiled with ``torch.compile(mode="reduce-overhead")``, which captures
forward and backward as CUDA graphs itself (the optimiser and the sums stay eager): the cheaper lever,
if it is enough.

On an H200 vaekit's eager step costs about 3 ms of host time whatever the batch (README, "On a
GPU"); a replayed graph issues the whole step as one launch. This is an experiment measuring that
lever before the trainer takes it: it skips what the trainer adds (the NaN guard reads, checkpoints,
signals) and trains the last, smaller batch of each epoch eagerly. Prints seconds per epoch (median
of the epochs after the first, with the range) and the test negative ELBO after each way.

    python benchmarks/gpu_graph.py --data-dir ../shared/data/mnist
    python benchmarks/gpu_graph.py --device cpu --epochs 2     # the eager half, anywhere
    python benchmarks/gpu_graph.py --device cpu --epochs 2 --ways eager,reduce-overhead
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from speed import example_config
from vaekit.data import load_dataset
from vaekit.evaluate import elbo_metrics
from vaekit.models import build_model
from vaekit.optim import make_optimizer
from vaekit.train import StepModule


WAYS = ("eager", "graph", "reduce-overhead")


def setup(cfg, data, device: torch.device, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(cfg.model, data.shape, cfg.train.batch_size, training=True).to(device)
    return model, make_optimizer(model, cfg), StepModule(model, cfg)


def one_step(step: StepModule, optimizer, x: torch.Tensor, sums: torch.Tensor) -> None:
    loss, recon, kl, total = step(x, 1.0, None)
    loss.backward()
    optimizer.step()
    sums += torch.stack([total, recon, kl]).detach()


def eager_epoch(step, optimizer, data, perm: torch.Tensor, bs: int, sums: torch.Tensor) -> None:
    for index in perm.split(bs):
        optimizer.zero_grad(set_to_none=True)
        one_step(step, optimizer, data.batch(index), sums)


class GraphedStep:
    """One full-batch step captured as a CUDA graph: the batch's indices go into a fixed buffer, and
    a replay gathers, trains and adds to the sums without the host issuing anything else."""

    def __init__(self, step, optimizer, data, bs: int, sums: torch.Tensor) -> None:
        device = sums.device
        self.index = torch.arange(bs, device=device)
        weights = {k: v.clone() for k, v in step.state_dict().items()}
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up on a side stream, as torch's capture recipe asks
            for _ in range(3):
                optimizer.zero_grad(set_to_none=True)
                one_step(step, optimizer, data.batch(self.index), torch.zeros_like(sums))
        torch.cuda.current_stream(device).wait_stream(side)
        step.load_state_dict(weights)  # the warm-up's steps undone: both ways train from the same start
        for state in optimizer.state.values():
            for t in state.values():
                t.zero_()
        optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            one_step(step, optimizer, data.batch(self.index), sums)

    def __call__(self, index: torch.Tensor) -> None:
        self.index.copy_(index)
        self.graph.replay()


def graphed_epoch(graphed: GraphedStep, step, optimizer, data, perm: torch.Tensor, bs: int,
                  sums: torch.Tensor) -> None:
    for index in perm.split(bs):
        if len(index) == bs:
            graphed(index)
        else:  # the last, smaller batch: its own shapes, trained eagerly
            for p in step.parameters():
                p.grad = None
            one_step(step, optimizer, data.batch(index), sums)


def train(way: str, cfg, data, device: torch.device, epochs: int) -> dict:
    model, optimizer, step = setup(cfg, data, device)
    bs, gen = cfg.train.batch_size, torch.Generator(device=device).manual_seed(0)
    sums = torch.zeros(3, device=device)
    graphed = GraphedStep(step, optimizer, data, bs, sums) if way == "graph" else None
    if way == "reduce-overhead":
        step = torch.compile(step, mode="reduce-overhead")
    seconds = []
    for _ in range(epochs):
        perm = torch.randperm(len(data.train_x), generator=gen, device=device)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        if graphed is None:
            eager_epoch(step, optimizer, data, perm, bs, sums)
        else:
            graphed_epoch(graphed, step, optimizer, data, perm, bs, sums)
        sync()
        seconds.append(time.perf_counter() - t0)
    model.train(False)
    test = elbo_metrics(model, data, "test", 1000, 0)["loss"]
    later = seconds[1:] or seconds
    return {"way": way, "seconds_per_epoch": statistics.median(later), "min": min(later), "max": max(later),
            "first": seconds[0], "test_loss": test}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--ways", default=None, help=f"comma-separated, of {','.join(WAYS)} (default: all on CUDA, "
                    "eager elsewhere; graph needs CUDA)")
    args = ap.parse_args()
    device = torch.device(args.device)
    ways = args.ways.split(",") if args.ways else list(WAYS) if device.type == "cuda" else ["eager"]
    if not set(ways) <= set(WAYS) or ("graph" in ways and device.type != "cuda"):
        ap.error(f"--ways {args.ways}: choose from {', '.join(WAYS)} (graph on CUDA only)")
    cfg = example_config(args.data_dir, args.epochs)
    data = load_dataset(cfg.data, progress=False).to(device)
    for way in ways:
        r = train(way, cfg, data, device, args.epochs)
        print(f"{way:15s} {r['seconds_per_epoch']:.3f} s/epoch (range {r['min']:.3f}-{r['max']:.3f}; first "
              f"{r['first']:.2f} s)  test negative ELBO {r['test_loss']:.2f}", flush=True)


if __name__ == "__main__":
    main()
