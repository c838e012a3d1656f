"""The feature space generation metrics are measured in: a small classifier trained by vaekit on the
data set's own training split (no pretrained network can be downloaded here), cached per data set
in ``$VAEKIT_CACHE/featurenets`` and reported with its test accuracy so a reader can judge it.

Images get a small conv net (two stride-2 convolutions, then 128 features); vectors are their own
features. Data without labels have no classifier to train: their raw values are the features.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from .data import Dataset, fingerprint
from .files import cache_dir, cache_used, write_cache

FEATURES = 128
EPOCHS = 4


class ConvFeatures(nn.Module):
    """x (N, C, H, W) in [0, 1] -> 128 features -> class logits."""

    def __init__(self, shape: tuple[int, ...], classes: int) -> None:
        super().__init__()
        c, h, w = shape
        self.body = nn.Sequential(
            nn.Conv2d(c, 32, 3, 2, 1), nn.SiLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.SiLU(),
            nn.Flatten(), nn.Linear(64 * ((h + 3) // 4) * ((w + 3) // 4), FEATURES), nn.SiLU())
        self.head = nn.Linear(FEATURES, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x * 2 - 1))

    def features(self, x: Tensor) -> Tensor:
        return self.body(x * 2 - 1)


@dataclass
class FeatureSpace:
    """How examples become feature vectors, and how far to trust it."""

    embed: Callable[[Tensor], Tensor]
    description: str
    test_accuracy: float | None
    classify: Callable[[Tensor], Tensor] | None = None  # x -> class logits, where a classifier was trained

    def __call__(self, x: Tensor, batch: int = 1000) -> Tensor:
        with torch.no_grad():
            return torch.cat([self.embed(x[i: i + batch]).double() for i in range(0, len(x), batch)])


def feature_space(data: Dataset, seed: int = 0, log: Callable[[str], None] = print) -> FeatureSpace:
    """The data set's feature space: a cached classifier for labelled images, else the raw values."""
    if not data.is_image:
        return FeatureSpace(lambda x: x.reshape(len(x), -1), "the raw vectors", None)
    if data.train_y is None:
        return FeatureSpace(lambda x: x.reshape(len(x), -1), "raw pixels (no labels to train a feature net on)", None)
    classes = int(data.train_y.max()) + 1
    key = f"{fingerprint(data)}-{classes}-v1"
    path = cache_dir("featurenets") / f"{key}.safetensors"
    net = ConvFeatures(tuple(data.shape), classes)
    accuracy = _load(net, path)
    if accuracy is None:
        log(f"training the feature net for generation metrics on {len(data.train_x):,} training examples "
            f"(once per data set; cached in {path.parent})")
        accuracy = _train(net, data, seed)
        _save(net, path, accuracy)
    net.train(False)
    log(f"feature net: test accuracy {accuracy:.2%}")
    return FeatureSpace(net.features, f"a conv classifier trained on this data set (test accuracy {accuracy:.2%})",
                        accuracy, net)


def _train(net: ConvFeatures, data: Dataset, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    n = len(data.train_x)
    net.train(True)
    for _ in range(EPOCHS):
        for idx in torch.randperm(n, generator=gen).split(128):
            x, y = data.features(data.train_x[idx]), data.train_y[idx].long()
            loss = nn.functional.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.train(False)
    with torch.no_grad():
        right = sum(int((net(data.features(data.test_x[i: i + 1000])).argmax(1)
                         == data.test_y[i: i + 1000].long()).sum()) for i in range(0, len(data.test_x), 1000))
    return right / len(data.test_x)


def _save(net: nn.Module, path: Path, accuracy: float) -> None:
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in net.state_dict().items()}, metadata={"accuracy": json.dumps(accuracy)})
    write_cache(path, lambda buf: buf.write(data))


def _load(net: nn.Module, path: Path) -> float | None:
    """The cached net's test accuracy, or None when there is no usable cache (it is then retrained)."""
    from .checkpoint import _read_tensors

    try:
        tensors, meta = _read_tensors(path)
        net.load_state_dict(tensors)
        accuracy = float(json.loads(meta["accuracy"]))
    except Exception:  # a missing, damaged or foreign cache is retrained, never trusted
        return None
    if not 0 <= accuracy <= 1:
        return None
    cache_used(path)
    return accuracy
