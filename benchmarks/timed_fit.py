"""Training within a wall-clock budget, shared by the quality benchmarks (nll.py, cifar.py).

The first ``probe`` epochs are timed: they run on the preset's own schedule (its ``train.epochs``),
stopped after each epoch by a tiny ``max_minutes``; the remaining budget sets the total number of
epochs, and the run continues to it, so the same run is ``vaekit train --preset P`` stopped after
``probe`` epochs and resumed with ``--epochs N`` (a learning-rate decay is stretched or shortened
from there; for the presets whose lr warm-up covers the probe epochs this is exactly
``vaekit train --preset P --epochs N``); if an epoch
would overrun the budget, training stops early (``fit(max_minutes=...)``). On this shared machine
the speed drifts, so with ``replan`` the total is planned again after a fifth and after three fifths
of the budget, each time from the median epoch since the last plan (the run is then ``--epochs N1``
followed by ``--resume --epochs N2`` and ``--resume --epochs N3``: the learning-rate decay is
stretched or shortened from each of those points on).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

from vaekit.checkpoint import Run, read_history
from vaekit.config import RunConfig
from vaekit.train import fit

REPLAN_AT = (0.2, 0.6)  # shares of the budget after which the total is planned again (the speed drifts)
SAFETY = 0.87  # plan for 87% of the remaining budget: on this 2-core machine epochs ran 10-20% slower
# after the first few than during them; the hard stop (max_minutes) catches the rest


def fit_within(cfg: RunConfig, run_dir: Path, minutes: float, probe: int = 2, every: int = 25,
               replan: bool = True) -> tuple[Run, int, float]:
    """Train ``cfg`` into ``run_dir`` (overwritten) for about ``minutes``; returns the run, the epochs
    planned and the training minutes spent."""
    budget = minutes * 60
    t0 = time.perf_counter()
    quiet = lambda line: None  # noqa: E731  (the probe's "stopping after epoch k" lines)
    run = fit(cfg, run_dir, overwrite=True, progress=False, log=quiet, max_minutes=1e-9)  # one epoch
    while run.epoch < probe:
        run = fit(None, run_dir, resume=True, progress=False, log=quiet, max_minutes=1e-9)
    first = time.perf_counter() - t0
    timed = read_history(run_dir)
    per_epoch = max(r["seconds"] for r in timed[1:] or timed)  # the first epoch holds warm-up and compiling
    epochs = probe + max(0, int((budget - first) * SAFETY / per_epoch))
    print(f"epochs 1-{probe} took {first:.1f} s ({per_epoch:.2f} s after the first): planning {epochs} epochs "
          f"for a {minutes:g}-minute budget", flush=True)
    since = probe
    for share in REPLAN_AT if replan else ():
        part = (budget * share - (time.perf_counter() - t0)) / 60
        if epochs <= probe + 4 or part <= 0:
            continue
        run = fit(None, run_dir, resume=True, epochs=epochs, progress=False, log=every_nth(every, epochs),
                  max_minutes=part)
        done = run.epoch
        if done >= epochs:
            break
        spent = time.perf_counter() - t0
        median = statistics.median(r["seconds"] for r in read_history(run_dir)[since:done] or read_history(run_dir))
        replanned = done + max(1, int((budget - spent) * 0.95 / median))
        print(f"after {done} epochs ({spent / 60:.1f} min, median {median:.2f} s each since epoch {since}): "
              f"planning {replanned} epochs instead of {epochs}", flush=True)
        epochs, since = replanned, done
    if epochs > run.epoch:
        remaining = (budget - (time.perf_counter() - t0)) / 60
        run = fit(None, run_dir, resume=True, epochs=epochs, progress=False, log=every_nth(every, epochs),
                  max_minutes=remaining)
    return run, epochs, (time.perf_counter() - t0) / 60


def every_nth(n: int, total: int) -> Callable[[str], None]:
    """Print the epoch lines of every n-th epoch and the last one (other lines always)."""
    def log(line: str) -> None:
        if line.startswith("epoch"):
            done = int(line.split()[1].split("/")[0])
            if done % n and done != total:
                return
        print(line, flush=True)
    return log
