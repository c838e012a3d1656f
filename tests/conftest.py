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


@pytest.fixture
def small_fs(tmp_path):
    """A real, tiny filesystem (tmpfs) to fill up: ``small_fs(size_bytes)`` mounts one and returns it.
    Needs root and mount permission; skipped with the reason elsewhere."""
    import shutil
    import subprocess

    mounted = []

    def make(size: int) -> Path:
        if os.geteuid() != 0 or not shutil.which("mount"):
            pytest.skip("a real full-disk test needs root to mount a small tmpfs")
        mnt = tmp_path / f"fs{len(mounted)}"
        mnt.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip()})")
        mounted.append(mnt)
        return mnt

    yield make
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill_disk(folder: Path, leave: int = 0) -> Path:
    """Fill the filesystem holding ``folder`` until writes fail (or ``leave`` bytes remain)."""
    import shutil

    filler = folder / "filler.bin"
    with open(filler, "wb") as f:
        try:
            while True:
                free = shutil.disk_usage(folder).free - leave
                if free <= 0:
                    break
                f.write(b"\0" * min(free, 1 << 20))
                f.flush()
        except OSError:
            pass
    return filler
