"""Plots as pure functions: arrays (and, where decoding is the point, a model) in, a matplotlib
``Figure`` out. No pyplot state; ``save_figure`` writes a PNG of exactly figsize x DPI pixels.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from .errors import as_text
from .files import write_via_buffer
from .models import LatentModel
from .models.base import blend_labels

DPI = 100
TSNE_ITERATIONS = 500
TRAIN_COLOR, TEST_COLOR = "#1f77b4", "#d62728"


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Render ``fig`` as a PNG and write it atomically (a crash never leaves a half-written plot).
    Every text in it (titles, legends, ticks: names of runs, classes and files) is made drawable first."""
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        text.set_text(as_text(text.get_text()))
    return write_via_buffer(path, lambda buf: fig.savefig(buf, dpi=DPI, format="png"))


def _np(a: Tensor | np.ndarray) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)


def _show(ax: Any, image: np.ndarray, cmap: str = "gray", **kw: Any) -> Any:
    """Draw one (C, H, W) image in [0, 1] without axes."""
    img = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    ax.set_axis_off()
    return ax.imshow(np.clip(img, 0, 1) if cmap == "gray" else img, cmap=cmap if img.ndim == 2 else None,
                     vmin=0, vmax=kw.pop("vmax", 1), interpolation="nearest", **kw)


def _tile(images: np.ndarray, ncol: int) -> np.ndarray:
    """(N, C, H, W) -> one (C, rows*H, ncol*W) mosaic with 1-pixel white gaps."""
    n, c, h, w = images.shape
    nrow = math.ceil(n / ncol)
    canvas = np.ones((c, nrow * (h + 1) - 1, ncol * (w + 1) - 1), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, ncol)
        canvas[:, r * (h + 1) : r * (h + 1) + h, col * (w + 1) : col * (w + 1) + w] = images[i]
    return canvas


# --- training --------------------------------------------------------------------------


def training_curves(history: Sequence[dict[str, Any]]) -> Figure:
    """Total, reconstruction and KL (train and test), KL/recon ratio, per-dimension KL, beta."""
    fig = Figure(figsize=(15, 8), layout="constrained")
    axes = fig.subplots(2, 3)
    epochs = [r["epoch"] for r in history]
    col = lambda key: np.array([r.get(key, np.nan) for r in history], dtype=float)  # noqa: E731
    for ax, part, title in [(axes[0, 0], "loss", "total loss (train: recon + β·KL; test: β = 1)"),
                            (axes[0, 1], "recon", "reconstruction"), (axes[0, 2], "kl", "KL(q(z|x) ‖ p(z))")]:
        ax.plot(epochs, col(f"train_{part}"), "o-", ms=3, color=TRAIN_COLOR, label="train")
        ax.plot(epochs, col(f"test_{part}"), "s-", ms=3, color=TEST_COLOR, label="test")
        ax.set(title=title, xlabel="epoch", ylabel="nats per example")
        ax.grid(alpha=0.3)
        ax.legend()
    ax = axes[1, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        ax.plot(epochs, col("train_kl") / col("train_recon"), "o-", ms=3, color=TRAIN_COLOR, label="train")
        ax.plot(epochs, col("test_kl") / col("test_recon"), "s-", ms=3, color=TEST_COLOR, label="test")
    ax.set(title="KL / reconstruction", xlabel="epoch", ylabel="ratio")
    ax.grid(alpha=0.3)
    ax.legend()
    ax = axes[1, 1]
    per_dim = [r.get("test_kl_per_dim") for r in history]
    same_width = all(p is not None for p in per_dim) and len({len(p) for p in per_dim}) == 1  # (an edited file's may not)
    if per_dim and same_width and np.any(np.asarray(per_dim, dtype=float) > 0):
        grid = np.asarray(per_dim, dtype=float).T
        im = ax.imshow(grid, aspect="auto", cmap="viridis", origin="lower", interpolation="nearest",
                       extent=(epochs[0] - 0.5, epochs[-1] + 0.5, -0.5, grid.shape[0] - 0.5))
        fig.colorbar(im, ax=ax, label="nats")
        ax.set(title="test KL per latent dimension", xlabel="epoch", ylabel="latent dimension")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        why = "per-dimension KL not recorded" if np.nansum(col("test_kl")) > 0 else "no KL term (autoencoder)"
        ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        ax.set(title="test KL per latent dimension")
    ax = axes[1, 2]
    betas = col("beta")
    ax.plot(epochs, betas, "o-", ms=3, color="#555555", label="β")
    top = float(np.nanmax(betas)) if np.isfinite(betas).any() else 1.0  # a record may lack it (null)
    ax.set(title="β (KL weight)", xlabel="epoch", ylabel="β", ylim=(-0.05, max(1.05, top * 1.05)))
    ax.grid(alpha=0.3)
    lr = col("lr")
    if np.isfinite(lr).any():  # runs since the lr schedules record the rate at each epoch's end
        twin = ax.twinx()
        twin.plot(epochs, lr, "-", color=TEST_COLOR, label="learning rate")
        twin.set(ylabel="learning rate", ylim=(0, float(np.nanmax(lr)) * 1.05))
        ax.set(title="β (KL weight) and learning rate")
        handles, labels = (a + b for a, b in zip(ax.get_legend_handles_labels(), twin.get_legend_handles_labels()))
        ax.legend(handles, labels, loc="center right", fontsize="small")
    return fig


def compare_curves(histories: dict[str, Sequence[dict[str, Any]]], key: str = "test_loss",
                   ylabel: str = "test negative ELBO (nats per example)") -> Figure:
    """One run's ``key`` per epoch against its cumulative training minutes, for several runs (what
    each buys per minute of compute); the y axis is fitted to the final values, so the ends are
    legible beside the steep start. Runs without history are left out."""
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax = fig.subplots()
    finals = []
    colours = [c["color"] for c in matplotlib.rcParams["axes.prop_cycle"]]
    for i, (name, history) in enumerate((n, h) for n, h in histories.items() if h):
        minutes = np.cumsum([r.get("train_seconds", r.get("seconds", np.nan)) for r in history]) / 60
        values = np.array([r.get(key, np.nan) for r in history], dtype=float)
        style = ("-", "--", ":", "-.")[i // len(colours) % 4]  # past the colours, no two runs look alike
        ax.plot(minutes, values, style, color=colours[i % len(colours)], lw=1.5,
                label=f"{name} ({values[-1]:.2f} after {len(history)} epochs)")
        finals.append(values[np.isfinite(values)][-1] if np.isfinite(values).any() else np.nan)
    if np.isfinite(finals).any():
        low, high = np.nanmin(finals), np.nanmax(finals)
        ax.set_ylim(low - 0.15 * (high - low + 1), high + 2.5 * (high - low + 1))
    ax.set(xlabel="training minutes", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def kl_per_dimension(kl_per_dim: Sequence[float], named: int = 64) -> Figure:
    """Final KL per latent dimension, sorted, with the collapse threshold marked. Each bar is named
    by its dimension up to ``named`` dimensions; past that (a spatial latent has hundreds) the bars
    are too narrow for names, so the axis counts ranks and its label names the largest few."""
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    kl = np.asarray(kl_per_dim, dtype=float)
    order = np.argsort(-kl)
    ax.bar(range(len(kl)), kl[order], color=["#2ca02c" if v > 0.01 else "#999999" for v in kl[order]])
    if len(kl) <= named:
        ax.set_xticks(range(len(kl)), [str(i) for i in order], fontsize=8 if len(kl) <= 32 else 6,
                      rotation=0 if len(kl) <= 32 else 90)
        where = "latent dimension"
    else:
        where = (f"rank of {len(kl)} latent dimensions by KL; the largest: dims "
                 + ", ".join(str(i) for i in order[:8]))
    ax.axhline(0.01, color="red", ls="--", lw=1, label="0.01 nats: collapsed below")
    ax.set(title="KL per latent dimension (test)", xlabel=where, ylabel="nats")
    ax.legend()
    return fig


# --- latent space ----------------------------------------------------------------------


def embed_2d(codes: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """Two coordinates per code: the codes themselves (a 1-d code on the line y = 0), PCA, or t-SNE
    (scikit-learn). Codes of at most 2 values, or too few codes to fit a projection to, are their own."""
    if method == "direct" or codes.shape[1] <= 2 or len(codes) < 4:
        xy = codes[:, :2]
        return xy if xy.shape[1] == 2 else np.c_[xy, np.zeros((len(xy), 2 - xy.shape[1]))]
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(codes)
    from sklearn.manifold import TSNE

    # 500 iterations, not scikit-learn's 1000: on its 1,797 digits the map's 5-NN accuracy was the
    # same (0.977 against 0.976) in half the time (4.2 s against 8.5 s on 2 cores)
    import inspect

    iterations = "max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter"  # before 1.5
    return TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30.0, (len(codes) - 1) / 3),
                **{iterations: TSNE_ITERATIONS}).fit_transform(codes)


LEGEND_CLASSES = 20  # up to this many classes get a colour each and a legend; more, a colour scale
NAME_LIMIT = 24  # characters of a class name shown in a figure (a folder name can be hundreds)


def class_label(class_names: Sequence[str] | None, c: Any, limit: int = NAME_LIMIT) -> str:
    """Class ``c``'s name as a figure shows it: its number where the data name none, long names cut
    with an ellipsis (a 200-character folder name in a legend collapsed the plot's axes)."""
    name = class_names[int(c)] if class_names is not None and 0 <= int(c) < len(class_names) else str(c)
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _scatter(ax: Any, xy: np.ndarray, labels: np.ndarray | None, class_names: Sequence[str] | None) -> None:
    size = float(np.clip(4000 / max(len(xy), 1), 2, 20))  # a few points drawn large enough to see, thousands small
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, alpha=0.5, color="#1f77b4")
        return
    classes = np.unique(labels)
    if len(classes) > LEGEND_CLASSES:  # a legend of hundreds of names would crowd out the plot, and colours repeat
        points = ax.scatter(xy[:, 0], xy[:, 1], s=size, alpha=0.6, c=labels, cmap="turbo")
        ax.figure.colorbar(points, ax=ax, label=f"class number ({len(classes)} classes shown)", shrink=0.8)
        return
    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for i, c in enumerate(classes):
        m = labels == c
        name = class_label(class_names, c)
        ax.scatter(xy[m, 0], xy[m, 1], s=size, alpha=0.5, color=cmap(i % cmap.N), label=name)
    ax.legend(markerscale=max(1.0, 10 / size), fontsize=7, loc="best")


def latent_scatter(
    codes: Tensor | np.ndarray,
    labels: Tensor | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    title: str = "test-set posterior means",
    tsne_points: int = 2000,
    seed: int = 0,
) -> Figure:
    """2-d codes directly; otherwise PCA and t-SNE side by side (t-SNE on a fixed subsample). Codes
    with a non-finite value are counted in the title, not drawn."""
    codes = _np(codes).astype(np.float64)
    lab = None if labels is None else _np(labels)
    finite = np.isfinite(codes).all(1)
    if not finite.all():
        title = f"{title} ({int((~finite).sum())} of {len(codes)} not finite, left out)"
        codes, lab = codes[finite], None if lab is None else lab[finite]
    if codes.shape[1] <= 2:
        fig = Figure(figsize=(7, 6.5), layout="constrained")
        ax = fig.subplots()
        _scatter(ax, embed_2d(codes, "direct"), lab, class_names)
        ax.set(title=title, xlabel="z[0]", ylabel="z[1]")
        ax.grid(alpha=0.2)
        return fig
    fig = Figure(figsize=(13, 6.5), layout="constrained")
    ax_pca, ax_tsne = fig.subplots(1, 2)
    _scatter(ax_pca, embed_2d(codes, "pca", seed), lab, class_names)
    ax_pca.set(title=f"{title}: PCA", xlabel="PC 1", ylabel="PC 2")
    pick = np.random.default_rng(seed).permutation(len(codes))[:tsne_points]
    _scatter(ax_tsne, embed_2d(codes[pick], "tsne", seed), None if lab is None else lab[pick], class_names)
    ax_tsne.set(title=f"{title}: t-SNE ({len(pick)} points)", xticks=[], yticks=[])
    return fig


@torch.no_grad()
def latent_grid(
    model: LatentModel,
    n: int = 15,
    extent: float = 3.0,
    basis: Tensor | np.ndarray | None = None,
    center: Tensor | np.ndarray | None = None,
    axis_names: tuple[str, str] = ("z[0]", "z[1]"),
) -> Figure:
    """Decode an n x n grid over [-extent, extent]^2 (seed 001's 15 x 15 manifold); a 1-d latent
    gives one row of n.

    For latents above 2-d the plane is ``center + a * basis[0] + b * basis[1]`` (e.g. the top
    two principal directions of the codes); by default dimensions 0 and 1 through the origin.
    """
    d = model.latent_dim
    dev = model.device
    b = torch.eye(d, device=dev)[:2] if basis is None else torch.as_tensor(basis, dtype=torch.float32, device=dev)
    c = torch.zeros(d, device=dev) if center is None else torch.as_tensor(center, dtype=torch.float32, device=dev)
    vals = torch.linspace(-extent, extent, n, device=dev)
    if d == 1:  # a line, not a grid: a second axis would repeat each row n times
        z = c + vals.reshape(-1, 1) * b[:1]
    else:
        a_, b_ = torch.meshgrid(vals, vals.flip(0), indexing="xy")  # rows: top = +extent
        z = c + a_.reshape(-1, 1) * b[0] + b_.reshape(-1, 1) * b[1]
    images = _np(model.mean(model.decode(z)))
    mosaic = _tile(images, n)
    h, w = mosaic.shape[1:]
    fig = Figure(figsize=(9, 9 if d > 1 else 9 * h / w + 1), layout="constrained")
    ax = fig.subplots()
    _show(ax, mosaic)
    ax.set_axis_on()
    ticks = np.linspace(-extent, extent, 5)
    ax.set_xticks((ticks + extent) / (2 * extent) * (w - 1), [f"{t:.1f}" for t in ticks])
    if d == 1:
        ax.set_yticks([])
        ax.set(title=f"decoded latent line, {n} points over [-{extent:g}, {extent:g}]", xlabel=axis_names[0])
        return fig
    ax.set_yticks((ticks + extent) / (2 * extent) * (h - 1), [f"{t:.1f}" for t in ticks[::-1]])
    ax.set(title=f"decoded latent grid, {n} x {n} over [-{extent:g}, {extent:g}]²",
           xlabel=axis_names[0], ylabel=axis_names[1])
    return fig


# --- images ----------------------------------------------------------------------------


def image_grid_figure(images: Tensor | np.ndarray, title: str, ncol: int = 8) -> Figure:
    """A grid of images (N, C, H, W) in [0, 1] with a title."""
    images = _np(images)
    nrow = math.ceil(len(images) / ncol)
    fig = Figure(figsize=(ncol * 1.1, nrow * 1.1 + 0.5), layout="constrained")
    _show(fig.subplots(), _tile(images, ncol))
    fig.suptitle(title)
    return fig


def real_vs_generated(real: Tensor | np.ndarray, generated: Tensor | np.ndarray, ncol: int = 8,
                      prior: str = "N(0, I)") -> Figure:
    """Real test images above decoded prior samples."""
    real, generated = _np(real)[:ncol * 2], _np(generated)[:ncol * 2]
    fig = Figure(figsize=(ncol * 1.1, 5), layout="constrained")
    top, bottom = fig.subplots(2, 1)
    _show(top, _tile(real, ncol))
    top.set_title("real (test set)")
    _show(bottom, _tile(generated, ncol))
    bottom.set_title(f"generated (z ~ {prior})")
    return fig


def reconstructions(x: Tensor | np.ndarray, recon: Tensor | np.ndarray, labels: Sequence[Any] | None = None) -> Figure:
    """Originals, reconstructions and the absolute-error map under each, with per-image MSE."""
    x, recon = _np(x), _np(recon)
    n = len(x)
    fig = Figure(figsize=(n * 1.4, 4.6), layout="constrained")
    axes = fig.subplots(3, n, squeeze=False)
    err = np.abs(x - recon).mean(1, keepdims=True)
    for i in range(n):
        _show(axes[0, i], x[i])
        axes[0, i].set_title(f"label {labels[i]}" if labels is not None else "original", fontsize=8)
        _show(axes[1, i], recon[i])
        axes[1, i].set_title("reconstruction", fontsize=8)
        im = _show(axes[2, i], err[i], cmap="hot")
        axes[2, i].set_title(f"|error|, MSE {((x[i] - recon[i]) ** 2).mean():.3f}", fontsize=7)
    fig.colorbar(im, ax=axes[2, :].tolist(), shrink=0.8, label="|x - x̂|")
    return fig


def _feature_axis(shown: int, dim: int) -> str:
    """The label of an axis of vector features, of which the first ``shown`` are drawn."""
    return f"feature (the first {shown} of {dim})" if shown < dim else "feature"


def _rows(a: Tensor | np.ndarray) -> np.ndarray:
    a = _np(a).astype(np.float64)
    return a.reshape(len(a), -1)


def vector_real_vs_generated(real: Tensor | np.ndarray, generated: Tensor | np.ndarray, prior: str = "N(0, I)",
                             features: int = 32) -> Figure:
    """Vectors: the real test vectors and decoded prior samples on the real data's two principal
    directions, and each feature's mean and spread in both (the first ``features``)."""
    real, generated = _rows(real), _rows(generated)
    dim = real.shape[1]
    center = real.mean(0)
    axes = np.linalg.svd(real - center, full_matrices=False)[2][:2]
    if len(axes) < 2:  # one feature (or one direction of variation): the second coordinate is 0
        axes = np.vstack([axes, np.zeros((2 - len(axes), dim))])
    fig = Figure(figsize=(14, 5.5), layout="constrained")
    plane, marginals = fig.subplots(1, 2, width_ratios=[1, 1.5])
    for rows, label, colour in ((real, f"real (test set, n={len(real)})", "#1f77b4"),
                                (generated, f"generated (z ~ {prior}, decoded means; n={len(generated)})", "#d62728")):
        xy = (rows - center) @ axes.T
        plane.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.45, color=colour, label=label, linewidths=0)
    plane.set(title="on the real data's principal plane", xlabel="principal direction 1",
              ylabel="principal direction 2")
    plane.legend(loc="best", fontsize=8, markerscale=2)
    plane.grid(alpha=0.3)
    shown = min(dim, features)
    at = np.arange(shown)
    for rows, shift, label, colour in ((real, -0.15, "real", "#1f77b4"), (generated, 0.15, "generated", "#d62728")):
        marginals.errorbar(at + shift, rows.mean(0)[:shown], yerr=rows.std(0)[:shown], fmt="o", ms=3, capsize=2,
                           color=colour, label=label)
    marginals.set(title=f"mean ± standard deviation of each feature (the first {shown} of {dim})", xlabel="feature",
                  ylabel="value")
    marginals.legend(fontsize=8)
    marginals.grid(alpha=0.3)
    return fig


def vector_reconstructions(x: Tensor | np.ndarray, recon: Tensor | np.ndarray, labels: Sequence[Any] | None = None,
                           examples: int = 4, features: int = 128, points: int = 20_000) -> Figure:
    """Vectors: a few test vectors and their reconstructions feature by feature, and every test value
    against its reconstruction (on the line y = x where it is exact), with the share of variance kept (R²)."""
    x, recon = _rows(x), _rows(recon)
    dim, shown = x.shape[1], min(x.shape[1], features)
    fig = Figure(figsize=(15, 6), layout="constrained")
    grid = fig.add_gridspec(2, 3, width_ratios=[1, 1, 1.1])
    for i in range(min(examples, len(x))):
        ax = fig.add_subplot(grid[i // 2, i % 2])
        ax.plot(x[i, :shown], color="#1f77b4", lw=1, label="original")
        ax.plot(recon[i, :shown], color="#d62728", lw=1, ls="--", label="reconstruction")
        named = f", label {labels[i]}" if labels is not None else ""
        ax.set_title(f"test example {i}{named}: MSE {np.mean((x[i] - recon[i]) ** 2):.4g}", fontsize=9)
        ax.set_xlabel(_feature_axis(shown, dim), fontsize=8)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8)
    pairs = fig.add_subplot(grid[:, 2])
    flat_x, flat_r = x.ravel(), recon.ravel()
    keep = np.isfinite(flat_x) & np.isfinite(flat_r)
    flat_x, flat_r = flat_x[keep], flat_r[keep]
    spread = float(((flat_x - flat_x.mean()) ** 2).sum()) if flat_x.size else 0.0
    r2 = 1 - float(((flat_x - flat_r) ** 2).sum()) / spread if spread > 0 else float("nan")
    if flat_x.size > points:  # the picture of many values is the same as of a random share of them
        pick = np.random.default_rng(0).choice(flat_x.size, points, replace=False)
        flat_x, flat_r = flat_x[pick], flat_r[pick]
    pairs.scatter(flat_x, flat_r, s=3, alpha=0.3, color="#444444", linewidths=0)
    if flat_x.size:
        lo, hi = float(min(flat_x.min(), flat_r.min())), float(max(flat_x.max(), flat_r.max()))
        pairs.plot([lo, hi], [lo, hi], color="red", lw=1, label="reconstruction = original")
        pairs.legend(fontsize=8, loc="upper left")
    pairs.set(title=f"every test value and its reconstruction: R² = {r2:.3f}", xlabel="original value",
              ylabel="reconstructed value")
    pairs.grid(alpha=0.3)
    return fig


def error_histogram(errors: Tensor | np.ndarray, title: str = "per-example reconstruction error (test)") -> Figure:
    """Histogram of per-example MSE with mean and median marked; non-finite errors are counted in
    the title, not drawn."""
    e = _np(errors).astype(float)
    finite = np.isfinite(e)
    if not finite.all():
        title = f"{title}; {int((~finite).sum())} of {e.size} not finite, left out"
        e = e[finite] if finite.any() else np.zeros(1)
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    ax.hist(e, bins=50, color="#7f9fbf", edgecolor="black", lw=0.3)
    ax.axvline(e.mean(), color="red", ls="--", label=f"mean {e.mean():.4f}")
    ax.axvline(np.median(e), color="green", ls="--", label=f"median {np.median(e):.4f}")
    ax.set(title=title, xlabel="MSE per example", ylabel="examples")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def principal_plane(codes: Tensor) -> tuple[Tensor, Tensor]:
    """Centre (d,) and the top two principal directions (2, d) of the rows of ``codes``, in float64."""
    codes = codes.double()
    center = codes.mean(0)
    _, _, v = torch.linalg.svd(codes - center, full_matrices=False)
    axes = v[:2]
    for e in torch.eye(codes.shape[1], dtype=codes.dtype):  # under two codes: complete the plane with axes
        if len(axes) == 2:
            break
        rest = e - axes.T @ (axes @ e)
        if float(rest.norm()) > 1e-6:
            axes = torch.cat([axes, (rest / rest.norm())[None]])
    return center, axes


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between a and b (falls back to linear when they are parallel)."""
    omega = torch.arccos(torch.clamp((a / a.norm()) @ (b / b.norm()), -1.0, 1.0))
    if float(omega.abs()) < 1e-6:
        return (1 - t)[:, None] * a + t[:, None] * b
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so)[:, None] * a + (torch.sin(t * omega) / so)[:, None] * b


@torch.no_grad()
def interpolation(model: LatentModel, x_a: Tensor, x_b: Tensor, steps: int = 10,
                  y_ab: tuple[Tensor, Tensor] | None = None) -> Figure:
    """Decode the path between two examples' posterior means: linear and spherical. A conditional
    model is given the examples' labels ``y_ab``, and along the path a blend of the two classes."""
    ya, yb = (None, None) if y_ab is None else (y_ab[0].reshape(1), y_ab[1].reshape(1))
    za, zb = model.encode(x_a[None], ya)[0][0], model.encode(x_b[None], yb)[0][0]
    t = torch.linspace(0, 1, steps, device=za.device)
    lin = (1 - t)[:, None] * za + t[:, None] * zb
    sph = slerp(za, zb, t)
    y = None if y_ab is None else blend_labels(model.classes, int(ya), int(yb), t)
    rows = [_np(model.mean(model.decode(z, y))) for z in (lin, sph)]
    fig = Figure(figsize=(steps * 1.1 + 1.2, 3.4), layout="constrained")
    axes = fig.subplots(2, 1)
    for ax, row, name in zip(axes, rows, ("linear", "spherical (slerp)")):
        _show(ax, _tile(np.concatenate([_np(x_a)[None], row, _np(x_b)[None]]), steps + 2))
        ax.set_title(f"{name}: input A, {steps} decoded steps, input B", fontsize=9)
    return fig


VECTOR_FEATURES = 1024  # columns of a vector heat map (the first this many features)


def _heat(ax: Any, rows: np.ndarray, lo: float, hi: float, cmap: str) -> Any:
    """Rows of vectors as a heat map over [lo, hi]: features across, one row per vector."""
    return ax.imshow(rows, aspect="auto", interpolation="nearest", cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1)


def _limit(a: np.ndarray) -> float:
    finite = np.abs(a[np.isfinite(a)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


@torch.no_grad()
def vector_interpolation(model: LatentModel, x_a: Tensor, x_b: Tensor, steps: int = 10,
                         y_ab: tuple[Tensor, Tensor] | None = None) -> Figure:
    """Vectors: the path between two examples' posterior means, decoded (linear and spherical), as heat
    maps: input A, the decoded steps and input B, one row each, features across."""
    ya, yb = (None, None) if y_ab is None else (y_ab[0].reshape(1), y_ab[1].reshape(1))
    za, zb = model.encode(x_a[None], ya)[0][0], model.encode(x_b[None], yb)[0][0]
    t = torch.linspace(0, 1, steps, device=za.device)
    y = None if y_ab is None else blend_labels(model.classes, int(ya), int(yb), t)
    ends = _rows(torch.stack([x_a, x_b]))
    dim = ends.shape[1]
    shown = min(dim, VECTOR_FEATURES)
    paths = [np.concatenate([ends[:1], _rows(model.mean(model.decode(z, y))), ends[1:]])[:, :shown]
             for z in ((1 - t)[:, None] * za + t[:, None] * zb, slerp(za, zb, t))]
    values = np.concatenate(paths)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    fig = Figure(figsize=(12, 6), layout="constrained")
    axes = fig.subplots(2, 1)
    for ax, rows, name in zip(axes, paths, ("linear", "spherical (slerp)")):
        image = _heat(ax, rows, lo, hi, "viridis")
        ax.set_yticks([0, (steps + 1) / 2, steps + 1], ["input A", "halfway", "input B"], fontsize=8)
        ax.axhline(0.5, color="white", lw=1)
        ax.axhline(steps + 0.5, color="white", lw=1)
        ax.set_title(f"{name}: input A, {steps} decoded steps, input B", fontsize=9)
    axes[-1].set_xlabel(_feature_axis(shown, dim))
    fig.colorbar(image, ax=axes, label="value", shrink=0.8)
    return fig


@torch.no_grad()
def vector_traversals(model: LatentModel, z0: Tensor, dims: Sequence[int], values: Sequence[float] = tuple(
        np.linspace(-3, 3, 9)), spans: dict[int, Sequence[float]] | None = None) -> Figure:
    """Vectors: for each latent dimension, how the decoded vector changes as that coordinate is swept
    (over ``values``, or per dimension over ``spans[d]``) with the others at z0: one heat map per
    dimension of the change from z0's decoding, features across; the features it moves most are named."""
    centre = _rows(model.mean(model.decode(z0[None])))[0]
    dim = centre.shape[0]
    shown = min(dim, VECTOR_FEATURES)
    changes = {}
    for d in dims:
        sweep = torch.tensor(list(spans[d] if spans else values), dtype=torch.float32, device=z0.device)
        z = z0.repeat(len(sweep), 1)
        z[:, d] = sweep
        changes[d] = _rows(model.mean(model.decode(z))) - centre
    limit = _limit(np.concatenate([c[:, :shown] for c in changes.values()]))
    fig = Figure(figsize=(12, 1.2 * len(dims) + 1.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(dims), 1, sharex=True, squeeze=False)[:, 0])
    for ax, d in zip(axes, dims):
        change = changes[d]
        image = _heat(ax, change[:, :shown], -limit, limit, "RdBu_r")
        sweep = list(spans[d] if spans else values)
        ax.set_yticks([0, len(sweep) - 1], [f"{sweep[0]:.2g}", f"{sweep[-1]:.2g}"], fontsize=7)
        spread = np.nan_to_num(np.abs(change).max(0), nan=0.0)
        top = ", ".join(str(int(i)) for i in np.argsort(-spread)[:3])
        ax.set_ylabel(f"z[{d}]", rotation=0, ha="right", va="center")
        among = f" of all {dim}" if shown < dim else ""
        ax.set_title(f"z[{d}] moves features {top} most{among} (up to {spread.max():.3g})", fontsize=8, loc="left")
    what = "each code's own range (1st to 99th percentile)" if spans else "the prior's range"
    fig.suptitle(f"latent traversals over {what}: change of the decoded vector from that of the mean code",
                 fontsize=10)
    axes[-1].set_xlabel(_feature_axis(shown, dim))
    fig.colorbar(image, ax=list(axes), label="change", shrink=0.8)
    return fig


@torch.no_grad()
def traversals(
    model: LatentModel, z0: Tensor, dims: Sequence[int], values: Sequence[float] = tuple(np.linspace(-3, 3, 9)),
    spans: dict[int, Sequence[float]] | None = None,
) -> Figure:
    """One row per latent dimension: z0 with that coordinate swept over ``values`` (or, per
    dimension, over ``spans[d]``: e.g. an AE's own code range; the columns are then steps)."""
    rows = []
    for d in dims:
        sweep = spans[d] if spans else values
        vals = torch.tensor(list(sweep), dtype=torch.float32, device=z0.device)
        z = z0.repeat(len(vals), 1)
        z[:, d] = vals
        rows.append(_np(model.mean(model.decode(z))))
    vals = torch.tensor(list(values), dtype=torch.float32)
    fig = Figure(figsize=(len(vals) * 1.0 + 1.5, len(dims) * 1.05 + 0.8), layout="constrained")
    ax = fig.subplots()
    _show(ax, _tile(np.concatenate(rows), len(vals)))
    ax.set_axis_on()
    h = rows[0].shape[2]
    ax.set_yticks([(i + 0.5) * (h + 1) for i in range(len(dims))], [f"z[{d}]" for d in dims])
    w = rows[0].shape[3]
    if spans:
        ax.set_yticks([(i + 0.5) * (h + 1) for i in range(len(dims))],
                      [f"z[{d}]: {spans[d][0]:.2g}..{spans[d][-1]:.2g}" for d in dims])
        ax.set_xticks([(i + 0.5) * (w + 1) for i in range(len(vals))], [str(i) for i in range(len(vals))])
        ax.set(title="latent traversals over each code's own range (1st to 99th percentile)",
               xlabel="step through the range")
        return fig
    ax.set_xticks([(i + 0.5) * (w + 1) for i in range(len(vals))], [f"{v:.1f}" for v in values])
    ax.set(title="latent traversals (other coordinates at the mean code)", xlabel="value of the swept coordinate")
    return fig


# --- comparisons and scores ------------------------------------------------------------


def compare_latents(
    codes: Sequence[np.ndarray],
    generated: Sequence[np.ndarray] | None,
    names: Sequence[str],
    labels: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Latent scatters side by side (PCA above 2-d) and, for images, each model decoding the same z."""
    k = len(codes)
    rows = 2 if generated is not None else 1
    fig = Figure(figsize=(7 * k, 6.5 + (1.9 if generated is not None else 0)), layout="constrained")
    axes = fig.subplots(rows, k, squeeze=False, height_ratios=[6.5, 1.9][:rows])
    for i, (c, name) in enumerate(zip(codes, names)):
        c = np.asarray(c, dtype=float)
        finite = np.isfinite(c).all(1)
        left_out = "" if finite.all() else f", {int((~finite).sum())} not finite left out"
        c, lab = c[finite], None if labels is None else np.asarray(labels)[finite]
        _scatter(axes[0, i], embed_2d(c, "pca"), lab, class_names)
        how = "" if c.shape[1] <= 2 else " (PCA)"
        spread = f"range [{c.min():.2f}, {c.max():.2f}], std {c.std():.3f}" if c.size else "no finite codes"
        axes[0, i].set(title=f"{name}{how}: {spread}{left_out}")
        axes[0, i].grid(alpha=0.2)
        if generated is not None:
            _show(axes[1, i], _tile(np.asarray(generated[i]), len(generated[i])))
            axes[1, i].set_title(f"{name} decoding the same z ~ N(0, I)")
    return fig


def score_histograms(normal: np.ndarray, anomalous: np.ndarray, auroc: float, score_name: str) -> Figure:
    """Anomaly scores of the classes seen in training vs the held-out class."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    lo, hi = np.percentile(np.r_[normal, anomalous], [0.5, 99.5])
    if not hi > lo:  # every score equal
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 60)
    for scores, label in ((normal, "seen classes"), (anomalous, "held-out class")):
        # the extreme scores land in the edge bins, so neither histogram is left empty (a density of 0/0)
        ax.hist(np.clip(scores, lo, hi), bins=bins, alpha=0.6, density=True, label=f"{label} (n={len(scores)})")
    ax.set(title=f"anomaly scores, AUROC {auroc:.3f}", xlabel=score_name, ylabel="density")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str] | None = None,
                     title: str = "linear probe on latent means", most: int = 200) -> Figure:
    """Row-normalised confusion matrix (true class per row) with the accuracy in the title. Past
    LEGEND_CLASSES classes the cells lose their numbers and the axes name every k-th class; past
    ``most``, the matrix keeps the ``most`` most frequent true classes (a 10,000-class one is 800 MB)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    accuracy = (y_true == y_pred).mean()
    classes, counts_true = np.unique(y_true, return_counts=True)
    if len(np.union1d(classes, y_pred)) > most:
        classes = np.sort(classes[np.argsort(-counts_true, kind="stable")[:most]])
        title = f"{title} ({most} most frequent classes)"
    else:
        classes = np.union1d(classes, y_pred)
    kept = np.isin(y_true, classes) & np.isin(y_pred, classes)
    counts = np.zeros((len(classes), len(classes)))
    np.add.at(counts, (np.searchsorted(classes, y_true[kept]), np.searchsorted(classes, y_pred[kept])), 1)
    rates = counts / counts.sum(1, keepdims=True).clip(min=1)
    names = [class_label(class_names, c) for c in classes]
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    if len(classes) <= LEGEND_CLASSES:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if rates[i, j] >= 0.01:
                    ax.text(j, i, f"{rates[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
    named = range(0, len(classes), math.ceil(len(classes) / LEGEND_CLASSES))
    shown = [names[i] for i in named]
    ax.set_xticks(named, shown, rotation=45 if max(map(len, shown)) > 3 else 0)
    ax.set_yticks(named, shown)
    fig.colorbar(im, ax=ax, label="share of the true class")
    ax.set(title=f"{title}: accuracy {accuracy:.3f}", xlabel="predicted", ylabel="true")
    return fig
