"""The training loop, top to bottom: data, model, optimiser, epochs, checkpoints, history.

``fit(cfg, run_dir)`` trains a new run; ``fit(None, run_dir, resume=True)`` continues one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .config import RunConfig
from .data import Dataset, binarize, load_dataset
from .errors import ConfigError, VaekitError
from .evaluate import elbo_metrics
from .grids import reconstruction_grid, sample_grid, save_png
from .models import LatentModel, build_model
from .objectives import beta_at, elbo_parts, loss_from_parts

SAMPLES_PNG = "samples.png"
RECONSTRUCTIONS_PNG = "reconstructions.png"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device='{name}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device='{name}' but no CUDA GPU is available; use --device cpu")
    return device


def check_data_fits(cfg: RunConfig, data: Dataset) -> None:
    """Refuse combinations that would train on nonsense (e.g. Bernoulli on values outside [0, 1])."""
    if cfg.model.likelihood == "bernoulli" or cfg.data.binarize != "none":
        lo, hi = data.value_range()
        if lo < 0 or hi > 1:
            raise VaekitError(
                f"{cfg.data.dataset}: values span [{lo:.3g}, {hi:.3g}] but the Bernoulli likelihood and "
                "binarisation need [0, 1]; use --likelihood gaussian (or mse) or rescale the data"
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


def _set_rng_state(state: dict[str, torch.Tensor], gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["data"])
    cuda = [state[k] for k in sorted(state) if k.startswith("cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def _epoch_line(rec: dict, epochs: int) -> str:
    return (
        f"epoch {rec['epoch']:>3}/{epochs}  "
        f"train {rec['train_loss']:.3f} (recon {rec['train_recon']:.3f}, kl {rec['train_kl']:.3f})  "
        f"test {rec['test_loss']:.3f} (recon {rec['test_recon']:.3f}, kl {rec['test_kl']:.3f})  "
        f"beta {rec['beta']:.3g}  {rec['seconds']:.1f}s"
    )


def fit(
    cfg: RunConfig | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    epochs: int | None = None,
    data: Dataset | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> ckpt.Run:
    """Train (or, with ``resume``, continue) the run in ``run_dir`` and return it loaded.

    A new run saves ``config.json`` before training starts; every epoch appends to
    ``history.jsonl`` and then rewrites the checkpoint, so a stopped run resumes exactly.
    """
    run_dir = Path(run_dir)
    if resume:
        cfg = ckpt.load_config(run_dir)
        if epochs is not None:
            cfg = cfg.with_overrides({"train.epochs": epochs})
    elif cfg is None:
        raise ValueError("fit needs a RunConfig unless resume=True")
    elif epochs is not None:
        cfg = cfg.with_overrides({"train.epochs": epochs})
    cfg.validate()

    # Data and model: everything is rebuilt from the config alone.
    device = pick_device(cfg.train.device)
    data = data or load_dataset(cfg.data, progress=progress)
    check_data_fits(cfg, data)
    data = data.to(device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.shape).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)

    start_epoch = 0
    if resume and (run_dir / ckpt.MODEL).exists():
        model.load_state_dict(ckpt.load_run(run_dir, device).model.state_dict())
        start_epoch, rng = ckpt.load_training_state(run_dir, optimizer)
        _set_rng_state(rng, gen)
        log(f"resuming {run_dir} at epoch {start_epoch + 1} of {cfg.train.epochs}")
    elif not resume:
        ckpt.prepare_run_dir(run_dir, overwrite)
    ckpt.truncate_history(run_dir, start_epoch)
    ckpt.save_config(run_dir, cfg)

    n_train = len(data.train_x)
    bs = cfg.train.batch_size
    for epoch in range(start_epoch + 1, cfg.train.epochs + 1):
        beta = beta_at(cfg.objective, epoch)
        model.train()
        t0 = time.perf_counter()
        sums = torch.zeros(3, device=device)
        perm = torch.randperm(n_train, generator=gen, device=device)
        batches = perm.split(bs)
        bar = tqdm(batches, desc=f"epoch {epoch}/{cfg.train.epochs}", leave=False, disable=None if progress else True,
                   unit="batch")
        for step, idx in enumerate(bar):
            x = data.features(data.train_x[idx])
            if cfg.data.binarize == "dynamic":
                x = binarize(x, gen)
            recon, kl = elbo_parts(model, x)
            loss = loss_from_parts(recon, kl, beta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            # Sums stay on the device: no host sync per step.
            sums += torch.stack([(recon + beta * kl).sum(), recon.sum(), kl.sum()]).detach()
            if progress and step % 20 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        train_loss, train_recon, train_kl = (sums / n_train).tolist()
        if not all(map(torch.isfinite, sums)):
            raise VaekitError(
                f"training diverged in epoch {epoch}: the loss became NaN/inf; the last good checkpoint "
                f"(epoch {epoch - 1}) is kept. Lower --lr or check the data range for the likelihood"
            )
        test = elbo_metrics(model, data, "test", cfg.train.eval_batch_size, cfg.seed)
        record = {
            "epoch": epoch, "beta": beta,
            "train_loss": train_loss, "train_recon": train_recon, "train_kl": train_kl,
            "test_loss": test["loss"], "test_recon": test["recon"], "test_kl": test["kl"],
            "test_kl_per_dim": test["kl_per_dim"], "seconds": time.perf_counter() - t0,
        }
        ckpt.append_history(run_dir, record)
        ckpt.save_checkpoint(run_dir, model, optimizer, epoch, _rng_state(gen))
        (tqdm.write if progress else log)(_epoch_line(record, cfg.train.epochs))

    if not (run_dir / ckpt.MODEL).exists():
        ckpt.save_checkpoint(run_dir, model, optimizer, start_epoch, _rng_state(gen))
    model.eval()
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
