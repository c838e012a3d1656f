"""What can go wrong during training and how the loop meets it: signals (stop at a clean point),
NaN/inf in the loss or gradients (stop before a checkpoint can hold them), and the random-number
state a checkpoint needs to resume exactly. Used by ``train.fit``; nothing here trains.
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import STANDARDIZABLE, RunConfig
from .errors import RunFolderError, TrainingInterrupted, VaekitError, brief
from .models import LatentModel
from .signals import stop_signals_to


def rng_state(gen: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "data": gen.get_state()}
    if torch.cuda.is_available():
        state.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return state


def set_rng_state(state: dict[str, torch.Tensor], gen: torch.Generator, path: Path) -> None:
    try:
        torch.set_rng_state(state["torch"])
        gen.set_state(state["data"])
        cuda = [state[k] for k in sorted(state) if k.startswith("cuda.")]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
    except (RuntimeError, ValueError, TypeError) as e:
        raise RunFolderError(f"{path}: its random-number state does not fit this device ({brief(e)}); resume "
                                  "with the --device the run was trained on") from None


class StopOnSignal:
    """While active, SIGINT/SIGTERM/SIGHUP (a closed terminal or SSH session) only set ``requested``
    so the loop can stop at a clean point; a second signal interrupts at once. Handlers are installed
    only in the main thread, and never over a signal the process was told to ignore (``nohup``).

    ``repeat_grace``: a second signal within that many seconds of the first is the same request
    (under torchrun, Ctrl-C reaches each process from the terminal and again from the launcher)."""

    def __init__(self, repeat_grace: float = 0.0) -> None:
        self.requested: str | None = None
        self.repeat_grace = repeat_grace
        self._first = 0.0
        self._routed: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            if time.monotonic() - self._first < self.repeat_grace:
                return
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        self._first = time.monotonic()

    def __enter__(self) -> StopOnSignal:
        self._routed = stop_signals_to(self._handle)  # made here: a context manager of a generator is entered once
        self._routed.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._routed.__exit__(*exc)


def interrupted(signal_name: str, run_dir: Path, where: str) -> TrainingInterrupted:
    return TrainingInterrupted(
        f"{signal_name}: stopped at {where} and saved a checkpoint in {run_dir}; "
        f"continue with: vaekit train --resume {run_dir}", signal_name)


TERMS = ("reconstruction term", "KL term", "gradient")


class FiniteGuard:
    """Stops training at the step whose loss terms (or clipped gradient norm) became NaN/inf,
    before that step's update can reach a checkpoint.

    On a CPU the check is a free read every step. On a GPU a host read would stall the queue
    every step, so each step's terms are copied into a row of a buffer on the device (one
    operation: a GPU step's cost is the number of operations the host issues) and the rows are
    read every ``every`` steps and before each checkpoint: the weights in memory may be spoilt
    by then, but no spoilt weights are ever written and the message still names the exact step.
    """

    def __init__(self, device: torch.device, every: int = 50) -> None:
        self.every = 1 if device.type == "cpu" else every
        self.epoch = 0
        self._rows: Tensor | None = None  # (every, terms): the steps since the last read
        self._n = 0  # rows written since the last read
        self._step = 0  # the step of row 0

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self._n = epoch, 0

    def update(self, parts: Tensor, step: int) -> None:
        """``parts``: this step's summed terms, e.g. stack([recon.sum(), kl.sum()])."""
        if self.every == 1:
            if not bool(parts.isfinite().all()):
                self._raise(step, int((~parts.isfinite()).nonzero()[0]))
            return
        if self._rows is None or self._rows.shape[1:] != parts.shape or self._rows.device != parts.device:
            self.check()
            self._rows = torch.empty((self.every, *parts.shape), dtype=torch.float32, device=parts.device)
        if self._n == len(self._rows):
            self.check()
        if self._n == 0:
            self._step = step
        self._rows[self._n].copy_(parts)
        self._n += 1
        if (step + 1) % self.every == 0:
            self.check()

    def check(self) -> None:
        """Read the rows written since the last read (one host read) and raise at the first bad one."""
        if not self._n:
            return
        rows, self._n = self._rows[: self._n].tolist(), 0  # type: ignore[index]
        for i, row in enumerate(rows):
            for term, value in enumerate(row):
                if not math.isfinite(value):
                    self._raise(self._step + i, term)

    def _raise(self, step: int, term: int) -> None:
        raise NonFinite(TERMS[term], self.epoch, step)


class NonFinite(Exception):
    """Internal: which term went NaN/inf where; ``fit`` turns it into the user's message."""

    def __init__(self, term: str, epoch: int, step: int) -> None:
        super().__init__(term)
        self.term, self.epoch, self.step = term, epoch, step


def non_finite_error(e: NonFinite, run_dir: Path, cfg: RunConfig) -> VaekitError:
    done = e.epoch - 1
    kept = (f"the last good checkpoint (epoch {done}) is kept in {run_dir}" if done else
            "no checkpoint was written yet")
    where = f"at epoch {e.epoch}, step {e.step + 1}" if e.step >= 0 else f"during epoch {e.epoch}"
    m = cfg.model
    scale = (", or features far from unit scale (--standardize)"
             if m.likelihood in STANDARDIZABLE and not m.standardize else "")
    return VaekitError(
        f"training stopped: the {e.term} became NaN/inf {where}; {kept}. "
        f"Usual causes: a learning rate too high (now {cfg.train.lr:g}; try {min(cfg.train.lr / 10, 1e-3):g}), data "
        f"outside the range the '{m.likelihood}' likelihood expects (Bernoulli needs [0, 1]){scale}"
    )


def check_weights(model: LatentModel, epoch: int) -> None:
    """Before a checkpoint: a non-finite gradient from a finite loss shows up here at the latest."""
    if not all(bool(p.isfinite().all()) for p in model.parameters()):
        raise NonFinite("weights", epoch, -1)
