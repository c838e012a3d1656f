"""The training loop, top to bottom: data, model, optimiser, epochs, checkpoints, history.

``fit(cfg, run_dir)`` trains a new run; ``fit(None, run_dir, resume=True)`` continues one.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .config import RunConfig
from .data import Dataset, binarize, load_dataset, relocate, resolve_paths
from .devices import pick_device
from .errors import ConfigError, RunFolderError, TrainingInterrupted, VaekitError, brief
from .evaluate import elbo_metrics
from .grids import reconstruction_grid, sample_grid, save_png
from .models import LatentModel, build_model
from .objectives import beta_at, get_objective
from .optim import lr_at, lr_setter, make_optimizer
from .runlock import run_lock

SAMPLES_PNG = "samples.png"
RECONSTRUCTIONS_PNG = "reconstructions.png"


def check_data_fits(cfg: RunConfig, data: Dataset, saved_shape: tuple[int, ...] | None = None) -> None:
    """Refuse combinations that would train on nonsense (e.g. Bernoulli on values outside [0, 1]),
    and data that changed under a run being resumed."""
    if saved_shape is not None:
        data.check_shape(saved_shape)
    if cfg.model.likelihood == "bernoulli" or cfg.data.binarize != "none":
        lo, hi = data.value_range()
        if lo < 0 or hi > 1:
            raise VaekitError(
                f"{cfg.data.dataset}: values span [{lo:.3g}, {hi:.3g}] but the Bernoulli likelihood and "
                "binarisation need [0, 1]; use --likelihood gaussian (or mse) or rescale the data"
            )
    if cfg.model.likelihood == "dlogistic" and (data.train_x.dtype != torch.uint8 or data.scale != 255.0):
        raise VaekitError(
            f"{cfg.data.dataset}: the dlogistic likelihood models 8-bit images (256 levels per value), but these "
            f"data are stored as {str(data.train_x.dtype).replace('torch.', '')}; use --likelihood gaussian"
        )
    if cfg.train.batch_size > len(data.train_x):
        raise ConfigError(
            f"--batch-size {cfg.train.batch_size} is larger than the {len(data.train_x)} training examples"
        )


def _rng_state(gen: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "data": gen.get_state()}
    if torch.cuda.is_available():
        state.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return state


def _set_rng_state(state: dict[str, torch.Tensor], gen: torch.Generator, path: Path) -> None:
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
    """While active, SIGINT/SIGTERM only set ``requested`` so the loop can stop at a clean point;
    a second signal interrupts at once. Handlers are installed only in the main thread."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _interrupted(signal_name: str, run_dir: Path, where: str) -> TrainingInterrupted:
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


def _non_finite_error(e: NonFinite, run_dir: Path, cfg: RunConfig) -> VaekitError:
    done = e.epoch - 1
    kept = (f"the last good checkpoint (epoch {done}) is kept in {run_dir}" if done else
            "no checkpoint was written yet")
    where = f"at epoch {e.epoch}, step {e.step + 1}" if e.step >= 0 else f"during epoch {e.epoch}"
    return VaekitError(
        f"training stopped: the {e.term} became NaN/inf {where}; {kept}. "
        f"Usual causes: a learning rate too high (now {cfg.train.lr:g}; try {cfg.train.lr / 10:g}), or data "
        f"outside the range the '{cfg.model.likelihood}' likelihood expects (Bernoulli needs [0, 1])"
    )


def _check_weights(model: LatentModel, epoch: int) -> None:
    """Before a checkpoint: a non-finite gradient from a finite loss shows up here at the latest."""
    if not all(bool(p.isfinite().all()) for p in model.parameters()):
        raise NonFinite("weights", epoch, -1)


def _epoch_line(rec: dict, epochs: int) -> str:
    return (
        f"epoch {rec['epoch']:>3}/{epochs}  "
        f"train {rec['train_loss']:.3f} (recon {rec['train_recon']:.3f}, kl {rec['train_kl']:.3f})  "
        f"test {rec['test_loss']:.3f} (recon {rec['test_recon']:.3f}, kl {rec['test_kl']:.3f})  "
        f"beta {rec['beta']:.3g}  {rec['seconds']:.1f}s"
    )


def _run_config(cfg: RunConfig | None, run_dir: Path, resume: bool, epochs: int | None,
                overrides: dict[str, Any] | None) -> RunConfig:
    """The config this call trains with: the saved one when resuming, changed in memory only."""
    if resume:  # a resumed run always continues with its saved config (a cfg passed along is not used)
        cfg = ckpt.load_config(run_dir)
    elif cfg is None:
        raise ValueError("fit needs a RunConfig unless resume=True")
    changes = dict(overrides or {})
    if epochs is not None:
        changes["train.epochs"] = epochs
    data_dir = changes.pop("data.data_dir", None)
    cfg = cfg.with_overrides(changes) if changes else cfg
    cfg = dataclasses.replace(cfg, data=relocate(cfg.data, data_dir) if resume else resolve_paths(
        dataclasses.replace(cfg.data, data_dir=data_dir or cfg.data.data_dir)))
    cfg.validate()
    return cfg


def fit(
    cfg: RunConfig | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    epochs: int | None = None,
    overrides: dict[str, Any] | None = None,
    data: Dataset | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    max_minutes: float | None = None,
) -> ckpt.Run:
    """Train (or, with ``resume``, continue) the run in ``run_dir`` and return it loaded.

    Everything that can be refused (config, device, data, model size, free space, the folder)
    is checked before the run folder is touched, so a refused call changes nothing. The folder
    is then locked against a second writer; a new run saves ``config.json`` before training;
    every epoch rewrites ``history.jsonl`` and then the checkpoint, so a stopped run resumes
    exactly. ``overrides`` (dotted keys) change the config, e.g. the device of a resumed run.
    ``max_minutes`` ends training after the last epoch that fits in that wall-clock budget
    (judged by the epoch just finished); the run then resumes like any stopped one.
    """
    run_dir = Path(run_dir)
    cfg = _run_config(cfg, run_dir, resume, epochs, overrides)
    device = pick_device(cfg.train.device)
    saved = ckpt.read_state_meta(run_dir) if resume else None
    if saved and saved[0] >= cfg.train.epochs and (epochs is not None or "train.epochs" in (overrides or {})):
        raise ConfigError(f"--epochs {cfg.train.epochs}: {run_dir} has already trained {saved[0]} epochs; "
                          f"give more than {saved[0]} to continue it")
    if not resume:
        ckpt.check_new_run_dir(run_dir, overwrite)
    data = data or load_dataset(cfg.data, progress=progress)
    check_data_fits(cfg, data, saved[1] if saved else None)
    torch.manual_seed(cfg.seed)
    samples = cfg.objective.iwae_samples if cfg.objective.kind == "iwae" else 1  # decoder rows per example
    model = build_model(cfg.model, data.shape, cfg.train.batch_size * samples, training=True)
    # The names the config gives resolve, and fit the model (the model's own were checked in build_model).
    beta_at(cfg.objective, 1), lr_at(cfg.train, 0, 1), get_objective(cfg.objective, model)
    ckpt.check_free_space(run_dir, sum(p.numel() for p in model.parameters()))
    data = data.to(device)
    model = model.to(device)
    optimizer = make_optimizer(model, cfg)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)

    created = False if resume else ckpt.create_run_dir(run_dir)
    try:
        with run_lock(run_dir, "train"):
            if not resume and overwrite:
                ckpt.clear_run_dir(run_dir)
            return _loop(cfg, run_dir, resume, model, optimizer, gen, data, device, progress, log, max_minutes)
    except RunFolderError:
        if created and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise


def _loop(cfg: RunConfig, run_dir: Path, resume: bool, model: LatentModel, optimizer: torch.optim.Optimizer,
           gen: torch.Generator, data: Dataset, device: torch.device, progress: bool,
           log: Callable[[str], None], max_minutes: float | None) -> ckpt.Run:
    """The loop itself, in a locked folder whose inputs have all been checked."""
    n_train = len(data.train_x)
    bs = cfg.train.batch_size
    steps_per_epoch = -(-n_train // bs)
    start = ckpt.TrainingState(0, 0, {}, None)
    if resume and (run_dir / ckpt.STATE).exists():
        start = ckpt.load_training_state(run_dir, model, optimizer)
        if start.step >= steps_per_epoch:
            raise RunFolderError(f"{run_dir / ckpt.STATE}: stopped at step {start.step} of an epoch that has "
                                 f"{steps_per_epoch}; the data changed since training")
        _set_rng_state(start.rng, gen, run_dir / ckpt.STATE)
        if start.epoch >= cfg.train.epochs and not start.step:
            log(f"{run_dir} has already trained all {cfg.train.epochs} epochs; continue it with --epochs N "
                f"(N > {cfg.train.epochs})")
            return ckpt.load_run(run_dir, device)
        where = f"epoch {start.epoch + 1}" + (f", step {start.step + 1}" if start.step else "")
        log(f"resuming {run_dir} at {where} of {cfg.train.epochs} epochs")
    if resume:
        ckpt.check_data_record(run_dir, data)
    history = ckpt.truncate_history(run_dir, start.epoch)
    ckpt.save_config(run_dir, cfg)
    ckpt.save_data_record(run_dir, cfg, data)

    set_lr = lr_setter(optimizer, cfg.train, steps_per_epoch)
    objective = get_objective(cfg.objective, model)
    guard = FiniteGuard(device)
    deadline = None if max_minutes is None else time.perf_counter() + max_minutes * 60
    with StopOnSignal() as stop:
        try:
            for epoch in range(start.epoch + 1, cfg.train.epochs + 1):
                beta = beta_at(cfg.objective, epoch)
                model.train()
                t0 = time.perf_counter()
                inside = bool(start.step) and epoch == start.epoch + 1  # continue where a signal stopped
                if inside:
                    gen.set_state(start.rng["data_epoch_start"])
                epoch_rng = gen.get_state()
                perm = torch.randperm(n_train, generator=gen, device=device)
                sums, first = torch.zeros(3, device=device), 0
                if inside:
                    gen.set_state(start.rng["data"])
                    sums, first = start.partial.to(device), start.step
                batches = perm.split(bs)
                guard.start_epoch(epoch, first)
                bar = tqdm(range(first, len(batches)), desc=f"epoch {epoch}/{cfg.train.epochs}", leave=False,
                           disable=None if progress else True, unit="batch")
                for step in bar:
                    x = data.batch(batches[step])
                    if cfg.data.binarize == "dynamic":
                        x = binarize(x, gen)
                    step_terms = objective(model, x, beta, cfg.objective)
                    loss = step_terms.loss
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    parts = [step_terms.recon.sum(), step_terms.kl.sum()]
                    if cfg.train.grad_clip > 0:
                        parts.append(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip))
                    parts = torch.stack(parts).detach()
                    guard.update(parts, step)
                    if set_lr:
                        set_lr(epoch, step)
                    optimizer.step()
                    # Sums stay on the device: no host sync for them per step.
                    total = parts[0] + beta * parts[1] if step_terms.total is None else step_terms.total.detach()
                    sums += torch.stack([total, parts[0], parts[1]])
                    if progress and step % 20 == 0:
                        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
                    if stop.requested and step + 1 < len(batches):
                        guard.check()
                        _check_weights(model, epoch)
                        rng = {**_rng_state(gen), "data_epoch_start": epoch_rng}
                        ckpt.save_checkpoint(run_dir, model, optimizer, epoch - 1, rng, step + 1, sums)
                        raise _interrupted(stop.requested, run_dir, f"epoch {epoch}, step {step + 1}")
                guard.check()
                train_loss, train_recon, train_kl = (sums / n_train).tolist()  # one host sync per epoch
                train_seconds = time.perf_counter() - t0
                _check_weights(model, epoch)
                test = elbo_metrics(model, data, "test", cfg.train.eval_batch_size, cfg.seed)
                record = {
                    "epoch": epoch, "beta": beta, "lr": optimizer.param_groups[0]["lr"],
                    "train_loss": train_loss, "train_recon": train_recon, "train_kl": train_kl,
                    "test_loss": test["loss"], "test_recon": test["recon"], "test_kl": test["kl"],
                    "test_kl_per_dim": test.get("kl_per_dim"), "train_seconds": train_seconds,
                    "seconds": time.perf_counter() - t0,
                }
                history.append(record)
                ckpt.write_history(run_dir, history)
                ckpt.save_checkpoint(run_dir, model, optimizer, epoch, _rng_state(gen))
                (tqdm.write if progress else log)(_epoch_line(record, cfg.train.epochs))
                if stop.requested and epoch < cfg.train.epochs:
                    raise _interrupted(stop.requested, run_dir, f"the end of epoch {epoch}")
                now = time.perf_counter()
                if deadline is not None and epoch < cfg.train.epochs and now + (now - t0) > deadline:
                    log(f"stopping after epoch {epoch} of {cfg.train.epochs}: another epoch would pass the "
                        f"{max_minutes:g}-minute limit; continue with: vaekit train --resume {run_dir}")
                    break
        except NonFinite as e:
            raise _non_finite_error(e, run_dir, cfg) from None

    if resume and ((run_dir / "report.html").exists() or (run_dir / ckpt.PLOTS_DIR).is_dir()):
        log(f"note: {run_dir}/plots and report.html were made before this training; refresh them with "
            f"vaekit plot {run_dir} (or vaekit report {run_dir})")
    if not (run_dir / ckpt.MODEL).exists():
        ckpt.save_checkpoint(run_dir, model, optimizer, start.epoch, _rng_state(gen))
    model.train(False)
    write_grids(model, data, run_dir, cfg.seed)
    return ckpt.load_run(run_dir, device)


def write_grids(model: LatentModel, data: Dataset, run_dir: Path, seed: int = 0) -> list[Path]:
    """samples.png and reconstructions.png for image data; nothing for vectors."""
    if not data.is_image:
        return []
    x = data.features(data.test_x[:32])
    return [
        save_png(sample_grid(model, 64, seed), run_dir / SAMPLES_PNG),
        save_png(reconstruction_grid(model, x), run_dir / RECONSTRUCTIONS_PNG),
    ]
