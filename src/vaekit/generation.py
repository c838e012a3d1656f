"""How good generated examples are, measured against the test set in a feature space (featurenet.py):
the Fréchet distance between Gaussians fitted to the two feature clouds (FID; Heusel et al. 2017)
and k-nearest-neighbour precision and recall (Kynkäänniemi et al. 2019): precision is the share of
generated examples that fall inside the real examples' manifold estimate (fidelity), recall the
share of real examples inside the generated ones' (coverage).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .data import Dataset
from .featurenet import feature_space

DEFAULT_N = 10_000
K_NEAREST = 3


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of the rows of a and b (float64)."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T).reshape(a.shape[1], a.shape[1]), torch.cov(b.T).reshape(b.shape[1], b.shape[1])
    # Tr (S_a S_b)^(1/2) = sum of square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2) (symmetric, PSD)
    w, v = torch.linalg.eigh(s_a)
    root_a = (v * w.clamp_min(0).sqrt()) @ v.T
    middle = torch.linalg.eigvalsh(root_a @ s_b @ root_a).clamp_min(0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + torch.trace(s_a) + torch.trace(s_b) - 2 * middle)


def _radii(x: Tensor, k: int) -> Tensor:
    """Distance from each row of x to its k-th nearest other row."""
    out = []
    for i in range(0, len(x), 1024):
        d = torch.cdist(x[i: i + 1024], x)
        out.append(d.kthvalue(k + 1, dim=1).values)  # the 1st is the row itself
    return torch.cat(out)


def _covered(points: Tensor, centres: Tensor, radii: Tensor) -> Tensor:
    """For each point: does it lie within the radius of any centre?"""
    hits = []
    for i in range(0, len(points), 1024):
        d = torch.cdist(points[i: i + 1024], centres)
        hits.append((d <= radii[None]).any(1))
    return torch.cat(hits)


def precision_recall(real: Tensor, fake: Tensor, k: int = K_NEAREST) -> tuple[float, float]:
    """Improved precision and recall with k-nearest-neighbour balls."""
    real, fake = real.double(), fake.double()
    precision = float(_covered(fake, real, _radii(real, k)).double().mean())
    recall = float(_covered(real, fake, _radii(fake, k)).double().mean())
    return precision, recall


def generation_metrics(generated: Tensor, data: Dataset, seed: int = 0,
                       log: Callable[[str], None] = print, asked: Tensor | None = None) -> dict[str, Any]:
    """FID, precision and recall of ``generated`` (decoded means, the data's shape) against as many
    test examples, in the data set's feature space; with ``asked`` (the classes a conditional model
    was asked for), also the share the feature net classifies as asked (``class_accuracy``)."""
    space = feature_space(data, seed, log)
    n = min(len(generated), len(data.test_x))
    real = space(data.features(data.test_x[:n]).float())
    fake = space(generated[:n].float())
    precision, recall = precision_recall(real, fake)
    out = {"fid": frechet_distance(real, fake), "precision": precision, "recall": recall, "generation_n": n,
           "feature_space": space.description, "feature_net_accuracy": space.test_accuracy}
    if asked is not None and space.classify is not None:
        with torch.no_grad():
            got = torch.cat([space.classify(generated[i: i + 1000].float()).argmax(1) for i in range(0, n, 1000)])
        out["class_accuracy"] = float((got.cpu() == asked[:n].cpu()).double().mean())
    return out
