"""What can go wrong during training and how the loop meets it: signals (stop at a clean point),
NaN/inf in the loss or gradients (stop before a checkpoint can hold them), and the random-number
state a checkpoint needs to resume exactly. Used by ``train.fit``; nothing here trains.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import STANDARDIZABLE, RunConfig
from .errors import RunFolderError, TrainingInterrupted, VaekitError, brief
from .models import LatentModel


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

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, repeat_grace: float = 0.0) -> None:
        self.requested: str | None = None
        self.repeat_grace = repeat_grace
        self._first = 0.0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            if time.monotonic() - self._first < self.repeat_grace:
                return
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        self._first = time.monotonic()

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def interrupted(signal_name: str, run_dir: Path, where: str) -> TrainingInterrupted:
    return TrainingInterrupted(
        f"{signal_name}: stopped at {where} and saved a checkpoint in {run_dir}; "
        f"continue with: vaekit train --resume {run_dir}", signal_name)


TERMS = ("reconstruction term", "KL term", "gradient")


class FiniteGuard:
    """Stops training at the step whose loss terms (or clipped gradient norm) became NaN/inf,
    before that step's update can reach a checkpoint.

    On a CPU the check is a free read every step. On a GPU a host read would stall the queue
    every step, so the first bad step is recorded on the device and read every ``every``
    steps and before each checkpoint: the weights in memory may be spoilt by then, but no
    spoilt weights are ever written and the message still names the exact step.
    """

    def __init__(self, device: torch.device, every: int = 50) -> None:
        self.every = 1 if device.type == "cpu" else every
        self.epoch, self.offset = 0, 0
        self._first = torch.full((2,), -1, dtype=torch.long, device=device)  # (step, term)
        self._n = torch.zeros((), dtype=torch.long, device=device)  # steps seen, counted on the device

    def start_epoch(self, epoch: int, first_step: int = 0) -> None:
        self.epoch, self.offset = epoch, first_step
        self._first.fill_(-1)
        self._n.zero_()

    def update(self, parts: Tensor, step: int) -> None:
        """``parts``: this step's summed terms, e.g. stack([recon.sum(), kl.sum()])."""
        if self.every == 1:
            if not bool(parts.isfinite().all()):
                self._raise(step, int((~parts.isfinite()).nonzero()[0]))
            return
        # Device-side only (no host<->device copy, which would wait for the queue).
        bad = ~parts.isfinite()
        fresh = bad.any() & (self._first[0] < 0)
        here = torch.stack([self._n + self.offset, torch.argmax(bad.to(torch.uint8))])
        self._first = torch.where(fresh, here, self._first)
        self._n += 1
        if (step + 1) % self.every == 0:
            self.check()

    def check(self) -> None:
        step, term = self._first.tolist()
        if step >= 0:
            self._raise(step, term)

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
