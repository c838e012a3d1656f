"""The training loop, top to bottom: data, model, optimiser, epochs, checkpoints, history.

``fit(cfg, run_dir)`` trains a new run; ``fit(None, run_dir, resume=True)`` continues one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import distributed
from .config import MAX_CLASSES, RunConfig, as_run_config
from .data import Dataset, binarize, check_loaded_for, check_outside, load_dataset, relocate, resolve_paths
from .devices import check_compile, pick_device
from .errors import (BudgetError, ConfigError, DataError, PeerStopped, RunFolderError, TrainingInterrupted, VaekitError,
                     line_sink, minutes)
from .evaluate import elbo_metrics, labels_for
from .faults import (FiniteGuard, NonFinite, StopOnSignal, check_weights, interrupted, non_finite_error,
                     rng_state, set_rng_state)
from .files import user_path
from .grids import reconstruction_grid, sample_grid, save_png
from .loggers import Loggers, check_loggers
from .matmul import cpu_matmul
from .modelcard import CARD, write_model_card
from .models import LatentModel, build_model
from .objectives import beta_at, get_objective, unfinished_warmup
from .optim import lr_at, lr_setter, make_optimizer, unfinished_lr_warmup
from .precision import Precision
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
        stored = str(data.train_x.dtype).replace("torch.", "")
        what = f"stored as {stored}" if stored != "uint8" else f"on a scale of 0..{data.scale:g}"
        raise VaekitError(f"{cfg.data.dataset}: the dlogistic likelihood models 8-bit images (256 levels per value), "
                          f"but these data are {what}; use --likelihood gaussian")
    if cfg.train.batch_size > len(data.train_x):
        raise ConfigError(
            f"--batch-size {cfg.train.batch_size} is larger than the {len(data.train_x)} training examples"
        )


def _epoch_line(rec: dict, epochs: int) -> str:
    return (
        f"epoch {rec['epoch']:>3}/{epochs}  "
        f"train {rec['train_loss']:.3f} (recon {rec['train_recon']:.3f}, kl {rec['train_kl']:.3f})  "
        f"test {rec['test_loss']:.3f} (recon {rec['test_recon']:.3f}, kl {rec['test_kl']:.3f})  "
        f"beta {rec['beta']:.3g}  {rec['seconds']:.1f}s"
    )


def _run_config(cfg: RunConfig | Mapping[str, Any] | str | Path | None, run_dir: Path, resume: bool,
                epochs: int | None, overrides: dict[str, Any] | None) -> RunConfig:
    """The config this call trains with: the saved one when resuming, changed in memory only. A new
    run's may be given as a RunConfig, a dict like config.json (keys left out take their defaults) or
    the path of such a JSON file, as `--config` takes it."""
    if resume:  # a resumed run always continues with its saved config (a cfg passed along is not used)
        cfg = ckpt.load_config(run_dir)
    elif cfg is None:
        raise ConfigError("fit needs a config (a RunConfig, e.g. vaekit.get_preset(...), a dict or a JSON "
                          "file) unless resume=True")
    else:
        cfg = as_run_config(cfg)
    changes = dict(overrides or {})
    if epochs is not None:
        changes["train.epochs"] = epochs
    data_dir = changes.pop("data.data_dir", None)
    cfg = cfg.with_overrides(changes) if changes else cfg
    cfg = dataclasses.replace(cfg, data=relocate(cfg.data, data_dir) if resume else resolve_paths(
        dataclasses.replace(cfg.data, data_dir=data_dir or cfg.data.data_dir)))
    cfg.validate()
    return cfg


@cpu_matmul()
def fit(
    cfg: RunConfig | Mapping[str, Any] | str | Path | None,
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
    """Train (or, with ``resume``, continue) the run in ``run_dir`` and return it loaded. ``cfg`` is a
    RunConfig, a dict like config.json (keys left out take their defaults) or a JSON file's path.

    Everything that can be refused (config, device, data, model size, free space, the folder)
    is checked before the run folder is touched, so a refused call changes nothing. The folder
    is then locked against a second writer; a new run saves ``config.json`` before training;
    every epoch rewrites ``history.jsonl`` and then the checkpoint, so a stopped run resumes
    exactly. ``overrides`` (dotted keys) change the config, e.g. the device of a resumed run.
    ``max_minutes`` ends training after the last epoch that fits in that wall-clock budget
    (judged by the epoch just finished); the run then resumes like any stopped one.
    Started by torchrun (``WORLD_SIZE`` > 1), the processes train one run together (distributed.py).
    """
    run_dir = user_path(run_dir, "run_dir")
    max_minutes, log = minutes(max_minutes), line_sink(log)
    group = distributed.from_environment()
    cfg = _run_config(cfg, run_dir, resume, epochs, overrides)
    device = distributed.device_for(group, pick_device(cfg.train.device))
    with distributed.joined(group, device), distributed.peers_watched(group, lambda: _what_is_kept(run_dir)):
        try:
            prepared = _prepare(cfg, run_dir, resume, overwrite, epochs, overrides, data, progress, device, group)
        except VaekitError:
            distributed.agree(group, True)
            raise
        if distributed.agree(group, False):
            raise PeerStopped("stopped: another process of this job refused the run (its message says why)")
        cfg, model, optimizer, data = prepared
        gen = torch.Generator(device=device).manual_seed(cfg.seed)
        if not group.writer:
            log = _silent
            progress = False
        created = False if resume or not group.writer else ckpt.create_run_dir(run_dir)
        try:
            with run_lock(run_dir, "train") if group.writer else contextlib.nullcontext(), \
                    _no_half_made_run(run_dir, not resume and group.writer):
                if not resume and overwrite and group.writer:
                    ckpt.clear_run_dir(run_dir)
                done = _loop(cfg, run_dir, resume, model, optimizer, gen, data, device, progress, log, max_minutes,
                             group)
        except RunFolderError:
            if created and not any(run_dir.iterdir()):
                run_dir.rmdir()
            raise
        distributed.barrier(group)
    if not group.writer:  # the folder may be on another node's disk: the same weights are in memory
        model.train(False)
        return ckpt.Run(run_dir, cfg, model, done, tuple(data.shape))
    return ckpt.load_run(run_dir, device)


@contextlib.contextmanager
def _no_half_made_run(run_dir: Path, starting: bool) -> Iterator[None]:
    """Within the run's lock: a new run's folder (``starting`` in one that holds nothing yet), left by
    an error before its first checkpoint, is emptied of vaekit's files, so that the same command runs
    again without --overwrite."""
    new = starting and ckpt.holds_nothing(run_dir)
    try:
        yield
    except BaseException:
        if new and not (run_dir / ckpt.STATE).exists():
            ckpt.clear_run_dir(run_dir)
        raise


def _what_is_kept(run_dir: Path) -> str:
    """After a failure: what the run folder holds and how to go on from it."""
    if (run_dir / ckpt.STATE).exists():
        return f"the run in {run_dir} keeps its last checkpoint; continue with: vaekit train --resume {run_dir}"
    return f"{run_dir} holds no checkpoint yet; start the run again"


def _silent(line: str) -> None:
    """The log of ranks other than 0: rank 0 speaks for the job."""


def _prepare(cfg: RunConfig, run_dir: Path, resume: bool, overwrite: bool, epochs: int | None,
             overrides: dict[str, Any] | None, data: Dataset | None, progress: bool, device: torch.device,
             group: distributed.Group) -> tuple[RunConfig, LatentModel, torch.optim.Optimizer, Dataset]:
    """Every check, and the config (a conditional one with its classes), the model, optimiser and data
    on the device; nothing is written."""
    saved = ckpt.read_state_meta(run_dir) if resume else None
    if saved and saved[0] >= cfg.train.epochs and (epochs is not None or "train.epochs" in (overrides or {})):
        raise ConfigError(f"--epochs {cfg.train.epochs}: {run_dir} has already trained {saved[0]} epochs; "
                          f"give more than {saved[0]} to continue it")
    if not resume:
        ckpt.check_new_run_dir(run_dir, overwrite)
        check_outside(cfg.data, run_dir, "--out")
    if data is None:
        data = load_dataset(cfg.data, progress=progress and group.writer)
    data = check_loaded_for(data, cfg.data)
    check_data_fits(cfg, data, saved[1] if saved else None)
    cfg = with_classes(cfg, data)
    check_shares(cfg, len(data.train_x), group)
    torch.manual_seed(cfg.seed)
    samples = cfg.objective.iwae_samples if cfg.objective.kind == "iwae" else 1  # decoder rows per example
    try:
        model = build_model(cfg.model, data.shape, cfg.train.batch_size * samples, training=True)
    except (BudgetError, ConfigError) as e:
        if data.is_image and max(data.shape[1:]) > 64 and not cfg.data.image_size:  # photographs at full size
            raise type(e)(f"{e}; or train on smaller images: --image-size N (the data are "
                          f"{data.shape[2]}x{data.shape[1]})") from None
        raise
    if not resume:  # a resumed run's statistics come with its checkpoint
        model.likelihood.fit_data(data.train_x, data.features)
    # The names the config gives resolve, and fit the model (the model's own were checked in build_model).
    beta_at(cfg.objective, 1), lr_at(cfg.train, 0, 1), get_objective(cfg.objective, model)
    check_loggers(cfg.train.log)
    if cfg.train.compile:
        check_compile(device)
    if group.writer:
        ckpt.check_free_space(run_dir, sum(p.numel() for p in model.parameters()), resume)
    model = model.to(device)
    if channels_last(cfg, data, device):  # before the optimiser's state is made or loaded: it takes this layout
        model.to(memory_format=torch.channels_last)
    return cfg, model, make_optimizer(model, cfg), data.to(device)


def channels_last(cfg: RunConfig, data: Dataset, device: torch.device) -> bool:
    """Whether the conv net trains channels-last (NHWC), the layout cuDNN's fastest kernels take."""
    return device.type == "cuda" and data.is_image and cfg.model.arch != "mlp"


def with_classes(cfg: RunConfig, data: Dataset) -> RunConfig:
    """A conditional run's config with its number of classes taken from the data's labels (kept
    when already set, as on resume, if the labels still fit)."""
    if not cfg.model.conditional:
        return cfg
    if data.train_y is None or data.test_y is None:
        raise DataError(f"{cfg.data.dataset}: has no labels; --conditional needs labelled data "
                        "(for vectors: --labels FILE.npy)")
    lo = int(min(data.train_y.min(), data.test_y.min()))
    hi = int(max(data.train_y.max(), data.test_y.max()))
    if lo < 0 or hi >= MAX_CLASSES:
        raise DataError(f"{cfg.data.dataset}: labels span {lo}..{hi}; --conditional needs class numbers "
                        f"in 0..{MAX_CLASSES - 1}")
    if cfg.model.classes:
        if hi >= cfg.model.classes:
            raise DataError(f"{cfg.data.dataset}: has label {hi}, but this conditional model knows "
                            f"{cfg.model.classes} classes (0..{cfg.model.classes - 1})")
        return cfg
    classes = max(hi + 1, len(data.class_names or []))
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, classes=classes))


def check_shares(cfg: RunConfig, n_train: int, group: distributed.Group) -> None:
    """Under data parallelism every global batch, the last one included, must give each process a row."""
    last = n_train % cfg.train.batch_size or cfg.train.batch_size
    if group.active and cfg.train.batch_size < group.world:
        raise ConfigError(f"--batch-size {cfg.train.batch_size}: too few examples per batch to give each of "
                          f"{group.world} processes one; give at least {group.world}")
    if group.active and last < group.world:
        raise ConfigError(f"--batch-size {cfg.train.batch_size}: with {n_train} training examples the last batch has "
                          f"{last}, too few to give each of {group.world} processes one; choose another batch size")


class StepModule(torch.nn.Module):
    """One training step's objective as a module: what DistributedDataParallel wraps (its forward
    is where gradients get hooked for the all-reduce); in one process it is called as it is."""

    def __init__(self, model: LatentModel, cfg: RunConfig) -> None:
        super().__init__()
        self.model, self.objective_cfg = model, cfg.objective
        self.objective = get_objective(cfg.objective, model)

    def forward(self, x: torch.Tensor, beta: float, y: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """(loss, summed reconstruction NLL, summed KL, summed objective) for this batch (``y``: its
        labels, for a conditional model)."""
        step = self.objective(self.model, x, beta, self.objective_cfg, y=y)
        recon, kl = step.recon.sum(), step.kl.sum()
        total = recon + beta * kl if step.total is None else step.total
        return step.loss, recon, kl, total


def _wrap(step: StepModule, device: torch.device, group: distributed.Group) -> torch.nn.Module:
    if not group.active:
        return step
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(step, device_ids=[device] if device.type == "cuda" else None)


def _loop(cfg: RunConfig, run_dir: Path, resume: bool, model: LatentModel, optimizer: torch.optim.Optimizer,
           gen: torch.Generator, data: Dataset, device: torch.device, progress: bool,
           log: Callable[[str], None], max_minutes: float | None, group: distributed.Group) -> int:
    """The loop itself, in a locked folder whose inputs have all been checked; returns the epochs done.
    Under data parallelism each process takes its share of every batch and only rank 0 (``writer``) writes."""
    n_train = len(data.train_x)
    bs = cfg.train.batch_size
    steps_per_epoch = -(-n_train // bs)
    writer = group.writer
    start = ckpt.TrainingState(0, 0, {}, None)
    if resume and (run_dir / ckpt.STATE).exists():
        start = ckpt.load_training_state(run_dir, model, optimizer)
        if start.step >= steps_per_epoch:
            raise RunFolderError(f"{run_dir / ckpt.STATE}: stopped at step {start.step} of an epoch that has "
                                 f"{steps_per_epoch}; the data changed since training")
        set_rng_state(start.rng, gen, run_dir / ckpt.STATE)
        if start.epoch >= cfg.train.epochs and not start.step:
            log(f"{run_dir} has already trained all {cfg.train.epochs} epochs; continue it with --epochs N "
                f"(N > {cfg.train.epochs})")
            missing = [name for name in finish_files(data) if not (run_dir / name).exists()]
            if writer and missing:  # a signal cut the end of the run short
                log(f"writing the missing {', '.join(missing)}")
                finish_run(model, data, run_dir, cfg.seed)
            return start.epoch
        where = f"epoch {start.epoch + 1}" + (f", step {start.step + 1}" if start.step else "")
        log(f"resuming {run_dir} at {where} of {cfg.train.epochs} epochs")
    history: ckpt.History | None = None
    if writer:
        if resume:
            ckpt.check_data_record(run_dir, data)
        history = ckpt.truncate_history(run_dir, start.epoch)
        ckpt.save_config(run_dir, cfg)
        ckpt.save_data_record(run_dir, cfg, data)

    set_lr = lr_setter(optimizer, cfg.train, steps_per_epoch)
    precision = Precision(cfg.train.precision, device)
    for note in (precision.note, unfinished_warmup(cfg.objective, cfg.train.epochs), unfinished_lr_warmup(cfg.train)):
        if writer and note:
            log(f"note: {note}")
    precision.load_state(start.rng)
    nhwc = channels_last(cfg, data, device)
    step_fn = _wrap(StepModule(model, cfg), device, group)
    if cfg.train.compile:
        import torch._inductor.config as inductor

        inductor.fallback_random = True  # compiled steps draw the same noise as eager ones: the same run
        step_fn = torch.compile(step_fn)
    guard = FiniteGuard(device)
    flag = torch.zeros((), device=device)
    deadline = None if max_minutes is None else time.perf_counter() + max_minutes * 60
    done = start.epoch
    loggers = Loggers(cfg.train.log if writer else [], run_dir, start.epoch + 1, cfg.seed)
    with StopOnSignal(repeat_grace=3.0 if group.launched else 0.0) as stop, contextlib.closing(loggers):
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
                guard.start_epoch(epoch)
                bar = tqdm(range(first, len(batches)), desc=f"epoch {epoch}/{cfg.train.epochs}", leave=False,
                           disable=None if progress else True, unit="batch")
                for step in bar:
                    x = data.batch(batches[step])
                    y = data.labels(batches[step]) if model.classes else None
                    if cfg.data.binarize == "dynamic":
                        x = binarize(x, gen)  # drawn for the whole batch: the same on every process
                    if nhwc:
                        x = x.contiguous(memory_format=torch.channels_last)
                    size = len(x)
                    offset, rows = group.share(size)
                    if group.active:
                        x, y = x[offset: offset + rows], None if y is None else y[offset: offset + rows]
                    with distributed.batch_shard(offset, rows, size), precision.autocast():
                        loss, recon, kl, total = step_fn(x, beta, y)
                    if group.active:  # DDP averages gradients over processes: weigh each share by its size
                        loss = loss * (rows * group.world / size)
                    optimizer.zero_grad(set_to_none=True)
                    precision.backward(loss)
                    parts = torch.stack([total, recon, kl]).detach()  # in the order of the epoch's sums
                    if group.active:  # one small reduction: the summed terms, and whether any process was signalled
                        parts = distributed.all_sum(group, torch.cat([parts, flag.fill_(bool(stop.requested))[None]]))
                    terms = parts[1:3]
                    if cfg.train.grad_clip > 0:
                        precision.unscale(optimizer)
                        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                        if precision.checks_gradients:  # with fp16 an overflow is the scaler's to handle
                            terms = torch.cat([terms, norm.detach().reshape(1)])
                    guard.update(terms, step)
                    if set_lr:
                        set_lr(epoch, step)
                    precision.step(optimizer)
                    sums += parts[:3]  # stays on the device: no host sync
                    if progress and step % 20 == 0:
                        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
                    if group.active:  # the same answer on every process; read when the guard reads (no GPU sync)
                        signalled = (step + 1) % guard.every == 0 and bool(parts[3] > 0)
                    else:
                        signalled = bool(stop.requested)
                    if signalled and step + 1 < len(batches):
                        guard.check()
                        check_weights(model, epoch)
                        rng = {**rng_state(gen), "data_epoch_start": epoch_rng, **precision.state()}
                        if writer:
                            ckpt.save_checkpoint(run_dir, model, optimizer, epoch - 1, rng, step + 1, sums, cfg)
                        raise interrupted(stop.requested or "SIGTERM", run_dir, f"epoch {epoch}, step {step + 1}")
                guard.check()
                train_loss, train_recon, train_kl = (sums / n_train).tolist()  # one host sync per epoch
                train_seconds = time.perf_counter() - t0
                check_weights(model, epoch)
                if writer:
                    test = elbo_metrics(model, data, "test", cfg.train.eval_batch_size, cfg.seed)
                    record = {
                        "epoch": epoch, "beta": beta, "lr": optimizer.param_groups[0]["lr"],
                        "train_loss": train_loss, "train_recon": train_recon, "train_kl": train_kl,
                        "test_loss": test["loss"], "test_recon": test["recon"], "test_kl": test["kl"],
                        "test_kl_per_dim": test.get("kl_per_dim"), "train_seconds": train_seconds,
                        "seconds": time.perf_counter() - t0,
                    }
                    history.append(record)  # type: ignore[union-attr]  # the writer has one
                    ckpt.save_checkpoint(run_dir, model, optimizer, epoch, {**rng_state(gen), **precision.state()},
                                         cfg=cfg)
                    (tqdm.write if progress else log)(_epoch_line(record, cfg.train.epochs))
                    loggers.epoch(record, model, data)
                if distributed.agree(group, bool(stop.requested)) and epoch < cfg.train.epochs:
                    raise interrupted(stop.requested or "SIGTERM", run_dir, f"the end of epoch {epoch}")
                now = time.perf_counter()
                late = deadline is not None and epoch < cfg.train.epochs and now + (now - t0) > deadline
                done = epoch
                if distributed.agree(group, late):
                    log(f"stopping after epoch {epoch} of {cfg.train.epochs}: another epoch would pass the "
                        f"{max_minutes:g}-minute limit; continue with: vaekit train --resume {run_dir}")
                    break
        except NonFinite as e:
            raise non_finite_error(e, run_dir, cfg) from None
        if done > start.epoch:
            loggers.finish(model, data, done)

    if not writer:
        return done
    if resume and ((run_dir / "report.html").exists() or (run_dir / ckpt.PLOTS_DIR).is_dir()):
        log(f"note: {run_dir}/plots and report.html were made before this training; refresh them with "
            f"vaekit plot {run_dir} (or vaekit report {run_dir})")
    if not (run_dir / ckpt.MODEL).exists():
        ckpt.save_checkpoint(run_dir, model, optimizer, start.epoch, rng_state(gen), cfg=cfg)
    finish_run(model, data, run_dir, cfg.seed, complete=done >= cfg.train.epochs)
    return done


def finish_run(model: LatentModel, data: Dataset, run_dir: Path, seed: int = 0, complete: bool = True) -> None:
    """The pictures and model card of a trained run (``complete``: all its epochs, else stopped by a time
    limit). The weights are saved by then, so a signal here ends with a line saying so, and what next."""
    model.train(False)
    try:
        write_grids(model, data, run_dir, seed)
        write_model_card(run_dir)
    except KeyboardInterrupt:
        files = ", ".join(finish_files(data))
        if complete:
            text = f"the run in {run_dir} is complete; vaekit train --resume {run_dir} writes {files}"
        else:
            text = f"the run in {run_dir} is saved; continue with: vaekit train --resume {run_dir}"
        raise TrainingInterrupted(f"interrupted while writing the pictures after training: {text}", "signal") from None


def finish_files(data: Dataset) -> list[str]:
    """The files ``finish_run`` writes for this data."""
    return ([SAMPLES_PNG, RECONSTRUCTIONS_PNG] if data.is_image else []) + [CARD]


def write_grids(model: LatentModel, data: Dataset, run_dir: Path, seed: int = 0) -> list[Path]:
    """samples.png and reconstructions.png for image data; nothing for vectors."""
    if not data.is_image:
        return []
    x = data.features(data.test_x[:32])
    y = labels_for(model, data, "test", 0, len(x))
    return [
        save_png(sample_grid(model, 64, seed), run_dir / SAMPLES_PNG),
        save_png(reconstruction_grid(model, x, y=y), run_dir / RECONSTRUCTIONS_PNG),
    ]
