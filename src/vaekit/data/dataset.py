"""The in-memory data set every source produces: stored tensors, labels and a fixed split."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from ..config import DataConfig
from ..errors import DataError


@dataclass
class Dataset:
    """Train and test examples held as whole tensors; batches are taken by index.

    Images are stored compactly (uint8) and turned into floats in [0, 1] per batch by
    ``features``: stored value / ``scale``. ``source`` is the data config ``load_dataset`` read them
    for (None for a Dataset made by hand), so that ``fit`` can tell whether a run's config reloads them.
    """

    name: str
    train_x: Tensor
    train_y: Tensor | None
    test_x: Tensor
    test_y: Tensor | None
    scale: float = 1.0
    class_names: list[str] | None = None
    source: DataConfig | None = field(default=None, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example: (C, H, W) for images, (D,) for vectors."""
        return tuple(self.train_x.shape[1:])

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    def features(self, stored: Tensor) -> Tensor:
        """Stored values -> float32 model inputs."""
        x = stored.to(torch.float32)
        return x / self.scale if self.scale != 1.0 else x

    def batch(self, index: Tensor, split: str = "train") -> Tensor:
        """Float inputs for the examples at ``index``: one gather (index_select is ~10x faster than
        advanced indexing for a batch of rows) into a fresh tensor, so it can be scaled in place."""
        x = getattr(self, f"{split}_x").index_select(0, index).to(torch.float32)
        return x.div_(self.scale) if self.scale != 1.0 else x

    def labels(self, index: Tensor, split: str = "train") -> Tensor:
        """The class labels of the examples at ``index`` (the data set must have labels)."""
        y = getattr(self, f"{split}_y")
        if y is None:
            raise DataError(f"{self.name}: has no labels")
        return y.index_select(0, index)

    def label_slice(self, split: str, start: int, stop: int) -> Tensor | None:
        """Labels of examples start..stop-1 of a split, or None for unlabelled data."""
        y = getattr(self, f"{split}_y")
        return None if y is None else y[start:stop]

    def to(self, device: torch.device | str) -> Dataset:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, train_x=move(self.train_x), train_y=move(self.train_y),
                       test_x=move(self.test_x), test_y=move(self.test_y))

    def check_shape(self, trained_shape: tuple[int, ...], run: str = "this run") -> None:
        """Refuse data whose examples no longer have the shape a run was trained on."""
        if tuple(self.shape) != tuple(trained_shape):
            raise DataError(
                f"{self.name}: its examples now have shape {list(self.shape)}, but {run} was trained on shape "
                f"{list(trained_shape)}; the data changed since training (pass --data-dir to the original files)"
            )

    def value_range(self) -> tuple[float, float]:
        lo = min(float(self.train_x.min()), float(self.test_x.min())) / self.scale
        hi = max(float(self.train_x.max()), float(self.test_x.max())) / self.scale
        return lo, hi


def split(x: Tensor, y: Tensor | None, test_fraction: float, seed: int) -> tuple:
    """A fixed random held-out split: (train_x, train_y, test_x, test_y)."""
    n = len(x)
    n_test = max(1, int(round(n * test_fraction)))
    if n_test >= n:
        raise DataError(f"--test-fraction {test_fraction:g} leaves no training examples out of {n}; "
                        f"use a value below {(n - 1) / n:.4g}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test, train = perm[:n_test], perm[n_test:]
    pick = lambda t, i: None if t is None else t[i]  # noqa: E731
    return x[train], pick(y, train), x[test], pick(y, test)
