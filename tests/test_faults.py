"""Each class of fault an adversarial user found, provoked for real: a refused command changes
nothing, one writer per run folder, every file atomic (real signals, real kill -9), sizes
within one budget (a real zip bomb, sparse giant files), special files (real FIFOs, /dev/zero),
damaged checkpoints, and messages that stay one short line."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli

from vaekit import checkpoint as ckpt
from vaekit.checkpoint import load_run, read_history
from vaekit.cli import main
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.train import fit

QUIET = dict(progress=False, log=lambda s: None)
SRC = Path(__file__).resolve().parents[1] / "src" / "vaekit"


def tiny_cfg(epochs: int = 2) -> RunConfig:
    return RunConfig(seed=1, data=DataConfig(dataset="digits", test_fraction=0.2),
                     model=ModelConfig(hidden=[32], latent_dim=2), train=TrainConfig(epochs=epochs, batch_size=32))


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden lock file aside) by content hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ckpt.LOCK}


def vaekit(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """The command in its own process: for signals, kill -9, locks held by others, and FIFOs (which
    would hang the test itself if vaekit waited on them)."""
    return subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def cli(*args: str) -> subprocess.CompletedProcess:
    """The command in this process (fast): the same main() and the same one error path."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def one_line(proc: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return fit(tiny_cfg(2), tmp_path_factory.mktemp("faults") / "run", **QUIET).path


@pytest.fixture
def run_copy(trained, tmp_path):
    import shutil

    dest = tmp_path / "run"
    shutil.copytree(trained, dest)
    return dest


# 1. Data loss: a refused command changes nothing; one writer; --overwrite removes only vaekit's files.

def test_stop_signals_go_to_one_handler_and_what_was_there_comes_back():
    """The one way vaekit takes the stop signals over: a real SIGTERM reaches the handler, an ignored
    SIGHUP (nohup) stays ignored, the old handlers return, and another thread takes nothing over."""
    import threading

    from vaekit.signals import stop_signals_to

    came: list[int] = []
    term, hup = signal.getsignal(signal.SIGTERM), signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with stop_signals_to(lambda signum, frame: came.append(signum)):
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGHUP)
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert came == [signal.SIGTERM] and signal.getsignal(signal.SIGTERM) is term
        failed: list[BaseException] = []

        def elsewhere() -> None:
            try:
                with stop_signals_to(lambda signum, frame: None):
                    pass
            except BaseException as e:  # signal.signal outside the main thread raises ValueError
                failed.append(e)
        worker = threading.Thread(target=elsewhere)
        worker.start()
        worker.join()
        assert not failed and signal.getsignal(signal.SIGTERM) is term
    finally:
        signal.signal(signal.SIGHUP, hup)


@pytest.mark.parametrize("extra", [["--set", "objective.schedule=exp"], ["--device", "cuda:7"],
                                   ["--hidden", "65536,65536"], ["--dataset", "vectors:/nonexistent.npy"]],
                         ids=["unknown-schedule", "missing-gpu", "over-budget", "missing-data"])
def test_overwrite_with_a_bad_input_keeps_the_old_run(run_copy, extra, capsys):
    before = snapshot(run_copy)
    code = main(["train", "--out", str(run_copy), "--overwrite", "--hidden", "32", "--no-progress", *extra])
    assert code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("device", ["cuda", "meta", "foo", "cuda:99"])
def test_refused_resume_leaves_config_untouched_and_plain_resume_works(run_copy, device, capsys):
    before = snapshot(run_copy)
    assert main(["train", "--resume", str(run_copy), "--device", device, "--epochs", "3", "--no-progress"]) == 2
    assert "--device" in capsys.readouterr().err
    assert snapshot(run_copy) == before
    assert main(["train", "--resume", str(run_copy), "--epochs", "3", "--no-progress"]) == 0
    assert [r["epoch"] for r in read_history(run_copy)] == [1, 2, 3]


def test_resume_with_fewer_epochs_is_refused_and_changes_nothing(run_copy, capsys):
    before = snapshot(run_copy)
    assert main(["train", "--resume", str(run_copy), "--epochs", "1", "--no-progress"]) == 2
    assert "already trained 2 epochs" in capsys.readouterr().err
    assert snapshot(run_copy) == before


def test_resume_without_the_training_state_is_refused_and_keeps_the_trained_weights(run_copy, capsys):
    """Starting over would overwrite what the run learned: with its training state removed (to save
    space, say) a run is refused for --resume, and every file stays; the weights still evaluate."""
    (run_copy / "training_state.safetensors").unlink()
    before = snapshot(run_copy)
    assert main(["train", "--resume", str(run_copy), "--epochs", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "training_state.safetensors: missing" in err and "cannot be resumed" in err and "--overwrite" in err
    assert snapshot(run_copy) == before
    assert main(["evaluate", str(run_copy), "--iwae-k", "2", "--no-progress"]) == 0


def test_torn_last_history_line_is_repaired_on_resume_with_a_warning(run_copy, capsys):
    path = run_copy / ckpt.HISTORY
    text = path.read_text()
    path.write_text(text + text.splitlines()[-1][:37])  # what an older vaekit left on a full disk
    with pytest.warns(UserWarning, match="cut short"):
        assert len(read_history(run_copy)) == 2  # readers (plot, report) skip the torn line
    assert main(["train", "--resume", str(run_copy), "--epochs", "3", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "cut short" in err and len(err.strip().splitlines()) == 1
    assert [r["epoch"] for r in read_history(run_copy)] == [1, 2, 3]
    assert path.read_text().endswith("\n")


def test_a_removed_history_is_named_when_the_run_resumes(run_copy, capsys):
    """history.jsonl removed (or epochs cut out of it): the weights are whole, so training goes on, but
    the records that are gone are said to be gone, not lost without a word."""
    (run_copy / ckpt.HISTORY).unlink()
    assert main(["train", "--resume", str(run_copy), "--epochs", "3", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no record of 2 epochs (1..2) of the 2 trained so far" in err
    assert [r["epoch"] for r in read_history(run_copy)] == [3]


def test_damaged_history_in_the_middle_is_an_error_not_a_silent_loss(run_copy):
    path = run_copy / ckpt.HISTORY
    lines = path.read_text().splitlines()
    path.write_text(lines[0][:20] + "\n" + lines[1] + "\n")
    proc = cli("train", "--resume", str(run_copy), "--epochs", "3", "--no-progress")
    one_line(proc, "history.jsonl", "line 1")


def _start_training(cfg: RunConfig, out: Path, tmp: Path) -> subprocess.Popen:
    path = tmp / "long.json"
    path.write_text(cfg.to_json())
    return subprocess.Popen([sys.executable, "-m", "vaekit", "train", "--config", str(path), "--out", str(out),
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    t = time.time()
    while time.time() - t < timeout and proc.poll() is None:
        if path.exists() and path.stat().st_size:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear")


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    proc = _start_training(tiny_cfg(200), out, tmp_path)
    try:
        _wait_for(out / ckpt.HISTORY, proc)
        # the second writers in this process: the holder is another one, which is what the lock is about
        line = one_line(cli("train", "--resume", str(out), "--no-progress"), "in use by another vaekit process",
                        f"pid {proc.pid}")
        assert str(out) in line
        one_line(cli("plot", str(out)), f"pid {proc.pid}")
        one_line(cli("train", "--out", str(out), "--overwrite", "--no-progress"), f"pid {proc.pid}")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
    finally:
        proc.kill()
    epochs = [r["epoch"] for r in read_history(out)]
    assert epochs == list(range(1, len(epochs) + 1))  # one writer: no interleaved or repeated records
    assert main(["train", "--resume", str(out), "--epochs", str(len(epochs) + 1), "--no-progress"]) == 0


def _with_flock_failing(errno_name: str, *args: str) -> subprocess.CompletedProcess:
    """``vaekit ARGS`` with every flock(2) answered ``errno_name`` by the kernel (strace's fault
    injection, as a file system without locks answers: NFS without lockd, some FUSE mounts)."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (Debian: apt-get install strace): it injects the flock failures")
    inject = [strace, "-f", "--seccomp-bpf", "-qq", "-e", "trace=flock", "-e", f"inject=flock:error={errno_name}",
              "-o", "/dev/null"]
    probe = subprocess.run([*inject, "true"], capture_output=True)
    if probe.returncode != 0:  # ptrace not permitted, or a strace older than 5.3 (no --seccomp-bpf)
        pytest.skip(f"strace cannot inject system-call failures here: {probe.stderr.decode()[:200]}")
    return subprocess.run([*inject, sys.executable, "-m", "vaekit", *args], capture_output=True, text=True,
                          timeout=300)


def test_a_file_system_without_locks_works_unguarded_and_says_so_once(tmp_path):
    """flock answering ENOLCK (no locks on this file system): a run trains and resumes, each with one
    warning line; any other flock failure (EIO) is a one-line refusal that changes nothing."""
    run = tmp_path / "run"
    for args in (["train", "--preset", "tiny-4-8-2", "--epochs", "1", "--out", str(run), "--no-progress"],
                 ["train", "--resume", str(run), "--epochs", "2", "--no-progress"]):
        r = _with_flock_failing("ENOLCK", *args)
        assert r.returncode == 0, r.stderr
        assert r.stderr.strip().splitlines() == [f"vaekit: warning: {run}: this file system cannot lock files (No locks "
                                                 "available); nothing keeps a second vaekit process from writing into "
                                                 "this run at the same time"], r.stderr
    assert load_run(run).epoch == 2 and len(read_history(run)) == 2
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    r = _with_flock_failing("EIO", "train", "--resume", str(run), "--epochs", "3", "--no-progress")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"vaekit: error: {run}: cannot lock this folder (Input/output error)"], r.stderr
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_two_resumes_at_once_one_trains_the_other_is_refused(run_copy):
    cmd = [sys.executable, "-m", "vaekit", "train", "--resume", str(run_copy), "--epochs", "60", "--no-progress"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], results
    refused = results[[p.returncode for p in procs].index(2)][1]
    assert "in use by another vaekit process" in refused and len(refused.strip().splitlines()) == 1
    assert [r["epoch"] for r in read_history(run_copy)] == list(range(1, 61))


def test_overwrite_refuses_a_folder_that_is_not_a_vaekit_run(tmp_path):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("years of work")
    (mine / "config.json").write_text('{"editor": "vim"}')  # a config.json, but not vaekit's
    before = snapshot(mine)
    one_line(cli("train", "--out", str(mine), "--overwrite", "--no-progress", "--epochs", "1"),
             "not a vaekit run", "nothing was removed")
    assert snapshot(mine) == before


def test_a_refused_new_run_creates_no_folder(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    one_line(cli("train", "--out", str(out), "--set", "objective.schedule=exp"), "schedule")
    one_line(cli("train", "--out", str(out), "--hidden", "65536,65536"), "memory budget")
    assert not (tmp_path / "a").exists()


# 2. Every file vaekit writes is atomic.

def test_no_module_writes_files_except_through_the_atomic_writer():
    """The source scan that keeps class 2 closed: any new write must go through vaekit.files."""
    pattern = re.compile(r"""open\([^)]*['"][wax]b?\+?['"]|\.write_text\(|\.write_bytes\(|\.savefig\(\s*(?!buf)|"""
                         r"""np\.save\w*\(\s*(?!buf)|save_file\(|\.save\(\s*(?!buf)|os\.replace\(|shutil\.copy""")
    allowed = {"files.py", "runlock.py"}
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name in allowed:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line.split("#")[0]):
                offenders.append(f"{path.name}:{n}: {line.strip()}")
    assert offenders == []
    assert pattern.search("fig.savefig(path, dpi=100)") and pattern.search("open(p, 'w')")


def _complete_pngs(folder: Path) -> list[str]:
    names = []
    for p in sorted(folder.iterdir()):
        assert not p.name.endswith(".png") or p.stat().st_size > 0, p
        if p.suffix == ".png":
            with Image.open(p) as im:
                im.verify()
            names.append(p.name)
    return names


def test_kill_9_and_signals_during_plot_never_leave_a_broken_png(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert main(["plot", str(run)]) == 0
    good = _complete_pngs(run / "plots")
    assert len(good) >= 8
    rng = random.Random(1)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "vaekit", "plot", str(run)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        proc.stdout.readline()  # the first plot is written: the rest are being drawn and written
        time.sleep(rng.uniform(0.0, 0.6))
        sig = [signal.SIGKILL, signal.SIGINT, signal.SIGTERM][attempt]
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert "Traceback" not in err, err
        if sig != signal.SIGKILL and proc.returncode != 0:
            assert proc.returncode == 130, err
            assert not [p for p in (run / "plots").iterdir() if p.name.endswith(".tmp")]
        assert _complete_pngs(run / "plots") == good  # every plot complete, none lost
    assert main(["plot", str(run)]) == 0  # a stale temporary file from kill -9 is cleaned up
    assert not [p for p in (run / "plots").iterdir() if p.name.endswith(".tmp")]


_SIGNAL_IN_A_CALLBACK = """
import os, signal, sys, time, weakref
import vaekit.figures as figures
real = figures.plot_run
def plot_run(*args, **kwargs):  # the signal lands inside a weakref callback, as in matplotlib's during GC
    class Node:
        pass
    node = Node()
    def callback(_):
        os.kill(os.getpid(), signal.{name})
        for _ in range(10000):  # the handler runs here, where Python cannot pass an exception on
            pass
    ref = weakref.ref(node, callback)
    del node
    time.sleep(5)
    return real(*args, **kwargs)
figures.plot_run = plot_run
from vaekit.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_that_lands_in_a_finaliser_still_stops_the_command(trained, tmp_path, sig):
    """Python prints an exception raised in a weakref callback or __del__ and drops it: the signal was
    lost (the command went on) and the user saw a traceback. It is sent again and stops the command."""
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _SIGNAL_IN_A_CALLBACK.replace("{name}", sig.name), "plot",
                           str(trained), "--out", str(tmp_path / "plots")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr and "ignored" not in proc.stderr, proc.stderr
    assert "interrupted" in proc.stderr and time.monotonic() - t < 5 + 30 and not (tmp_path / "plots").exists()


def test_kill_9_during_the_end_of_training_grids_keeps_complete_pngs(tmp_path):
    out = tmp_path / "run"
    fit(tiny_cfg(1), out, **QUIET)
    rng = random.Random(2)
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "vaekit", "train", "--resume", str(out), "--epochs",
                                 str(2 + attempt), "--no-progress"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        proc.stdout.readline()  # "resuming ..."
        proc.stdout.readline()  # the epoch line: the grids are being written now
        time.sleep(rng.uniform(0.0, 0.05))
        proc.kill()
        proc.communicate()
        for name in ("samples.png", "reconstructions.png"):
            with Image.open(out / name) as im:
                im.verify()


# 3. Sizes are bounded by one budget.

def _zip_bomb(path: Path, inflated: int) -> None:
    """A real .npz whose one member is a valid .npy header followed by ``inflated`` zero bytes."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1), np.float32))
    header["shape"] = (inflated // (4 * 256), 256)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            import io

            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, header)
            f.write(buf.getvalue())
            chunk = b"\0" * (16 << 20)
            for _ in range(inflated // len(chunk)):
                f.write(chunk)


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory):
    path = tmp_path_factory.mktemp("bomb") / "bomb.npz"
    _zip_bomb(path, 1 << 30)
    return path


def test_a_real_zip_bomb_is_refused_before_inflating(zip_bomb, tmp_path):
    assert zip_bomb.stat().st_size < 2 << 20
    proc = cli("train", "--out", str(tmp_path / "r"), "--dataset", f"vectors:{zip_bomb}")
    one_line(proc, "bomb.npz", "inflates", "--max-ratio")
    proc = cli("train", "--out", str(tmp_path / "r"), "--dataset", f"vectors:{zip_bomb}", "--max-ratio", "1e6",
                  "--max-memory", "256M")
    one_line(proc, "bomb.npz", "memory budget of 256.0 MiB", "--max-memory")
    assert not (tmp_path / "r").exists()


def test_a_lying_data_shape_in_a_model_file_is_refused_without_allocating(run_copy):
    from safetensors.torch import load_file, save_file

    path = run_copy / ckpt.MODEL
    tensors = load_file(str(path))
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(n))["__metadata__"]
    for shape, needle in [([1, 30000, 30000], "memory budget"), ([1, 100000, 100000], "not an example shape"), ([0, 8, 8], "not an example shape"),
                          ([-3], "not an example shape"), (["8"], "not an example shape"), ([1, 8], "not an example shape")]:
        save_file(tensors, str(path), metadata={**meta, "data_shape": json.dumps(shape)})
        for cmd in (["evaluate", str(run_copy)], ["sample", str(run_copy), "-o", str(run_copy / "s.png")]):
            one_line(cli(*cmd), needle)


def test_giant_sparse_idx_files_are_refused_from_their_header(tmp_path):
    d = tmp_path / "idx"
    d.mkdir()
    header = b"\x00\x00\x08\x03" + (60000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        with open(d / name, "wb") as f:
            f.write(header)
            f.truncate(8 << 30)  # 8 GB, sparse: nothing is written, nothing may be read
    t = time.time()
    one_line(cli("train", "--dataset", "mnist", "--no-download", "--data-dir", str(d), "--out", str(tmp_path / "r")),
             "longer than its header says")
    huge = b"\x00\x00\x08\x03" + (4_000_000).to_bytes(4, "big") + (1000).to_bytes(4, "big") * 2
    with open(d / "train-images-idx3-ubyte", "wb") as f:
        f.write(huge)
        f.truncate(len(huge) + 4_000_000 * 1000 * 1000)
    one_line(cli("train", "--dataset", "mnist", "--no-download", "--data-dir", str(d), "--out", str(tmp_path / "r")),
             "train-images-idx3-ubyte", "memory budget")
    assert time.time() - t < 60


@pytest.mark.parametrize("argv,needle", [
    (["train", "--hidden", "65536,65536"], "memory budget"),
    (["train", "--latent-dim", "65536", "--hidden", "65536"], "memory budget"),
    (["train", "--dataset", "blobs:100000000"], "memory budget"),
    (["train", "--batch-size", "100000000"], "training examples"),
    (["train", "--image-size", "30000"], "data.image_size=30000"),
    (["train", "--set", "train.eval_batch_size=100000000000"], "eval_batch_size"),
], ids=["hidden", "latent", "blobs", "batch", "image-size", "eval-batch"])
def test_sizes_from_flags_are_refused_before_allocation(argv, needle, tmp_path):
    one_line(cli(*argv, "--out", str(tmp_path / "r"), "--no-progress"), needle)
    assert not (tmp_path / "r").exists()


def _cgroup(controller: str, settings: dict[str, int]):
    """A real control group with ``settings`` (as a container has): yields the path of its
    cgroup.procs. Needs root and a writable cgroup v1 hierarchy; skipped with the reason elsewhere."""
    group = Path("/sys/fs/cgroup") / controller / f"vaekit-test-{os.getpid()}"
    try:
        group.mkdir()
        for name, value in settings.items():
            (group / name).write_text(str(value))
    except OSError as e:
        pytest.skip(f"cannot make a limited {controller} cgroup here ({e.strerror or e})")
    yield group / "cgroup.procs"
    for _ in range(50):  # the group can be removed once its process has exited
        try:
            group.rmdir()
            break
        except OSError:
            time.sleep(0.1)


@pytest.fixture
def memory_cgroup():
    yield from _cgroup("memory", {"memory.limit_in_bytes": 1 << 30})


@pytest.fixture
def cpu_cgroup():
    yield from _cgroup("cpu", {"cpu.cfs_period_us": 100_000, "cpu.cfs_quota_us": 50_000})  # half a core


def test_the_default_budget_is_half_of_a_containers_memory_limit(memory_cgroup, tmp_path):
    """The kernel kills a process past its cgroup's limit however much memory the machine has, so the
    budget is half of the container's limit, not of the machine's memory."""
    procs = str(memory_cgroup)
    enter = lambda: Path(procs).write_text(str(os.getpid()))  # noqa: E731
    env = {k: v for k, v in os.environ.items() if k != "VAEKIT_MAX_MEMORY"}
    probe = subprocess.run([sys.executable, "-c", "from vaekit import budget; print(budget.default_limits().max_bytes)"],
                           capture_output=True, text=True, preexec_fn=enter, env=env, timeout=60)
    assert probe.returncode == 0 and int(probe.stdout) == 1 << 29, probe.stderr
    proc = vaekit("train", "--hidden", "8192,8192", "--out", str(tmp_path / "r"), "--no-progress",
                  preexec_fn=enter, env=env)  # 8192² weights with Adam: about 2 GiB
    one_line(proc, "over the memory budget of 512.0 MiB", "--max-memory")
    assert not (tmp_path / "r").exists()


def test_commands_use_no_more_threads_than_a_containers_cpu_quota(cpu_cgroup):
    """torch starts a thread per core it sees; under a CPU quota (half a core here) they would queue
    behind each other, so a command runs with the quota's cores, unless OMP_NUM_THREADS is set."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: no quota can be below it")
    script = ("import os, sys; from vaekit.cli import main; main(['presets']); import torch; "
              "print(torch.get_num_threads(), os.environ['OMP_NUM_THREADS'], file=sys.stderr)")
    procs = str(cpu_cgroup)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    run = lambda **extra: subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,  # noqa: E731
                                         timeout=120, env={**env, **extra},
                                         preexec_fn=lambda: Path(procs).write_text(str(os.getpid())))
    assert run().stderr.split() == ["1", "1"]
    assert run(OMP_NUM_THREADS="2").stderr.split() == ["2", "2"]  # the user's setting is kept


def test_sample_count_is_checked_against_the_budget(trained, tmp_path):
    one_line(cli("sample", str(trained), "-n", "10000000", "-o", str(tmp_path / "s.png")), "megapixel", ".npy")
    one_line(cli("sample", str(trained), "-n", "10000000", "-o", str(tmp_path / "s.npy"), "--max-memory", "64M"),
             "64.0 MiB")
    assert not list(tmp_path.iterdir())


# 4. Only regular files are read: FIFOs and devices are refused at once.

@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.npy"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("make_argv,needle", [
    (lambda f, run, t: ["train", "--dataset", f"vectors:{f}", "--out", f"{t}/r"], "FIFO"),
    (lambda f, run, t: ["train", "--dataset", "vectors:/dev/zero", "--out", f"{t}/r"], "character device"),
    (lambda f, run, t: ["train", "--config", str(f), "--out", f"{t}/r"], "FIFO"),
    (lambda f, run, t: ["train", "--config", "/dev/zero", "--out", f"{t}/r"], "character device"),
    (lambda f, run, t: ["evaluate", str(run)], "FIFO"),
], ids=["vectors-fifo", "vectors-dev-zero", "config-fifo", "config-dev-zero", "model-file-fifo"])
def test_special_files_are_refused_without_hanging(make_argv, needle, fifo, run_copy, tmp_path):
    (run_copy / ckpt.MODEL).unlink()
    os.mkfifo(run_copy / ckpt.MODEL)
    t = time.time()
    one_line(vaekit(*make_argv(fifo, run_copy, tmp_path), timeout=60), needle, "not a regular file")
    assert time.time() - t < 60


def test_fifo_as_an_idx_file_and_in_an_image_folder(tmp_path):
    d = tmp_path / "idx"
    d.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        os.mkfifo(d / name)
    one_line(vaekit("train", "--dataset", "mnist", "--data-dir", str(d), "--out", str(tmp_path / "r"), timeout=60),
             "FIFO")
    one_line(vaekit("train", "--dataset", "mnist", "--data-dir", "/dev", "--out", str(tmp_path / "r"), timeout=60),
             "--data-dir")
    assert not (tmp_path / "r").exists()


def test_no_module_reads_files_except_through_the_regular_file_reader():
    """The source scan that keeps class 4 closed: a read must go through vaekit.files (regular files
    only, size-checked); the package's own web assets and reference numbers are the exceptions."""
    pattern = re.compile(r"""\.read_text\(|\.read_bytes\(|(?<![\w.])open\(|np\.load\(\s*(?!f\b)|\bload_file\(""")
    allowed = {"files.py", "runlock.py"}
    own = ("WEB_DIR / file", 'resources.files("vaekit")')
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name in allowed:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if pattern.search(code) and not any(o in code for o in own):
                offenders.append(f"{path.name}:{n}: {line.strip()}")
    assert offenders == []
    assert pattern.search("x = path.read_text()") and pattern.search("with open(p) as f:")


def test_the_explorer_and_the_model_card_do_not_hang_on_a_fifo(run_copy, tmp_path):
    from vaekit.explore import Explorer
    from vaekit.modelcard import model_card

    os.mkfifo(run_copy / "metrics.json")
    t = time.time()
    assert "Metrics" in model_card(run_copy)
    assert Explorer(run_copy).curves()["metrics"] is None
    assert time.time() - t < 60


# 5. No tracebacks: damaged training state, configs, flags out of range.

def _tamper(path: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(n))["__metadata__"]
    change(tensors, meta)
    save_file(tensors, str(path), metadata=meta)


def _opt(meta, fn):
    o = json.loads(meta["optimizer"])
    fn(o)
    meta["optimizer"] = json.dumps(o)


TAMPER = {
    "truncated": None,
    "garbage": None,
    "rng-wrong-dtype": lambda t, m: t.__setitem__("rng.torch", t["rng.torch"].float()),
    "rng-missing": lambda t, m: t.pop("rng.data"),
    "rng-short": lambda t, m: t.__setitem__("rng.torch", t["rng.torch"][:10]),
    "optimizer-json-broken": lambda t, m: m.__setitem__("optimizer", "{not json"),
    "optimizer-missing": lambda t, m: m.pop("optimizer"),
    "moment-wrong-shape": lambda t, m: t.__setitem__("optim.0.exp_avg", torch.zeros(3)),
    "moment-for-no-parameter": lambda t, m: t.__setitem__("optim.99.exp_avg", torch.zeros(3)),
    "step-nan": lambda t, m: t.__setitem__("optim.0.step", torch.tensor(float("nan"))),
    "scalars-not-a-map": lambda t, m: _opt(m, lambda o: o.__setitem__("scalars", [1, 2])),
    "scalar-string": lambda t, m: _opt(m, lambda o: o.__setitem__("scalars", {"0.step": "many"})),
    "scalar-for-no-parameter": lambda t, m: _opt(m, lambda o: o.__setitem__("scalars", {"99.step": 1})),
    "scalar-key-garbage": lambda t, m: _opt(m, lambda o: o.__setitem__("scalars", {"x": 1})),
    "epoch-not-a-number": lambda t, m: m.__setitem__("epoch", "two"),
    "epoch-negative": lambda t, m: m.__setitem__("epoch", "-1"),
    "step-past-the-epoch": lambda t, m: (m.__setitem__("step", "999999"),
                                         t.__setitem__("partial.sums", torch.zeros(3)),
                                         t.__setitem__("rng.data_epoch_start", t["rng.data"].clone())),
    "mid-epoch-without-sums": lambda t, m: m.__setitem__("step", "3"),
    "weights-wrong-shape": lambda t, m: t.__setitem__("model.fc_mu.weight", torch.zeros(2, 2)),
    "weights-int": lambda t, m: t.__setitem__("model.fc_mu.weight", t["model.fc_mu.weight"].long()),
    "metadata-huge-number": lambda t, m: m.__setitem__("epoch", "9" * 5000),
}


def test_a_state_for_other_data_is_named_as_changed_data(run_copy):
    _tamper(run_copy / ckpt.STATE, lambda t, m: m.__setitem__("data_shape", "[1, 9, 9]"))
    one_line(cli("train", "--resume", str(run_copy), "--epochs", "3", "--no-progress"), "the data changed")


@pytest.mark.parametrize("variant", list(TAMPER))
def test_tampered_training_state_is_one_line_and_changes_nothing(variant, run_copy):
    path = run_copy / ckpt.STATE
    if variant == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif variant == "garbage":
        path.write_bytes(os.urandom(4096))
    else:
        _tamper(path, TAMPER[variant])
    before = snapshot(run_copy)
    one_line(cli("train", "--resume", str(run_copy), "--epochs", "3", "--no-progress"), "training_state.safetensors")
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("content,needle", [
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    ('{"preset": "caf\xe9"}'.encode("latin-1"), "not UTF-8"),
    (b"\x00" * 100, "not valid JSON"),
    (b'{"format_version": 1, "seed": 1e400}', "seed"),
    (b'{"format_version": 1, "seed": 340282366920938463463374607431768211456}', "seed"),
    (b'{"format_version": 1, "train": {"lr": NaN}}', "train.lr"),
    (b'{"format_version": 1, "model": {"hidden": [1e308]}}', "model.hidden"),
    (b'{"format_version": 1, "data": {"holdout_classes": [-1]}}', "holdout_classes"),
    (b" " * (2 << 20), "far larger than a config file"),
], ids=["nested", "latin-1", "nul-bytes", "seed-inf", "seed-2^128", "lr-nan", "hidden-1e308", "holdout-negative",
        "2MB-of-spaces"])
def test_hostile_config_json_is_one_line(content, needle, tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    one_line(cli("train", "--config", str(path), "--out", str(tmp_path / "r")), needle)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes(content)
    one_line(cli("evaluate", str(run)))


def test_real_enospc_during_a_safetensors_write_is_one_line(small_fs, tmp_path):
    """The disk fills while training runs, leaving room for the history but not the checkpoint:
    safetensors' own writer would raise SafetensorError; vaekit's atomic writer gets the OSError."""
    from conftest import fill_disk

    fs = small_fs(24 << 20)
    out = fs / "run"
    proc = _start_training(tiny_cfg(300), out, tmp_path)
    _wait_for(out / ckpt.HISTORY, proc)
    filler = fill_disk(fs, leave=48 << 10)  # history.jsonl fits, training_state.safetensors (~80 KB) not
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    line = err.strip()
    assert len(line.splitlines()) == 1 and "No space left on device" in line, err
    assert "training_state.safetensors" in line and "previous complete checkpoint is kept" in line
    epoch = load_run(out).epoch
    assert len(read_history(out)) in (epoch, epoch + 1)
    filler.unlink()
    assert fit(None, out, resume=True, epochs=epoch + 2, **QUIET).epoch == epoch + 2


def test_full_disk_during_plot_keeps_the_old_pngs(small_fs):
    import shutil

    from conftest import fill_disk

    fs = small_fs(24 << 20)
    out = fit(tiny_cfg(1), fs / "run", **QUIET).path
    assert main(["plot", str(out)]) == 0
    before = snapshot(out)
    filler = fill_disk(fs)
    one_line(cli("plot", str(out)), "No space left on device", "previous version is kept")
    filler.unlink()
    assert snapshot(out) == before
    shutil.rmtree(out / "plots")


# 6. Messages: one line, escaped, short; strict JSON; changed data named as such.

def test_control_characters_and_huge_values_stay_on_one_short_line(tmp_path):
    line = one_line(cli("train", "--set", "model.hidden=1\n2", "--out", str(tmp_path / "r")))
    assert "\\n" in line
    one_line(cli("train", "--set", "objective.sched\nule=exp", "--out", str(tmp_path / "r")), "\\n")
    one_line(cli("evaluate", str(tmp_path / "no\nsuch\x1b[31mrun")), "\\n", "\\x1b")
    huge = ",".join(["7"] * 3_000_000)  # a 6 MB value
    line = one_line(cli("train", "--set", f"model.hidden={huge}", "--out", str(tmp_path / "r")), "model.hidden")
    assert len(line) < 700
    line = one_line(cli("train", "--dataset", "folder:" + "x" * 100000, "--out", str(tmp_path / "r")))
    assert len(line) < 700


def test_dependency_warnings_are_one_line_each_and_none_on_an_error(capsys):
    import warnings

    from vaekit import cli
    from vaekit.errors import VaekitError

    def noisy(args):
        warnings.warn("first line\nsecond line of a library warning", RuntimeWarning)
        warnings.warn("first line\nsecond line of a library warning", RuntimeWarning)
        return 0

    def noisy_then_fails(args):
        warnings.warn("a warning that the error makes moot", RuntimeWarning)
        raise VaekitError("the one line")

    args = cli.build_parser().parse_args(["presets"])
    assert cli._run(noisy, args) == 0
    assert capsys.readouterr().err.strip().splitlines() == [
        "vaekit: warning: first line\\nsecond line of a library warning"]
    assert cli._run(noisy_then_fails, args) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["vaekit: error: the one line"]


def test_evaluate_json_is_strict_when_a_metric_is_not_finite(run_copy, capsys):
    from safetensors.torch import load_file, save_file

    path = run_copy / ckpt.MODEL
    tensors = load_file(str(path))
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(n))["__metadata__"]
    tensors["fc_logvar.bias"] = torch.full_like(tensors["fc_logvar.bias"], 1e6)  # exp() overflows: inf KL
    save_file(tensors, str(path), metadata=meta)
    assert main(["evaluate", str(run_copy), "--json", "--iwae-k", "0"]) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out and "Infinity" not in out
    m = json.loads(out)
    assert m["kl"] is None and "kl" in m["non_finite"]


def test_changed_data_is_named_as_changed_data(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):
        Image.new("L", (8, 8), 20 * i).save(folder / f"{i}.png")
    cfg = tiny_cfg(1)
    cfg.data.dataset = f"folder:{folder}"
    cfg.train.batch_size = 4
    out = fit(cfg, tmp_path / "run", **QUIET).path
    for f in folder.iterdir():
        Image.new("L", (12, 12), 50).save(f)
    for cmd in (["evaluate", str(out)], ["train", "--resume", str(out), "--epochs", "2"], ["plot", str(out)]):
        line = one_line(cli(*cmd), "the data changed since training", "[1, 12, 12]", "[1, 8, 8]")
        assert "do not match" not in line


def test_a_run_on_a_read_only_file_system_is_read_and_its_outputs_go_elsewhere(run_copy, read_only, tmp_path):
    """A run on read-only storage (a colleague's, a mounted archive): the reading commands work, each
    command that writes into the run folder names the flag that writes elsewhere, that flag works, and
    an output that cannot be written is refused before any work (nothing printed before the error).
    The disk is small: that it cannot be written is what a resume is told, not that it is nearly full."""
    ro = read_only(run_copy, 16 << 20)
    listing = sorted(p.name for p in ro.rglob("*"))
    code, out, err = run_cli("evaluate", str(ro), "--iwae-k", "2", "--no-progress")
    assert code == 0 and "metrics.json not written" in err and "Read-only file system" in err
    for argv, flag in ((["plot", str(ro)], "--out DIR"), (["report", str(ro), "--iwae-k", "0"], "-o FILE.html"),
                       (["probe", str(ro)], "-o FILE.png"), (["compare", str(ro), str(ro)], "-o FILE.png"),
                       (["train", "--resume", str(ro), "--epochs", "3"], "")):
        code, out, err = run_cli(*argv, "--no-progress")
        assert code == 2 and len(err.strip().splitlines()) == 1, (argv, err)
        assert f"{ro}: cannot write here (Read-only file system)" in err and flag in err, (argv, err)
    elsewhere = tmp_path / "mine"
    for argv in (["plot", str(ro), "--out", str(elsewhere / "plots")],
                 ["report", str(ro), "--iwae-k", "0", "-o", str(elsewhere / "r.html")],
                 ["probe", str(ro), "-o", str(elsewhere / "p.png")],
                 ["sample", str(ro), "-o", str(elsewhere / "s.png")],
                 ["reconstruct", str(ro), "-o", str(elsewhere / "r.png")]):
        code, out, err = run_cli(*argv, "--no-progress")
        assert code == 0, (argv, err)
    assert len(list((elsewhere / "plots").glob("*.png"))) >= 5 and (elsewhere / "r.html").stat().st_size > 10_000
    for argv in (["report", str(ro), "-o", str(ro / "r.html")], ["plot", str(ro), "--out", str(ro / "p")],
                 ["sample", str(ro), "-o", str(ro.parent / "s.png")], ["train", "--epochs", "1", "--out", str(ro / "n")]):
        code, out, err = run_cli(*argv, "--no-progress")
        assert code == 2 and out == "" and "(Read-only file system)" in err and "cannot write in" in err, (argv, err)
    assert sorted(p.name for p in ro.rglob("*")) == listing


def test_a_file_where_a_folder_must_be_is_named_as_such(run_copy, tmp_path):
    """A file named plots in the run folder: 'cannot create this folder (File exists)' did not say that
    the file was in the way."""
    shutil.rmtree(run_copy / "plots", ignore_errors=True)
    (run_copy / "plots").write_text("my notes")
    code, out, err = run_cli("plot", str(run_copy), "--no-progress")
    assert code == 2 and err.strip() == f"vaekit: error: {run_copy / 'plots'}: a file, where vaekit needs a folder of " \
        "this name; move it away" and (run_copy / "plots").read_text() == "my notes"
    from vaekit.files import make_folder, OutputError

    (tmp_path / "in-the-way").write_text("")
    with pytest.raises(OutputError, match=r"in-the-way/a/b: cannot create this folder \(.*in-the-way is a file, not a "
                                          r"folder\); choose another --out"):
        make_folder(tmp_path / "in-the-way" / "a" / "b", "choose another --out")


def _homeless_user() -> int | None:
    """A user id with no entry in the password database (as containers run with --user N), or None."""
    import pwd

    if os.geteuid() != 0:
        return None
    for uid in range(12345, 12400):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    return None


@pytest.mark.skipif(_homeless_user() is None or not shutil.which("setpriv"),
                    reason="needs root and setpriv, to run vaekit as a user id the system does not know")
def test_a_user_without_a_home_folder_gets_one_line_and_a_private_cache():
    """A container run as an unknown user id has no HOME: a `~` path was an internal error, and so was
    any cache (a folder of 1,000 images). Now the path is one line saying why, and the cache goes to a
    private temporary folder, said once and removed when the command ends."""
    import tempfile

    uid = _homeless_user()
    with tempfile.TemporaryDirectory(prefix="vaekit-homeless-") as where:  # pytest's own folders are private
        tmp_path = Path(where)
        tmp_path.chmod(0o777)
        _without_a_home(uid, tmp_path)


def _without_a_home(uid: int, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for i in range(1000):
        (photos / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4), i % 256, np.uint8)).save(photos / "ab"[i % 2] / f"{i}.png")
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "VAEKIT_CACHE", "XDG_CACHE_HOME", "TMPDIR")}

    def as_user(*args: str) -> subprocess.CompletedProcess:
        become = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]  # what `docker --user` does
        return subprocess.run([*become, sys.executable, "-m", "vaekit", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    home = as_user("train", "--no-progress", "--epochs", "1", "--out", "~/run")
    assert home.returncode == 2 and home.stderr.count("\n") == 1, home.stderr
    assert "~/run: '~' cannot be expanded: no home folder is known" in home.stderr and "give the full path" in home.stderr
    assert not (tmp_path / "~").exists()
    done = as_user("train", "--no-progress", "--epochs", "1", "--dataset", f"folder:{photos}", "--out", "run")
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "no home folder is known" in line]
    assert len(warned) == 1 and "VAEKIT_CACHE" in warned[0], done.stderr
    private = Path(re.search(r"caches in (\S+vaekit-cache-\w+)", warned[0]).group(1))
    assert not private.exists()  # its cache went with it
    assert (tmp_path / "run" / "model.safetensors").is_file()
