"""Shared fixtures: where the real MNIST files are, tiny configs, temporary run folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("VAEKIT_TEST_MNIST", REPO.parent / "shared" / "data" / "mnist"))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file() and not (
        MNIST_DIR / "train-images-idx3-ubyte"
    ).is_file():
        pytest.skip(f"real MNIST files not found in {MNIST_DIR} (set VAEKIT_TEST_MNIST to their folder)")
    return MNIST_DIR


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    from vaekit.data import load_dataset

    return load_dataset(DataConfig(dataset="mnist", data_dir=str(mnist_dir), download=False), progress=False)


@pytest.fixture
def digits_cfg() -> RunConfig:
    """A small, fast VAE on scikit-learn's digits."""
    return RunConfig(
        seed=3,
        data=DataConfig(dataset="digits", test_fraction=0.2),
        model=ModelConfig(hidden=[64], latent_dim=4, likelihood="bernoulli"),
        train=TrainConfig(epochs=3, batch_size=64, lr=3e-3),
    )
