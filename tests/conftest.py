"""Shared fixtures: where the real MNIST files are, tiny configs, temporary run folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("VAEKIT_TEST_MNIST", REPO.parent / "shared" / "data" / "mnist"))


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory) -> None:
    """Tests never write into the user's ~/.cache: vaekit's cache goes to a temporary folder
    (child processes inherit it through the environment)."""
    os.environ["VAEKIT_CACHE"] = str(tmp_path_factory.mktemp("vaekit-cache"))


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


@pytest.fixture
def read_only(small_fs):
    """``read_only(folder[, size])``: a copy of ``folder`` on a real read-only file system (a tmpfs of
    ``size`` bytes remounted read-only, so even root cannot write there); returns the copy's path."""
    import shutil
    import subprocess

    def make(folder: Path, size: int = 64 << 20) -> Path:
        mnt = small_fs(size)
        copy = mnt / folder.name
        shutil.copytree(folder, copy)
        r = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot remount a tmpfs read-only here ({r.stderr.strip()})")
        return copy

    return make


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


def processes_naming(text: str) -> list[int]:
    """The pids of the processes whose command line holds ``text`` (a run folder's path, say)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def wait_until(condition, timeout: float, what: str) -> float:
    """Poll ``condition`` until true; returns the seconds it took, fails naming ``what`` after ``timeout``."""
    import time

    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - t0


def run_cli(*args: str) -> tuple[int, str, str]:
    """The vaekit command in this process: (exit code, stdout, stderr)."""
    import contextlib
    import io

    from vaekit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def objective_gradcheck(model, x, cfg, names: list[str], beta: float = 0.7, y=None) -> bool:
    """Finite differences (float64) against autograd for the objective ``cfg`` names, with respect to
    the model parameters ``names`` (``y``: labels, for a conditional model); the noise is drawn from
    the same seed on every call."""
    import torch

    from vaekit.objectives import get_objective

    fn = get_objective(cfg, model)

    class Objective(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, inputs):
            return fn(self.model, inputs, beta, cfg, torch.Generator().manual_seed(7), y=y).loss

    wrapped = Objective()
    state = dict(wrapped.named_parameters())
    keys = [f"model.{n}" for n in names]

    def objective(*values):
        return torch.func.functional_call(wrapped, {**state, **dict(zip(keys, values))}, (x,))

    inputs = tuple(state[k].detach().clone().requires_grad_(True) for k in keys)
    return torch.autograd.gradcheck(objective, inputs, eps=1e-6, atol=1e-5)


def on_a_terminal(code: str, env: dict) -> str:
    """What a Python snippet prints on a real terminal (a pty of 120 columns, as tqdm needs one)."""
    import fcntl
    import pty
    import struct
    import subprocess
    import sys
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=follower, stdout=follower, stderr=follower,
                            env={**os.environ, **env})
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # the pty closes when the process ends
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.wait(timeout=120) == 0, out
    return out.replace(b"\r", b"\n").decode(errors="replace")
