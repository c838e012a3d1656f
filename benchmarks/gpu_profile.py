"""Where a GPU epoch's time goes, for the 784-400-20 example (batch 128, MNIST): the host syncs of one
epoch by call site, seconds per epoch against the batch size (a step bound by launching kernels takes
about the same time whatever its batch), the profiler's top operations by host time beside the GPU's
busy time, and what torch.compile makes of the step (graphs, breaks and their reasons).

    python benchmarks/gpu_profile.py --data-dir ../shared/data/mnist --out gpu_profile.txt
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import torch

from speed import example_config
from vaekit.checkpoint import load_run, read_history
from vaekit.train import StepModule, fit

QUIET = dict(progress=False, log=lambda s: None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=None, help="text file for the report")
    args = ap.parse_args()
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)
        if args.out:
            Path(args.out).write_text("\n".join(lines) + "\n")

    cfg = example_config(args.data_dir, 1).with_overrides({"train.device": args.device})
    tmp = Path(tempfile.mkdtemp())
    on_gpu = args.device.startswith("cuda")
    if on_gpu:
        torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(cfg, tmp / "syncs", **QUIET)
    if on_gpu:
        torch.cuda.set_sync_debug_mode("default")
    sites = Counter(f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message))
    say(f"host syncs in one epoch (469 steps, the test pass, the checkpoint): {sum(sites.values())}")
    for site, n in sites.most_common(12):
        say(f"  {n:6d}  {site}")

    for bs in (128, 512, 2048):
        run = fit(cfg.with_overrides({"train.batch_size": bs, "train.epochs": 3}), tmp / f"bs{bs}", **QUIET)
        seconds = sorted(r["train_seconds"] for r in read_history(run.path)[1:])
        steps = -(-60000 // bs)
        say(f"batch {bs:5d}: {steps:4d} steps, {seconds[0]:.3f}-{seconds[-1]:.3f} s/epoch, "
            f"{1e3 * seconds[0] / steps:.2f} ms/step")

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        fit(cfg, tmp / "profiled", **QUIET)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    cuda = torch.autograd.DeviceType.CUDA
    gpu_us = sum(e.self_device_time_total for e in events if e.device_type == cuda)  # as the table's total
    say(f"profiled epoch (with the test pass and writing the run): {wall:.2f} s wall, GPU busy {gpu_us / 1e6:.3f} s")
    say(events.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=48))

    model = load_run(tmp / "syncs", args.device).model.train()
    step = StepModule(model, cfg)
    x = torch.rand(128, *model.data_shape, device=args.device)
    import torch._dynamo as dynamo

    explained = dynamo.explain(step)(x, 1.0, None)
    say(f"torch.compile of the step: {explained.graph_count} graphs, {explained.graph_break_count} breaks")
    for reason in explained.break_reasons[:8]:
        where = reason.user_stack[-1] if reason.user_stack else None
        say(f"  break: {reason.reason[:200]}  at {where.filename}:{where.lineno}" if where else f"  break: {reason.reason[:200]}")


if __name__ == "__main__":
    main()
