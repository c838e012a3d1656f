"""Metrics of a trained model on a data split: the ELBO (beta = 1), the importance-weighted NLL,
bits per dimension, KL per latent dimension, active units and reconstruction-error statistics.
"""

from __future__ import annotations

import errno
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .checkpoint import Run, check_data_record, load_run
from .data import Dataset, load_dataset, relocate
from .errors import RunFolderError, VaekitError, counted, whole_number
from .files import OutputError, atomic_write, strict_json, user_path
from .matmul import cpu_matmul
from .models import LatentModel, rows_within
from .objectives import iwae_log_px

if TYPE_CHECKING:
    from .samplers import GaussianMixture

DEFAULT_IWAE_K = 100
IWAE_CHUNK_BYTES = 512 << 20  # activations per decoder chunk: 4096 rows of the MLP presets, fewer for conv nets
ACTIVE_THRESHOLD = 0.01  # Burda et al. (2016): a unit is active if Cov_x(E[z|x]) > 0.01


def _split(data: Dataset, split: str) -> Tensor:
    if split not in ("train", "test"):
        raise ValueError(f"split {split!r}: 'train' or 'test'")
    return data.test_x if split == "test" else data.train_x


def labels_for(model: LatentModel, data: Dataset, split: str, start: int, stop: int) -> Tensor | None:
    """The labels a conditional model is given for examples start..stop-1; None for other models."""
    return data.label_slice(split, start, stop) if model.classes else None


@torch.no_grad()
def elbo_per_example(
    model: LatentModel, data: Dataset, split: str = "test", batch_size: int = 1000, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per-example reconstruction NLL (N,), KL (N,) and KL per latent dimension (N, latent_dim;
    None when the prior has no per-dimension KL), beta = 1.

    One reparameterised sample per example, from a fixed seed, so repeated calls agree.
    """
    was_training = model.training
    model.train(False)
    stored = _split(data, split)
    gen = torch.Generator(device=stored.device).manual_seed(seed)
    recons, kls, dims = [], [], []
    for start in range(0, len(stored), batch_size):
        x = data.features(stored[start : start + batch_size])
        y = labels_for(model, data, split, start, start + len(x))
        q = model.posterior(x, y)
        z = q.rsample(gen)
        recons.append(model.likelihood.nll(model.decode(z, y), x))
        per_dim = model.kl_per_dim(q)
        if per_dim is None:
            kls.append(model.kl(q, z))
        else:
            dims.append(per_dim)
    model.train(was_training)
    if dims:
        kl_dims = torch.cat(dims).double()
        return torch.cat(recons).double(), kl_dims.sum(1), kl_dims
    return torch.cat(recons).double(), torch.cat(kls).double(), None


def elbo_metrics(
    model: LatentModel, data: Dataset, split: str = "test", batch_size: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Mean per-example ``loss`` (= recon + KL, the negative ELBO) with its standard error
    ``loss_se``, ``recon``, ``kl``, ``n`` and ``kl_per_dim``."""
    recon, kl, kl_dims = elbo_per_example(model, data, split, batch_size, seed)
    r, k = float(recon.mean()), float(kl.mean())
    metrics = {"loss": r + k, "loss_se": standard_error(recon + kl), "recon": r, "kl": k, "n": len(recon)}
    if kl_dims is not None:
        metrics["kl_per_dim"] = kl_dims.mean(0).tolist()
    return metrics


def standard_error(values: Tensor) -> float | None:
    """The standard error of the mean of per-example values (sample std / sqrt(n)): how far the test
    set's finite size alone may move a mean; None (unknown, not 0) for fewer than two values."""
    return float(values.double().std() / math.sqrt(len(values))) if len(values) > 1 else None


def paired_loss(model_a: LatentModel, model_b: LatentModel, data: Dataset, split: str = "test",
                seed: int = 0) -> dict[str, Any]:
    """Both models' negative ELBO (β = 1) on the same examples and the mean of their per-example
    differences with its standard error: the examples' own difficulty cancels, so a difference far
    smaller than either mean's standard error can still be told apart."""
    la, lb = (sum(elbo_per_example(m, data, split, seed=seed)[:2]) for m in (model_a, model_b))
    return {"a": float(la.mean()), "b": float(lb.mean()), "difference": float((la - lb).mean()),
            "difference_se": standard_error(la - lb), "n": len(la)}


@torch.no_grad()
def latent_means(model: LatentModel, data: Dataset, split: str = "test", batch_size: int = 1000) -> Tensor:
    """E[z|x] for every example of the split (the AE's code), shape (N, latent_dim)."""
    stored = _split(data, split)
    return torch.cat([model.encode(data.features(stored[s : s + batch_size]),
                                   labels_for(model, data, split, s, s + batch_size))[0]
                      for s in range(0, len(stored), batch_size)])


@torch.no_grad()
def reconstruction_errors(model: LatentModel, data: Dataset, split: str = "test", batch_size: int = 1000) -> Tensor:
    """Per-example mean squared error between x and its reconstruction from the posterior mean
    (float64: squares of large raw values overflow float32)."""
    stored = _split(data, split)
    errors = []
    for s in range(0, len(stored), batch_size):
        x = data.features(stored[s : s + batch_size])
        x_hat = model.reconstruct(x, labels_for(model, data, split, s, s + batch_size))
        errors.append((x_hat.double() - x.double()).pow(2).flatten(1).mean(1))
    return torch.cat(errors)


def active_units(means: Tensor, threshold: float = ACTIVE_THRESHOLD) -> int | None:
    """Latent dimensions whose posterior mean varies across the data (variance above threshold); None
    (unknown) for fewer than two examples, which show no variation to measure."""
    if len(means) < 2:
        return None
    return int((means.double().var(0) > threshold).sum())


@torch.no_grad()
def iwae_nll(
    model: LatentModel,
    data: Dataset,
    k: int,
    split: str = "test",
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    max_rows: int | None = None,
) -> Tensor:
    """Per-example -log p(x) estimated with k importance samples (an upper bound on the NLL).
    Samples go through the decoder ``max_rows`` at a time (default: what fits in IWAE_CHUNK_BYTES)."""
    model.train(False)
    max_rows = max_rows or rows_within(model, IWAE_CHUNK_BYTES)
    stored = _split(data, split)
    gen = torch.Generator(device=stored.device).manual_seed(seed)
    out = []
    with tqdm(total=len(stored), desc=f"IWAE k={k}", unit="ex", disable=None if progress else True,
              leave=False) as bar:
        for s in range(0, len(stored), batch_size):
            x = data.features(stored[s : s + batch_size])
            out.append(-iwae_log_px(model, x, k, gen, max_rows, labels_for(model, data, split, s, s + batch_size)).double())
            bar.update(len(x))
    return torch.cat(out)


@cpu_matmul()
def evaluate_model(
    model: LatentModel,
    data: Dataset,
    iwae_k: int = DEFAULT_IWAE_K,
    batch_size: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """All test-split metrics as one flat dict (the ``vaekit evaluate --json`` object).

    For an AE the bound metrics (loss, kl, nll_iwae, bits_per_dim, kl_per_dim, active_units)
    are absent; ``recon`` (its training loss) and the error statistics remain.
    """
    model.train(False)
    dims = math.prod(data.shape)
    elbo = elbo_metrics(model, data, "test", batch_size, seed)
    errors = reconstruction_errors(model, data, "test", batch_size).double()
    stats = {
        "mse_mean": float(errors.mean()), "mse_median": float(errors.median()),
        "mse_std": float(errors.std()) if len(errors) > 1 else None,
        "mse_min": float(errors.min()), "mse_max": float(errors.max()),
    }
    if not model.variational:
        units = "nats" if model.likelihood.is_density else "squared error"
        return {"recon": elbo["recon"], "n": elbo["n"], "units": units, **stats}
    density = model.likelihood.is_density
    metrics = {**elbo, "units": "nats" if density else "squared error (+ KL in nats); not a log-likelihood"}
    if density:
        metrics["normalised"] = model.likelihood.normalised_on(data.features(data.test_x))
        metrics["elbo_bits_per_dim"] = elbo["loss"] / (dims * math.log(2))
    if iwae_k > 0:
        per_example = iwae_nll(model, data, iwae_k, "test", seed=seed, progress=progress)
        nll = float(per_example.mean())
        metrics.update(nll_iwae=nll, nll_iwae_se=standard_error(per_example), iwae_k=iwae_k)
        if density:
            metrics["bits_per_dim"] = nll / (dims * math.log(2))
    codes = latent_means(model, data, "test", batch_size)
    metrics["active_units"] = active_units(codes)
    metrics["latent_dim"] = model.latent_dim
    if model.classes:  # the bounds are on log p(x | y): each example's label is given
        metrics["conditional_classes"] = model.classes
    layers = getattr(model, "dims", None)
    if layers:  # a hierarchy: KL and active units per latent layer, bottom first
        starts = [sum(layers[:i]) for i in range(len(layers))]
        metrics["latent_dims"] = list(layers)
        metrics["active_units_per_layer"] = [active_units(codes[:, s : s + d]) for s, d in zip(starts, layers)]
        if "kl_per_dim" in metrics:
            metrics["kl_per_layer"] = [sum(metrics["kl_per_dim"][s : s + d]) for s, d in zip(starts, layers)]
    return {**metrics, **stats}


def run_data(run: Run, data_dir: str | None = None, progress: bool = True) -> Dataset:
    """The data set a run was trained on, read from ``data_dir`` when given (the data moved, or another
    machine): the IDX files' folder, or the folder that now holds the run's image folder or vectors file."""
    cfg = relocate(run.config.data, data_dir)
    data = load_dataset(cfg, progress=progress)
    data.check_shape(run.data_shape, str(run.path))
    check_data_record(run.path, data)
    return data


MIN_GENERATION = 10  # samples and test examples --generation compares, at least (k-NN balls need k + 1)
GENERATION_N = 10_000  # --generation-n's default


@cpu_matmul()
def evaluate_run(
    run_dir: str | Path,
    data: Dataset | None = None,
    device: str = "cpu",
    iwae_k: int = DEFAULT_IWAE_K,
    progress: bool = True,
    data_dir: str | None = None,
    save: bool = True,
    generation: bool = False,
    generation_n: int = GENERATION_N,
    sampler: str = "prior",
    components: int = 10,
) -> dict[str, Any]:
    """Test-split metrics of the model saved in ``run_dir``, with beta = 1 whatever it trained with.

    ``data_dir`` says where the data files are on this machine, if not where the run found them.
    With ``save``, they are kept in RUN_DIR/metrics.json and the model card (README.md) shows them;
    a folder that cannot be written (read-only copy) only loses that. With ``generation``, also FID,
    precision and recall of ``generation_n`` samples (from the prior or the fitted mixture: ``sampler``).
    """
    from .samplers import DEFAULT_COMPONENTS, check_sampler

    iwae_k = whole_number(iwae_k, "--iwae-k", lo=0)
    if generation:
        generation_n = whole_number(generation_n, "--generation-n", lo=10)
        check_sampler(sampler, components)
    elif (generation_n, sampler, components) != (GENERATION_N, "prior", DEFAULT_COMPONENTS):
        raise VaekitError("generation_n, sampler and components apply only with generation=True (--generation)")
    run_dir = user_path(run_dir, "run_dir")
    run = load_run(run_dir, device)
    data = (data or run_data(run, data_dir, progress)).to(device)
    if generation and len(data.test_x) < MIN_GENERATION:
        raise VaekitError(f"--generation compares at least {MIN_GENERATION} samples with as many test examples; "
                          f"{data.name} has {counted(len(data.test_x), 'test example')}")
    metrics = evaluate_model(run.model, data, iwae_k, run.config.train.eval_batch_size, run.config.seed, progress)
    metrics = {**metrics, "epoch": run.epoch, "model": run.config.model.kind,
               "likelihood": run.config.model.likelihood, "dataset": data.name}  # where the data were read now
    if generation:
        metrics.update(_generation(run, data, generation_n, sampler, components, data_dir, progress))
    if save:
        why = save_metrics(run_dir, metrics)
        if why:
            metrics["not_saved"] = why
    return metrics


def _generation(run: Run, data: Dataset, n: int, sampler: str, components: int, data_dir: str | None,
                progress: bool) -> dict[str, Any]:
    from .generation import generation_metrics
    from .samplers import gmm_for_run

    def log(line: str) -> None:  # stderr: stdout may carry --json
        if progress:
            print(line, file=sys.stderr)

    gmm = gmm_for_run(run.path, components, data_dir, log=log) if sampler == "gmm" else None
    gen = torch.Generator(device=run.model.device).manual_seed(run.config.seed)
    n = min(n, len(data.test_x))
    x = generate_for_test(run.model, data, n, sampler, gen, gmm)
    asked = labels_for(run.model, data, "test", 0, n)
    out = generation_metrics(x, data, run.config.seed, log, asked)
    return {**out, "generation_sampler": sampler}


@torch.no_grad()
def generate_for_test(model: LatentModel, data: Dataset, n: int, sampler: str, generator: torch.Generator,
                      gmm: GaussianMixture | None = None) -> torch.Tensor:
    """n decoded samples (expected values) to compare with the first n test examples, 1,000 at a time;
    a conditional model generates the class of the test example each is compared with."""
    from .samplers import sample_codes

    def chunk(i: int) -> torch.Tensor:
        y = labels_for(model, data, "test", i, min(n, i + 1000))
        return model.mean(model.decode(sample_codes(model, min(1000, n - i), sampler, generator, gmm, y), y))

    return torch.cat([chunk(i) for i in range(0, n, 1000)])


def save_metrics(run_dir: Path, metrics: dict[str, Any]) -> str | None:
    """metrics.json and a refreshed model card, under the run's lock; the reason where they could not
    be written (a read-only copy, a folder in use by training): the metrics themselves are not lost."""
    from .modelcard import METRICS, write_model_card
    from .runlock import run_lock

    try:
        with run_lock(run_dir, "evaluate"):
            atomic_write(run_dir / METRICS, strict_json(metrics, indent=2) + "\n")
            write_model_card(run_dir)
    except (RunFolderError, OutputError) as e:  # a read-only or full disk: each file is whole, old or new
        return str(e)
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC):
            raise
        return f"{run_dir}: {e.strerror}"
    return None
