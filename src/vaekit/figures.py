"""Every plot of a run folder: computes the arrays once (codes, errors, samples) and hands them
to the pure functions in ``plots``. ``vaekit plot RUN_DIR`` is ``plot_run``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from matplotlib.figure import Figure

from . import plots
from .checkpoint import Run, load_run, read_history
from .data import Dataset
from .errors import VaekitError, did_you_mean, line_sink, show, whole_number
from .evaluate import elbo_metrics, labels_for, latent_means, paired_loss, reconstruction_errors, run_data
from .files import output_folder, user_path

PLOTS_DIR = "plots"


@dataclass
class RunView:
    """A loaded run with its data and lazily computed arrays shared by the plots."""

    run: Run
    data: Dataset
    seed: int = 0
    grid_dims: tuple[int, int] | None = None  # latent grid over these two dimensions (else PCA plane)

    @property
    def model(self):
        return self.run.model

    @property
    def images(self) -> bool:
        return self.data.is_image

    @cached_property
    def codes(self) -> torch.Tensor:
        return latent_means(self.model, self.data, "test")

    @cached_property
    def surface(self):
        """What the latent pictures show: the model, for a hierarchy its top layer, for a conditional
        model the class of the first test example."""
        from .models.base import FixedClass
        from .models.hvae import TopLayer

        if self.model.classes:
            return FixedClass(self.model, self.surface_class)
        return TopLayer(self.model) if getattr(self.model, "dims", None) else self.model

    @property
    def surface_class(self) -> int:
        """The class a conditional model's latent pictures decode as: the first test example's (0 without data)."""
        if not self.model.classes:
            return -1
        return int(self.data.test_y[0]) if self.data is not None and self.data.test_y is not None else 0

    @cached_property
    def surface_codes(self) -> torch.Tensor:
        """The test codes in the pictures' latent space (a hierarchy's top layer)."""
        return self.codes[:, -self.surface.latent_dim :]

    @cached_property
    def surface_kl(self) -> list[float] | None:
        return None if self.kl_per_dim is None else self.kl_per_dim[-self.surface.latent_dim :]

    @cached_property
    def labels(self) -> np.ndarray | None:
        return None if self.data.test_y is None else self.data.test_y.cpu().numpy()

    def test_x(self, n: int) -> torch.Tensor:
        return self.data.features(self.data.test_x[:n])

    def test_y(self, n: int) -> torch.Tensor | None:
        """The first n test labels where the model is conditional on them, else None."""
        return labels_for(self.model, self.data, "test", 0, n)

    def generator(self) -> torch.Generator:
        return torch.Generator(device=self.run.model.device).manual_seed(self.seed)

    @cached_property
    def kl_per_dim(self) -> list[float] | None:
        """Test KL per latent dimension; None for a prior without one (e.g. the VampPrior)."""
        return elbo_metrics(self.model, self.data, "test", seed=self.seed).get("kl_per_dim")

    def principal_plane(self) -> tuple[torch.Tensor, torch.Tensor, tuple[str, str]]:
        """Center and the top two principal directions of the test codes (for > 2-d latents)."""
        center, axes = plots.principal_plane(self.surface_codes)
        return center.float(), axes.float(), ("principal direction 1", "principal direction 2")


def _curves(v: RunView) -> Figure | None:
    """The training curves; a damaged history.jsonl costs only this figure, said in a warning."""
    try:
        history = read_history(v.run.path)
    except VaekitError as e:
        warnings.warn(f"{e}; the training curves are left out", stacklevel=2)
        return None
    return plots.training_curves(history) if history else None


def _kl_dims(v: RunView) -> Figure | None:
    return plots.kl_per_dimension(v.kl_per_dim) if v.model.variational and v.kl_per_dim is not None else None


def _scatter(v: RunView) -> Figure:
    return plots.latent_scatter(v.surface_codes, v.labels, v.data.class_names, seed=v.seed)


def _grid(v: RunView) -> Figure | None:
    """The VAE's grid spans [-3, 3] of its prior; an AE has no prior, so its grid spans where its
    codes actually lie (1st to 99th percentile around their median), and the title says so."""
    if not v.images:
        return None
    d = v.surface.latent_dim
    if v.grid_dims is not None:
        i, j = v.grid_dims
        center, basis, names = torch.zeros(d), torch.eye(d)[[i, j]], (f"z[{i}]", f"z[{j}]")
    elif d <= 2:
        center, basis, names = torch.zeros(d), torch.eye(d)[: min(d, 2)], ("z[0]", "z[1]")
    else:
        center, basis, names = v.principal_plane()
    if v.model.variational:
        return _as_class(v, plots.latent_grid(v.surface, 15, 3.0, basis=basis, center=center, axis_names=names))
    codes = v.surface_codes.cpu().float()
    if v.grid_dims is not None or d <= 2:
        center = codes.median(0).values
    coords = (codes - center) @ basis.T
    extent = float(torch.quantile(coords.abs().flatten(), 0.99).clamp_min(1e-3))
    names = tuple(f"{n} - median code" for n in names)
    fig = plots.latent_grid(v.surface, 15, extent, basis=basis, center=center, axis_names=names)
    fig.axes[0].set_title(f"AE: decoded {'line' if d == 1 else 'grid'} over the codes' range (99% within "
                          f"±{extent:.3g} of their median)")
    return _as_class(v, fig)


def _as_class(v: RunView, fig: Figure) -> Figure:
    """A conditional model's latent picture says which class it decodes as."""
    if v.model.classes:
        name = plots.class_label(v.data.class_names, v.surface_class, limit=60)
        named = "" if name == str(v.surface_class) else f" ({name})"
        fig.axes[0].set_title(f"{fig.axes[0].get_title()}\ndecoded as class {v.surface_class}{named}")
    return fig


def _prior(v: RunView) -> str:
    return {"normal": "N(0, I)", "vamp": "the VampPrior", "hierarchical": "the top-down prior"}.get(
        getattr(v.model.prior, "name", ""), "the prior")


def _samples(v: RunView) -> Figure | None:
    prior = _prior(v)
    if not v.images:
        return None
    if v.model.classes:  # one row per class; each column decodes one z as every class
        from .grids import class_rows

        codes, y = class_rows(v.model, v.model.prior.sample(8, v.model, v.generator()))
        with torch.no_grad():
            images = v.model.mean(v.model.decode(codes, y))
        return plots.image_grid_figure(images, f"samples: z ~ {prior}, one row per class, one z per column")
    return plots.image_grid_figure(v.model.sample(64, v.generator()), f"samples: z ~ {prior}, decoded")


VECTOR_POINTS = 2000  # test vectors (and as many samples) in a vector run's pictures


def _real_vs_generated(v: RunView) -> Figure | None:
    if v.images:
        return plots.real_vs_generated(v.test_x(16), v.model.sample(16, v.generator()), prior=_prior(v))
    n = min(len(v.data.test_x), VECTOR_POINTS)  # a conditional model generates the test examples' classes
    with torch.no_grad():
        generated = v.model.sample(n, v.generator(), v.test_y(n))
    return plots.vector_real_vs_generated(v.test_x(n), generated, _prior(v))


def _reconstructions(v: RunView) -> Figure | None:
    n = 10 if v.images else min(len(v.data.test_x), VECTOR_POINTS)
    x = v.test_x(n)
    labels = None if v.labels is None else v.labels[:n]
    draw = plots.reconstructions if v.images else plots.vector_reconstructions
    return draw(x, v.model.reconstruct(x, v.test_y(n)), labels)


def _error_histogram(v: RunView) -> Figure:
    return plots.error_histogram(reconstruction_errors(v.model, v.data, "test"))


def _interpolation(v: RunView) -> Figure | None:
    if len(v.data.test_x) < 2:
        return None
    x = v.test_x(len(v.data.test_x))
    j = 1
    if v.labels is not None:  # two examples of different classes make a more telling path
        j = int(np.argmax(v.labels != v.labels[0])) or 1
    y = v.test_y(len(v.data.test_x))
    draw = plots.interpolation if v.images else plots.vector_interpolation
    return draw(v.model, x[0], x[j], y_ab=None if y is None else (y[0], y[j]))


def _traversals(v: RunView) -> Figure | None:
    """VAE: each coordinate swept over [-3, 3] of the prior; AE: over its codes' 1st-99th percentile.
    Images: the decoded images; vectors: heat maps of how the decoded vector changes."""
    draw = plots.traversals if v.images else plots.vector_traversals
    dims = list(range(v.surface.latent_dim))
    if v.model.variational:
        order = v.surface_kl or v.surface_codes.var(0).tolist()  # a mixture prior: by the codes' variance
        dims = sorted(dims, key=lambda d: -order[d])
        return _as_class(v, draw(v.surface, v.surface_codes.mean(0), dims[:8]))
    codes = v.surface_codes.cpu().float()
    lo, hi = torch.quantile(codes, 0.01, dim=0), torch.quantile(codes, 0.99, dim=0)
    dims = sorted(dims, key=lambda d: -float(hi[d] - lo[d]))[:8]
    spans = {d: np.linspace(float(lo[d]), float(hi[d]), 9) for d in dims}
    return _as_class(v, draw(v.surface, v.surface_codes.mean(0), dims, spans=spans))


NOT_APPLICABLE = {"curves": "no readable training history", "kl-per-dim": "an AE, or a prior without a KL per dimension",
                  "interpolation": "fewer than 2 test examples", "latent-grid": "images only", "samples": "images only"}

PLOTS: dict[str, Callable[[RunView], Figure | None]] = {
    "curves": _curves,
    "kl-per-dim": _kl_dims,
    "latent-scatter": _scatter,
    "latent-grid": _grid,
    "samples": _samples,
    "real-vs-generated": _real_vs_generated,
    "reconstructions": _reconstructions,
    "error-histogram": _error_histogram,
    "interpolation": _interpolation,
    "traversals": _traversals,
}


def open_run(run_dir: str | Path, data: Dataset | None = None, data_dir: str | None = None,
             device: str = "cpu") -> RunView:
    run = load_run(run_dir, device)
    data = data or run_data(run, data_dir, progress=False)
    return RunView(run, data.to(run.model.device), seed=run.config.seed)


def plot_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    only: str | list[str] | None = None,
    view: RunView | None = None,
    data_dir: str | None = None,
    log: Callable[[str], None] = lambda s: None,
    grid_dims: tuple[int, int] | None = None,
    device: str = "cpu",
) -> dict[str, Path]:
    """Write every plot (or those in ``only``: one name or a list) as ``<out_dir>/<name>.png``;
    default out: RUN_DIR/plots.

    ``grid_dims`` puts the latent grid over two chosen dimensions instead of the PCA plane.
    """
    from .runlock import writing_into

    only, log = ([only] if isinstance(only, str) else only), line_sink(log)
    unknown = sorted(set(only or []) - set(PLOTS), key=str)
    if unknown:
        raise VaekitError(f"unknown plot '{show(unknown[0])}'{did_you_mean(unknown[0], PLOTS)}; choose from "
                          f"{', '.join(PLOTS)}")
    if grid_dims is not None and only is not None and "latent-grid" not in only:
        raise VaekitError("--grid-dims (grid_dims=) applies only with the latent grid (no --only, or --only latent-grid)")
    run_dir = user_path(run_dir, "run_dir")
    out = output_folder(out_dir, "--out") if out_dir is not None else run_dir / PLOTS_DIR
    with writing_into(run_dir, [out], "plot", "--out DIR", data_dir):
        return _plot_into(out, only, view or open_run(run_dir, data_dir=data_dir, device=device), log, grid_dims)


def _plot_into(out: Path, only: list[str] | None, view: RunView, log: Callable[[str], None],
               grid_dims: tuple[int, int] | None) -> dict[str, Path]:
    if grid_dims is not None:
        i, j = grid_dims
        d = view.surface.latent_dim
        if not (0 <= i < d and 0 <= j < d and i != j):
            raise VaekitError(f"--grid-dims {i} {j}: need two different dimensions in 0..{d - 1}")
        view.grid_dims = (i, j)
    written = {}
    for name, make in PLOTS.items():
        if only and name not in only:
            continue
        fig = make(view)
        if fig is None:
            log(f"  {name}: not applicable to this run ({NOT_APPLICABLE.get(name, 'vector data')})")
            continue
        written[name] = plots.save_figure(fig, out / f"{name}.png")
        log(f"  {name}: {written[name]}")
    return written


def compare_runs(run_a: str | Path, run_b: str | Path, out: str | Path | None = None, n: int = 8,
                 data_dir: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Latent scatters of two runs side by side and both decoding the same z (e.g. AE vs VAE), as
    ``out`` (default RUN_A/plots/compare.png). Both runs are encoded on run A's test data. Returns
    each run's latent range and std (``latents``), the figure's path (``plot``) and, for two VAEs with a
    density, both negative ELBOs on that test set with their paired difference (``negative_elbo``)."""
    from .files import output_file
    from .runlock import outside_the_data, writing_into

    n = whole_number(n, "n", hi=64)
    run_a, run_b = user_path(run_a, "run_a"), user_path(run_b, "run_b")
    out = output_file(out, (".png",), "-o") if out is not None else run_a / PLOTS_DIR / "compare.png"
    outside_the_data(run_b, [out], "-o", data_dir)
    with writing_into(run_a, [out], "compare", "-o FILE.png", data_dir):
        return _compare_into(out, run_a, run_b, n, data_dir, device)


def _compare_into(out: Path, run_a: Path, run_b: Path, n: int, data_dir: str | None,
                  device: str) -> dict[str, Any]:
    a = open_run(run_a, data_dir=data_dir, device=device)
    b = load_run(run_b, device)
    if b.data_shape != a.run.data_shape:
        raise VaekitError(f"{run_b}: its data have shape {b.data_shape}, {run_a} has {a.run.data_shape}; "
                          "compare runs on the same data")
    if b.model.classes and (a.data.test_y is None or int(a.data.test_y.max()) >= b.model.classes):
        raise VaekitError(f"{run_b}: a conditional model of {b.model.classes} classes, and {run_a}'s test data "
                          "have no labels it knows to give it")
    names = [run_a.name, run_b.name] if run_a.name != run_b.name else [str(run_a), str(run_b)]
    models = [a.model, b.model]
    codes = [latent_means(m, a.data, "test").cpu().numpy() for m in models]
    generated = None
    if a.images and a.model.latent_dim == b.model.latent_dim:  # other sizes cannot decode the same z
        z = torch.randn(n, a.model.latent_dim, generator=torch.Generator().manual_seed(a.seed))
        generated = [m.mean(m.decode(z.to(m.device), m.default_labels(n))).detach().cpu().numpy() for m in models]
    fig = plots.compare_latents(codes, generated, names, a.labels, a.data.class_names)
    plots.save_figure(fig, out)
    result: dict[str, Any] = {"latents": {name: {"min": float(c.min()), "max": float(c.max()), "std": float(c.std())}
                                          for name, c in zip(names, codes)}, "plot": str(out)}
    if all(m.variational and m.likelihood.is_density for m in models):
        result["negative_elbo"] = paired_loss(a.model, b.model, a.data, seed=a.seed)
        result["same_data"] = _same_data(run_a, run_b, a.data)
    return result


def _same_data(run_a: Path, run_b: Path, data: Any) -> bool | None:
    """Whether run B was trained on run A's data and split (None: B predates data.json), so that A's
    test examples are held out from B too; a warning says when they are not."""
    from .checkpoint import recorded_fingerprint
    from .data import fingerprint

    theirs = recorded_fingerprint(run_b)
    if theirs is None:
        return None
    if theirs != fingerprint(data):
        warnings.warn(f"{run_b} was trained on other data or another split than {run_a}'s (data.json "
                      "fingerprints differ): B's negative ELBO on A's test examples is not a held-out figure for B",
                      stacklevel=2)
        return False
    return True
