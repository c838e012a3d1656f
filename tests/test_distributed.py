"""Data-parallel training with real processes (torchrun, gloo on the CPU): the same losses and weights
as one process, checkpoints that resume under another number of processes, a killed rank that ends
the job with the last checkpoint intact, and rank 0 as the only writer."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import processes_naming
from vaekit import distributed
from vaekit.checkpoint import load_run, read_history

TRAIN = ["train", "--preset", "digits-mlp", "--hidden", "32", "--latent-dim", "4", "--batch-size", "50",
         "--binarize", "dynamic", "--no-progress", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _torchrun(n: int, *args: str, entry: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
            *(entry or ["-m", "vaekit"]), *args]


def _why(r: subprocess.CompletedProcess) -> str:
    """A failed launch's stderr: its start holds the failing rank's own message, its end torchrun's summary."""
    return r.stderr if len(r.stderr) < 3000 else r.stderr[:2000] + "\n[...]\n" + r.stderr[-1000:]


def _run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def _losses(run: Path) -> list[tuple[float, float]]:
    return [(r["train_loss"], r["test_loss"]) for r in read_history(run)]


def _same_weights(a: Path, b: Path, atol: float = 2e-5) -> None:
    wa, wb = load_run(a).model.state_dict(), load_run(b).model.state_dict()
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=atol, rtol=1e-4), k


def test_shares_split_every_batch_exactly() -> None:
    for world in (1, 2, 3, 7):
        for n in (7, 50, 64, 101):
            shares = [distributed.Group(r, world).share(n) for r in range(world)]
            assert sum(size for _, size in shares) == n
            assert [off for off, _ in shares] == [sum(s for _, s in shares[:r]) for r in range(world)]


def test_noise_drawn_in_shares_is_the_global_draw() -> None:
    from vaekit.models.distributions import gaussian_noise

    like = torch.zeros(3, 10, 4)  # (samples, batch, latent)
    torch.manual_seed(5)
    whole = gaussian_noise(like)
    parts = []
    for rank in range(3):
        off, size = distributed.Group(rank, 3).share(10)
        torch.manual_seed(5)
        with distributed.batch_shard(off, size, 10):
            parts.append(gaussian_noise(like[:, off: off + size]))
    assert torch.equal(torch.cat(parts, dim=1), whole)


def _only_rank_0_may_write(folder: Path) -> list[str]:
    """An entry point that runs the vaekit command with the other ranks' one file writer and run lock
    replaced by a failure."""
    entry = folder / "entry.py"
    entry.write_text(
        "import os, sys\n"
        "import vaekit.files, vaekit.train\n"
        "if os.environ['RANK'] != '0':\n"
        "    def refuse(*a, **k):\n"
        "        raise SystemExit(f'rank {os.environ[\"RANK\"]} tried to write {a[:1]}')\n"
        "    vaekit.files.atomic_output = refuse\n"
        "    vaekit.train.run_lock = refuse\n"
        "from vaekit.cli import main\n"
        "sys.exit(main())\n")
    return [str(entry)]


@pytest.mark.parametrize("objective", [[], ["--objective", "iwae", "--iwae-samples", "3", "--conditional"]],
                         ids=["elbo", "iwae-conditional"])  # each rank takes the labels of its share
def test_two_processes_train_the_same_run_as_one_and_only_rank_0_writes(tmp_path: Path, objective: list[str]) -> None:
    args = [*TRAIN, "--epochs", "3", *objective]
    one = _run(_torchrun(1, *args, "--out", str(tmp_path / "one")))
    two = _run(_torchrun(2, *args, "--out", str(tmp_path / "two"), entry=_only_rank_0_may_write(tmp_path)))
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, _why(two)
    la, lb = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(la) == len(lb) == 3
    for (ta, ea), (tb, eb) in zip(la, lb):
        assert tb == pytest.approx(ta, rel=1e-5) and eb == pytest.approx(ea, rel=1e-5)
    _same_weights(tmp_path / "one", tmp_path / "two")
    assert two.stdout.count("done: 3 epochs") == 1  # rank 0 speaks for the job


def _wait_for_epochs(run: Path, n: int, proc: subprocess.Popen, limit: float = 180) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if (run / "history.jsonl").exists() and len(read_history(run)) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended early: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    pytest.fail("no epoch finished in time")


EPOCHS = 14  # enough that a fast machine cannot finish before the signal lands (it is sent within ~0.2 s of epoch 2)
LONG = [*TRAIN, "--epochs", str(EPOCHS)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The run the interrupted ones must match, trained once without a stop."""
    ref = tmp_path_factory.mktemp("ref") / "ref"
    done = _run(_torchrun(1, *LONG, "--out", str(ref)))
    assert done.returncode == 0, _why(done)
    return ref


@pytest.mark.parametrize("first,then", [(2, 1), (1, 2)])
def test_a_run_stopped_under_one_count_resumes_under_another(tmp_path: Path, uninterrupted: Path, first: int,
                                                            then: int) -> None:
    args = LONG
    run = tmp_path / "run"
    proc = subprocess.Popen(_torchrun(first, *args, "--out", str(run)), env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_epochs(run, 2, proc)
    proc.send_signal(signal.SIGTERM)  # to the launcher, which passes it on to every process
    out, err = proc.communicate(timeout=90)
    assert proc.returncode != 0
    assert "continue with: vaekit train --resume" in err
    assert err.count("stopped at") == 1, err[-2000:]  # rank 0 alone says where
    done = len(read_history(run))
    assert 2 <= done < EPOCHS
    resumed = _run(_torchrun(then, "train", "--resume", str(run), "--no-progress"))
    assert resumed.returncode == 0, _why(resumed)
    for (ta, ea), (tb, eb) in zip(_losses(uninterrupted), _losses(run)):
        assert tb == pytest.approx(ta, rel=1e-5) and eb == pytest.approx(ea, rel=1e-5)
    assert len(_losses(run)) == EPOCHS
    _same_weights(uninterrupted, run)


def test_two_nodes_with_a_rendezvous_train_the_same_run_as_one(tmp_path: Path, uninterrupted: Path) -> None:
    """The multi-node command of the README (torchrun's c10d rendezvous, run once per node), with two
    "nodes" on this machine, one process each: the same losses and weights as one process."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "run"
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend",
            "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "vaekit-test", "-m", "vaekit", *LONG,
            "--out", str(run)]
    logs = [(tmp_path / f"node{i}.out", tmp_path / f"node{i}.err") for i in range(2)]
    nodes = []
    for out, err in logs:  # into files, not pipes: a node blocked on a full pipe nobody reads would hold the other
        with open(out, "w") as o, open(err, "w") as e:
            nodes.append(subprocess.Popen(node, env=ENV, text=True, stdout=o, stderr=e))
    try:
        for p in nodes:
            p.wait(timeout=240)
    finally:
        for p in nodes:
            p.kill()
    said = [(out.read_text(), err.read_text()) for out, err in logs]
    assert [p.returncode for p in nodes] == [0, 0], [err[-2000:] for _, err in said]
    assert sum(out.count(f"done: {EPOCHS} epochs") for out, _ in said) == 1  # rank 0, on whichever node
    for (ta, ea), (tb, eb) in zip(_losses(uninterrupted), _losses(run)):
        assert tb == pytest.approx(ta, rel=1e-5) and eb == pytest.approx(ea, rel=1e-5)
    _same_weights(uninterrupted, run)


def _worker_pids(launcher: int) -> dict[str, int]:
    """RANK -> pid of the processes torchrun started (children of its agent)."""
    pids = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, StopIteration, ValueError):
            continue
        if ppid == launcher:
            rank = next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"RANK=")), None)
            if rank is not None:
                pids[rank] = int(entry.name)
    return pids


@pytest.mark.parametrize("launcher", ["torchrun", "nproc"])
def test_a_killed_rank_ends_the_job_with_the_last_checkpoint_intact(tmp_path: Path, launcher: str) -> None:
    """kill -9 of one process (what the out-of-memory killer does): the job ends within a minute, the
    run loads, and what is said is where to go on (one line from `--nproc`, naming the killed process),
    not an internal error."""
    run = tmp_path / "run"
    args = [*TRAIN, "--epochs", "200", "--out", str(run)]
    cmd = _torchrun(2, *args) if launcher == "torchrun" else [sys.executable, "-m", "vaekit", *args, "--nproc", "2"]
    proc = subprocess.Popen(cmd, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_epochs(run, 1, proc)
    pids = _worker_pids(proc.pid if launcher == "torchrun" else _only_child(proc.pid))
    assert set(pids) == {"0", "1"}, pids
    os.kill(pids["1"], signal.SIGKILL)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=120)
    assert time.monotonic() - t0 < 60 and proc.returncode != 0
    loaded = load_run(run)
    assert loaded.epoch >= 1 and len(read_history(run)) == loaded.epoch
    assert "internal error" not in err
    resume = f"the run in {run} keeps its last checkpoint; continue with: vaekit train --resume {run}"
    if launcher == "torchrun":
        assert "vaekit: error: another process of this job stopped (" in err and resume in err, _why(proc)
    else:
        assert err.strip().splitlines() == [
            "vaekit: error: process 1 of the job was killed by SIGKILL (kill -9, or the system's out-of-memory "
            f"killer); {resume}"], err


def test_the_launcher_says_each_cause_once(tmp_path: Path) -> None:
    """What the processes of a --nproc job left: the same message once, different ones each with its
    rank, and an echo of another's failure only where no cause was said (its advice joins the cause)."""
    from vaekit.launch import job_errors, job_warnings, leave_error, leave_warnings

    def said(*records: tuple[str, str, bool, str]) -> list[tuple[str, str]]:
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        for rank, message, echo, then in records:
            with pytest.MonkeyPatch.context() as env:
                env.setenv("VAEKIT_JOB_ERRORS", str(folder))
                env.setenv("RANK", rank)
                env.setenv("WORLD_SIZE", "3")
                assert leave_error(message, echo, then)
        return job_errors(folder)

    assert said(("1", "bad", False, ""), ("0", "bad", False, ""), ("2", "bad", False, "")) == [("", "bad")]
    assert said(("0", "no file", False, ""), ("2", "no GPU", False, "")) == [("", "no file"), (" (rank 2)", "no GPU")]
    assert said(("0", "peer gone; kept", True, "kept"), ("1", "peer gone", True, "")) == [("", "peer gone; kept")]
    assert said(("0", "peer gone; kept", True, "kept"), ("2", "disk", False, "")) == [(" (rank 2)", "disk; kept")]
    assert not leave_error("alone", False, "")  # not in a job: the process says it itself
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VAEKIT_JOB_ERRORS", str(tmp_path / "0"))
        env.setenv("WORLD_SIZE", "3")
        for rank, lines in (("2", ["b", "c"]), ("0", ["a", "b"])):
            env.setenv("RANK", rank)
            assert leave_warnings(lines)
    assert job_warnings(tmp_path / "0") == [("", "a"), ("", "b"), (" (rank 2)", "c")]
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "x.json").write_text('{"rank": "x", "message": 3}')  # what no process leaves: passed over
    (tmp_path / "odd" / "y.json").write_text("[1]")
    assert job_errors(tmp_path / "odd") == []


def _only_child(pid: int) -> int:
    """The one process ``pid`` started (vaekit's launcher runs torchrun)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_nproc_runs_the_launcher_for_you_and_says_each_warning_once(tmp_path: Path) -> None:
    """Every process reads the data and warns alike (an animated image read as its first frame): the
    launcher says it once."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(40):
        Image.fromarray(np.full((8, 8), 5 * i, np.uint8)).save(folder / f"{i}.png")
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (0, 255)]
    frames[0].save(folder / "moving.gif", save_all=True, append_images=frames[1:])
    r = _run([sys.executable, "-m", "vaekit", "train", "--dataset", f"folder:{folder}", "--hidden", "16",
              "--latent-dim", "2", "--batch-size", "8", "--epochs", "1", "--no-progress", "--nproc", "2", "--out",
              str(tmp_path / "r")])
    assert r.returncode == 0, _why(r)
    assert r.stderr.strip().splitlines() == [f"vaekit: warning: {folder}: 1 animated image, e.g. {folder}/moving.gif: "
                                             "the first frame of it is read"], r.stderr
    assert json.loads((tmp_path / "r" / "config.json").read_text())["train"]["batch_size"] == 8
    assert load_run(tmp_path / "r").epoch == 1


def test_a_batch_smaller_than_the_processes_is_refused_as_such() -> None:
    """--batch-size 1 with 3 processes was refused as if only "the last batch has 1"."""
    from vaekit.config import RunConfig
    from vaekit.distributed import Group
    from vaekit.errors import ConfigError
    from vaekit.train import check_shares

    cfg = RunConfig().with_overrides({"train.batch_size": 2})
    with pytest.raises(ConfigError, match=r"^--batch-size 2: too few examples per batch to give each of 3 processes one; give at least 3$"):
        check_shares(cfg, 1800, Group(rank=0, world=3))
    check_shares(cfg, 1800, Group(rank=0, world=2))


def test_refusals_under_torchrun(tmp_path: Path) -> None:
    r = _run(_torchrun(2, *TRAIN, "--epochs", "1"))
    assert r.returncode != 0 and "give --out RUN_DIR" in r.stderr
    r = _run([sys.executable, "-m", "vaekit", *TRAIN, "--epochs", "1", "--batch-size", "1437", "--nproc", "2", "--out",
              str(tmp_path / "b")])  # every process refuses: the launcher says it once
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "vaekit: error: --batch-size 1437: with 1438 training examples the last batch has 1, too few to give each of 2 "
        "processes one; choose another batch size"], r.stderr
    assert not (tmp_path / "b").exists()
    from vaekit.cli import main
    from vaekit.runlock import run_lock

    run = tmp_path / "held"
    assert main(["train", "--preset", "tiny-4-8-2", "--epochs", "1", "--out", str(run), "--no-progress"]) == 0
    with run_lock(run, "train"):  # rank 0 alone takes the lock: the others are stopped with the job, unheard
        r = _run([sys.executable, "-m", "vaekit", "train", "--resume", str(run), "--epochs", "2", "--nproc", "2"])
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"vaekit: error: {run}: in use by another vaekit process (pid {os.getpid()}, vaekit train); wait for it to "
        "finish or stop it, then try again"], r.stderr


def test_a_job_stopped_while_its_processes_start_says_so_in_one_line(tmp_path: Path) -> None:
    """Ctrl-C to `vaekit train --nproc 2` while its processes are still starting (importing, before
    their own signal handling): they end without a word, and the job ended with exit 130 and nothing
    said. The launcher says it for them: one line, and no run."""
    from conftest import wait_until

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "vaekit", *TRAIN, "--epochs", "2000", "--nproc", "2", "--out", str(run)]
    proc = subprocess.Popen(cmd, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: len(processes_naming(str(run))) >= 4 or proc.poll() is not None, 60,
               "the launcher, torchrun and both processes")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("vaekit: interrupted; files being written were left as they were") or \
        "saved a checkpoint" in err, err  # the processes may have got as far as training: then where it stopped
    assert processes_naming(str(run)) == []


def test_the_nproc_launcher_speaks_in_one_line_and_takes_its_processes_with_it(tmp_path: Path) -> None:
    """`vaekit train --nproc 2`: a Ctrl-C (SIGINT to the terminal's process group) stops the job once, with
    vaekit's one line (none of torchrun's warnings or tracebacks); kill -9 of the launcher itself stops
    torchrun and every process at a checkpoint instead of leaving them training unseen."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "vaekit", *TRAIN, "--epochs", "2000", "--nproc", "2", "--out", str(run)]
    env = {k: v for k, v in ENV.items() if k != "OMP_NUM_THREADS"}  # the launcher shares out the cores itself
    try:
        proc = subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        _wait_for_epochs(run, 2, proc)
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 130, err
        assert err.strip().splitlines() == [f"vaekit: SIGINT: stopped at {err.split('stopped at ')[1].split(' and')[0]} "
                                            f"and saved a checkpoint in {run}; continue with: vaekit train --resume {run}"]
        done = len(read_history(run))
        resume = [sys.executable, "-m", "vaekit", "train", "--resume", str(run), "--nproc", "2", "--no-progress"]
        proc = subprocess.Popen(resume, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _wait_for_epochs(run, done + 2, proc)
        proc.kill()
        t0 = time.monotonic()
        proc.communicate(timeout=90)  # the pipes close when torchrun and its processes have gone
        assert time.monotonic() - t0 < 60
        assert processes_naming(str(run)) == []
        assert load_run(run).epoch == len(read_history(run)) >= done + 2
    finally:  # a failure here must not leave processes training on
        for pid in processes_naming(str(run)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
