"""Faults provoked for real: SIGINT/SIGTERM, kill -9 at random moments, half-written files,
NaN/inf, a full disk. Each checks that nothing is lost and the run resumes exactly."""

from __future__ import annotations

import json
import re
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import wait_until
from vaekit import checkpoint as ckpt
from vaekit.checkpoint import load_run, read_history
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.errors import RunFolderError, VaekitError
from vaekit import train as train_mod
from vaekit.train import FiniteGuard, fit

QUIET = dict(progress=False, log=lambda s: None)


def small_cfg(epochs: int = 8) -> RunConfig:
    return RunConfig(seed=5, data=DataConfig(dataset="digits", test_fraction=0.2, binarize="dynamic"),
                     model=ModelConfig(hidden=[32], latent_dim=4),
                     train=TrainConfig(epochs=epochs, batch_size=16, lr=2e-3))


def _strip(history):
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in history]


def _same_run(a: Path, b: Path) -> None:
    assert _strip(read_history(a)) == _strip(read_history(b))
    wa, wb = load_run(a).model.state_dict(), load_run(b).model.state_dict()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The reference: 8 epochs without interruption."""
    return fit(small_cfg(8), tmp_path_factory.mktemp("ref") / "run", **QUIET).path


def test_resume_4_then_8_equals_8_straight_bit_for_bit(straight, tmp_path):
    fit(small_cfg(4), tmp_path / "r", **QUIET)
    fit(None, tmp_path / "r", resume=True, epochs=8, **QUIET)
    _same_run(straight, tmp_path / "r")


def _start(cfg_path: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vaekit", "train", "--config", str(cfg_path), "--out", str(out), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_history(out: Path, lines: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    t = time.time()
    while time.time() - t < timeout and proc.poll() is None:
        h = out / "history.jsonl"
        if h.exists() and len(h.read_text().splitlines()) >= lines:
            return
        time.sleep(0.05)
    raise AssertionError("training did not get going")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])  # SIGHUP: the terminal closed
def test_signal_saves_a_checkpoint_mid_epoch_and_resume_is_exact(sig, straight, tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(small_cfg(8).to_json())
    out = tmp_path / "run"
    proc = _start(cfg, out)
    _wait_for_history(out, 2, proc)
    # land somewhere inside epoch 3 or 4: on a fast machine an epoch of this run takes ~30 ms, and a longer
    # wait could let all 8 epochs end first (the signal then meets the final grids, not the loop)
    time.sleep(random.Random(sig).uniform(0.0, 0.03))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"vaekit train --resume {out}" in err and sig.name in err and "Traceback" not in err
    state = ckpt.load_training_state(out, load_run(out).model, torch.optim.Adam(load_run(out).model.parameters()))
    assert state.epoch >= 2
    fit(None, out, resume=True, **QUIET)
    _same_run(straight, out)


def test_a_run_started_under_nohup_ignores_the_hangup_and_finishes(straight, tmp_path):
    """nohup (SIGHUP ignored) is the user's choice to keep training after the terminal closes."""
    cfg = tmp_path / "config.json"
    cfg.write_text(small_cfg(8).to_json())
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaekit", "train", "--config", str(cfg), "--out", str(out), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    _wait_for_history(out, 2, proc)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    _same_run(straight, out)


_SIGNAL_IN_PICTURES = """
import os, signal, sys, time
import vaekit.train as t
real = t.write_grids
def grids(*args, **kwargs):  # the run's weights are saved; the signal arrives as its pictures are made
    os.kill(os.getpid(), signal.{name})
    time.sleep(5)
    return real(*args, **kwargs)
t.write_grids = grids
from vaekit.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_while_the_pictures_are_made_says_the_run_is_complete(sig, tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(small_cfg(2).to_json())
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", _SIGNAL_IN_PICTURES.format(name=sig.name), "train", "--config",
                           str(cfg), "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"the run in {out} is complete" in proc.stderr and f"vaekit train --resume {out}" in proc.stderr
    assert load_run(out).epoch == 2 and not (out / train_mod.SAMPLES_PNG).exists()
    again = subprocess.run([sys.executable, "-m", "vaekit", "train", "--resume", str(out), "--no-progress"],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "writing the missing" in again.stdout
    for name in (train_mod.SAMPLES_PNG, train_mod.RECONSTRUCTIONS_PNG, "README.md"):
        assert (out / name).stat().st_size > 0, name
    assert len(read_history(out)) == 2  # nothing trained again


def test_kill_9_at_random_moments_never_loses_the_last_checkpoint(tmp_path):
    started = time.perf_counter()
    reference = fit(small_cfg(30), tmp_path / "reference", **QUIET).path
    window = min(1.5, (time.perf_counter() - started) / 8)  # five attempts can never finish the run
    cfg = tmp_path / "config.json"
    cfg.write_text(small_cfg(30).to_json())
    out = tmp_path / "run"
    rng = random.Random(0)
    kills = 0
    for attempt in range(5):  # each attempt trains one epoch plus at most an eighth of the run
        if (out / "config.json").exists():
            cmd = ["train", "--resume", str(out)]
        else:  # killed before the run existed: start it again
            cmd = ["train", "--config", str(cfg), "--out", str(out), "--overwrite"]
        proc = subprocess.Popen([sys.executable, "-m", "vaekit", *cmd, "--no-progress"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        proc.stdout.readline()  # training is under way (first epoch line, or "resuming ...")
        time.sleep(rng.uniform(0.0, window))  # then anywhere: a step, an evaluation, a checkpoint write
        proc.kill()
        _, err = proc.communicate()
        assert "Traceback" not in err, err
        if proc.returncode == 0:
            break
        kills += 1
        run = load_run(out)  # whatever moment the kill hit, the files on disk are complete
        assert len(read_history(out)) in (run.epoch, run.epoch + 1)
    assert kills >= 3
    fit(None, out, resume=True, **QUIET)
    _same_run(reference, out)


def test_half_written_temporary_files_are_ignored(tmp_path):
    run = fit(small_cfg(2), tmp_path / "r", **QUIET)
    for name in (ckpt.MODEL, ckpt.STATE):  # what a kill during a write leaves behind
        (run.path / f".{name}.tmp").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"partial")
    assert load_run(run.path).epoch == 2
    resumed = fit(None, run.path, resume=True, epochs=3, **QUIET)
    assert resumed.epoch == 3


class _DeferredGuard(FiniteGuard):
    """The GPU behaviour on the CPU: record on the device, read every 7 steps and before saves."""

    def __init__(self, device, every: int = 7) -> None:
        super().__init__(device, every)
        self.every = every


@pytest.mark.parametrize("deferred", [False, True], ids=["per-step-guard", "gpu-style-deferred-guard"])
@pytest.mark.filterwarnings("ignore:.*differ from the ones")  # the poisoned data are other data on purpose
def test_nan_batch_stops_at_its_step_and_names_the_term(tmp_path, monkeypatch, deferred):
    from dataclasses import replace

    from vaekit.data import load_dataset

    cfg = small_cfg(2)
    cfg.data.binarize = "none"
    fit(replace(cfg, train=replace(cfg.train, epochs=1)), tmp_path / "r", **QUIET)
    before = (tmp_path / "r" / ckpt.MODEL).read_bytes()
    data = load_dataset(cfg.data)
    poisoned = data.train_x.float()
    poisoned[:, 0, 3, 3] = float("nan")
    if deferred:
        monkeypatch.setattr(train_mod, "FiniteGuard", _DeferredGuard)
    with pytest.raises(VaekitError) as e:
        fit(None, tmp_path / "r", resume=True, epochs=2, data=replace(data, train_x=poisoned), **QUIET)
    msg = str(e.value)
    assert "reconstruction term became NaN/inf at epoch 2, step 1" in msg
    assert "last good checkpoint (epoch 1)" in msg and "--lr" not in msg or "learning rate" in msg
    assert (tmp_path / "r" / ckpt.MODEL).read_bytes() == before
    assert [r["epoch"] for r in read_history(tmp_path / "r")] == [1]


def test_absurd_learning_rate_is_caught_before_it_reaches_the_weights(tmp_path):
    cfg = small_cfg(3)
    cfg.train.lr = 1e30
    with pytest.raises(VaekitError, match=r"became NaN/inf at epoch 1, step \d+; no checkpoint was written yet.*"
                                          r"\(now 1e\+30; try 0.001\)"):
        fit(cfg, tmp_path / "r", **QUIET)
    # Nothing to resume: the folder keeps no half-made run, so the same command (a sane lr) runs again.
    assert [p.name for p in (tmp_path / "r").iterdir()] == [".vaekit.lock"]
    cfg.train.lr = 1e-3
    assert fit(cfg, tmp_path / "r", **QUIET).epoch == 3


def test_full_disk_during_training_keeps_the_previous_checkpoint(small_fs):
    """A real tmpfs fills up while a training process runs: the write that fails (history or
    checkpoint, whichever comes first) is one line, the last complete checkpoint stays, and after
    freeing space the run resumes to the end."""
    from conftest import fill_disk

    fs = small_fs(24 << 20)
    out = fs / "run"
    cfg = fs / "config.json"
    cfg.write_text(small_cfg(40).to_json())
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", "train", "--config", str(cfg), "--out", str(out),
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_history(out, 1, proc)
    filler = fill_disk(fs)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], err
    run = load_run(out)  # whatever write failed, the files on disk are complete
    assert len(read_history(out)) in (run.epoch, run.epoch + 1)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(RunFolderError, match=r"MiB free, .*; free some space on its disk \(a resumed run goes on"):
        fit(None, out, resume=True, **QUIET)  # still full: refused before touching the run, naming the fix that applies
    filler.unlink()
    assert fit(None, out, resume=True, **QUIET).epoch == 40


def test_too_little_free_space_is_refused_before_training(small_fs):
    from conftest import fill_disk

    fs = small_fs(8 << 20)  # less than the 16 MiB of slack a checkpoint needs
    fill_disk(fs, leave=1 << 20)
    with pytest.raises(RunFolderError, match="MiB free"):
        fit(small_cfg(1), fs / "r", **QUIET)
    assert not (fs / "r").exists()


def test_mismatched_weights_and_config_are_refused_naming_the_edited_setting(tmp_path):
    """A config.json edited after training (to resume with a larger latent, say) is named setting by
    setting, from the model settings the weights file records; files without that record (older
    runs) or with it damaged are refused as before, naming the first weight that differs and its shapes."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    run = fit(small_cfg(1), tmp_path / "r", **QUIET)
    cfg = json.loads((run.path / "config.json").read_text())
    saved = cfg["model"]["latent_dim"]
    cfg["model"]["latent_dim"] = 7
    (run.path / "config.json").write_text(json.dumps(cfg))
    for loading, saved_as in ((lambda: load_run(run.path), "the weights were saved with"),
                              (lambda: fit(None, run.path, resume=True, epochs=2, **QUIET), "the run was trained with")):
        with pytest.raises(RunFolderError, match=re.escape(f"config.json says model.latent_dim=7 where {saved_as} "
                                                           f"{saved}; edited after training?")):
            loading()
    weights = load_file(run.path / "model.safetensors")
    with safe_open(run.path / "model.safetensors", "pt") as f:
        meta = f.metadata()
    for record in (None, "{not json", "[1]"):
        older = {k: v for k, v in meta.items() if k != "config"}
        save_file(weights, run.path / "model.safetensors", metadata={**older, **({"config": record} if record else {})})
        with pytest.raises(RunFolderError, match=r"weights do not match config.json \(first difference: fc_mu.weight is "
                                                 rf"\({saved}, (\d+)\) in the file, \(7, \1\) for config.json\)"):
            load_run(run.path)


def test_a_resume_goes_on_with_the_settings_it_was_trained_with_not_an_edited_config(tmp_path):
    """config.json edited between a stop and --resume (a learning rate, a batch size, beta) was taken
    silently: the history then mixed two runs under one config. Refused, naming what changed, with
    every file kept; the settings a resume may change (epochs, device, the data's place) may be edited."""
    run = fit(small_cfg(1), tmp_path / "r", **QUIET)
    original = (run.path / "config.json").read_text()
    cfg = json.loads(original)
    lr = cfg["train"]["lr"]
    cfg["train"]["lr"], cfg["objective"]["beta"] = 0.5, 4.0
    (run.path / "config.json").write_text(json.dumps(cfg))
    before = {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()}
    with pytest.raises(RunFolderError, match=re.escape(f"says objective.beta=4.0 where the run was trained with 1.0; "
                                                       f"train.lr=0.5 where the run was trained with {lr}; edited")):
        fit(None, run.path, resume=True, epochs=2, **QUIET)
    assert {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()} == before
    cfg = json.loads(original)
    cfg["train"]["epochs"], cfg["train"]["eval_batch_size"] = 2, 7
    (run.path / "config.json").write_text(json.dumps(cfg))
    assert fit(None, run.path, resume=True, **QUIET).epoch == 2


def _train_through(entry: Path, out: Path) -> subprocess.CompletedProcess:
    """`vaekit train` of a one-epoch toy run, started by the script ``entry`` (which calls the CLI's main)."""
    return subprocess.run([sys.executable, str(entry), "train", "--preset", "tiny-4-8-2", "--epochs", "1",
                           "--no-progress", "--out", str(out)], capture_output=True, text=True, timeout=120)


def test_a_signal_that_lands_while_an_error_unwinds_does_not_hide_the_error(tmp_path):
    """torchrun stops the other processes of a job (SIGTERM) when one dies; rank 0, already unwinding
    its "another process stopped; the run keeps ..." error, said "interrupted" instead (a rare race of
    the killed-rank test). The error is the news: a real SIGTERM during its unwinding leaves it the line."""
    entry = tmp_path / "entry.py"
    entry.write_text(
        "import os, signal, sys, time\n"
        "import vaekit.train\n"
        "from vaekit.errors import RunFolderError\n"
        "def fit(*a, **k):\n"
        "    try:\n"
        "        raise RunFolderError('the news')\n"
        "    finally:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(5)  # the handler raises here, while the error unwinds\n"
        "vaekit.train.fit = fit\n"
        "from vaekit.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    r = _train_through(entry, tmp_path / "run")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == ["vaekit: error: the news"], r.stderr


@pytest.mark.parametrize("prefix,part", [("numpy.", "multiarray"), ("safetensors.", "")])
def test_ctrl_c_inside_a_compiled_modules_import_stops_the_command_in_one_line(tmp_path, prefix, part):
    """Ctrl-C a moment after starting a command lands in the imports of compiled modules: raised inside
    numpy's C core (under torch) or safetensors' Rust core it was swallowed (the run trained on as if
    never stopped) or left numpy half loaded ("internal error ImportError: cannot load module more
    than once"). A real SIGINT sent as that module starts to load: the command stops with vaekit's one
    line and writes nothing."""
    entry = tmp_path / "entry.py"
    entry.write_text(
        "import os, signal, sys\n"
        "class SignalAtImport:\n"
        "    sent = False\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if not self.sent and name.startswith({prefix!r}) and {part!r} in name:\n"
        "            SignalAtImport.sent = True\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return None\n"
        "sys.meta_path.insert(0, SignalAtImport())\n"
        "from vaekit.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print('signal sent:', SignalAtImport.sent)\n"
        "sys.exit(code)\n")
    r = _train_through(entry, tmp_path / "run")
    assert "signal sent: True" in r.stdout, (r.stdout, r.stderr)
    assert r.returncode == 130 and r.stderr.strip().splitlines() == [
        "vaekit: interrupted; files being written were left as they were"], r.stderr
    assert not (tmp_path / "run").exists()


def test_an_allocation_the_system_refuses_is_one_line_and_leaves_no_run(tmp_path):
    """Memory the budget allows but the system does not give (a ulimit here; a container's or a GPU's
    limit elsewhere): torch raises a RuntimeError, which was reported as "internal error ... a bug in
    vaekit". A real limit on the process's address space, a layer of 3.6 GB: one line, exit 2, and no
    half-made run."""
    import resource

    limit = 4 << 30

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    probe = subprocess.run([sys.executable, "-c", "import torch; torch.zeros(1000)"], preexec_fn=limited,
                           capture_output=True, text=True, timeout=120)
    if probe.returncode:
        pytest.skip(f"torch does not load within a {limit >> 30} GiB address space here")
    r = subprocess.run([sys.executable, "-m", "vaekit", "train", "--hidden", "30000,30000", "--epochs", "1",
                        "--no-progress", "--max-memory", "64G", "--out", str(tmp_path / "run")], preexec_fn=limited,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "vaekit: error: out of memory (an allocation of 3.4 GiB failed); lower --max-memory so vaekit refuses such "
        "inputs up front, or use a smaller model, batch or data set"], r.stderr
    run = tmp_path / "run"  # no half-made run: the same command runs again
    assert not run.exists() or [p.name for p in run.iterdir()] == [".vaekit.lock"]


def test_a_child_whose_parent_is_gone_before_it_starts_stops_in_one_line(tmp_path):
    """A sweep killed while it starts its runs: the child finds its parent gone and stops at once, as on
    SIGTERM, with vaekit's one line (it was a KeyboardInterrupt traceback, the signal landing before the
    command's own handling began), and starts no run."""
    from vaekit.children import PARENT

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    r = subprocess.run([sys.executable, "-m", "vaekit", "train", "--preset", "tiny-4-8-2", "--epochs", "1",
                        "--no-progress", "--out", str(tmp_path / "run")], env={**os.environ, PARENT: str(gone.pid)},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 130 and r.stderr.strip().splitlines() == [
        "vaekit: interrupted; files being written were left as they were"], r.stderr
    assert not (tmp_path / "run").exists()


def test_a_child_whose_multithreaded_parent_is_killed_gets_one_sigterm(tmp_path):
    """A sweep's runs (and --nproc's torchrun) follow their parent: when the parent process dies (kill -9),
    the child gets SIGTERM exactly once, so that it stops at a clean point, and not before, even when
    the thread that started it has ended. (The kernel's parent-death signal fires when that thread
    ends, and again for each thread of the parent as it exits; a second signal means "stop at once",
    which cut a checkpoint short.)"""
    child = tmp_path / "child.py"
    child.write_text(
        "import signal, sys, time\n"
        "from vaekit.children import follow_parent\n"
        "got = []\n"
        "signal.signal(signal.SIGTERM, lambda s, f: got.append(time.time()))\n"
        "follow_parent()\n"
        "open(sys.argv[2], 'w').write('up')\n"
        "end = time.monotonic() + 6\n"
        "while time.monotonic() < end:\n"
        "    time.sleep(0.05)\n"
        "open(sys.argv[1], 'w').write(' '.join(map(str, got)))\n")
    parent = tmp_path / "parent.py"
    parent.write_text(
        "import os, signal, subprocess, sys, threading, time\n"
        "import torch\n"
        "torch.set_num_threads(4)\n"
        "torch.randn(500, 500) @ torch.randn(500, 500)\n"
        "for _ in range(4):\n"
        "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "from vaekit.children import child_environment\n"
        "cmd = [sys.executable, sys.argv[1], sys.argv[2], sys.argv[3]]\n"
        "starter = threading.Thread(target=subprocess.Popen, args=(cmd,),\n"
        "                           kwargs=dict(env=child_environment(), start_new_session=True))\n"
        "starter.start()\n"
        "starter.join()  # the thread that started the child has ended; the process lives on\n"
        "while not os.path.exists(sys.argv[3]):\n"
        "    time.sleep(0.05)\n"
        "time.sleep(1)\n"
        "open(sys.argv[4], 'w').write(str(time.time()))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    got, up, killed = tmp_path / "got", tmp_path / "up", tmp_path / "killed"
    subprocess.run([sys.executable, str(parent), str(child), str(got), str(up), str(killed)], timeout=120)
    wait_until(got.exists, 30, "the child's record of its signals")
    times = [float(t) for t in got.read_text().split()]
    assert len(times) == 1 and times[0] >= float(killed.read_text()), (times, killed.read_text())
