"""`vaekit sweep --beta ...`: one run per value, a table whose KL falls as beta grows, a figure, and a
sweep that continues where it stopped instead of training again."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import processes_naming, run_cli as run, wait_until
from vaekit.checkpoint import load_run, read_history

FLAGS = ["--dataset", "digits", "--hidden", "64", "--latent-dim", "6", "--epochs", "6", "--batch-size", "64",
         "--lr", "3e-3", "--iwae-k", "10", "--generation-n", "200", "--no-progress"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    code, stdout, err = run("sweep", "--beta", "0.25,4", *FLAGS, "--out", str(out))
    assert code == 0, err
    return out


def test_a_beta_sweep_trades_kl_for_reconstruction_and_resumes(swept):
    out = swept
    rows = json.loads((out / "sweep.json").read_text())
    assert [r["beta"] for r in rows] == [0.25, 4.0]
    low, high = rows
    assert high["kl"] < low["kl"] and high["recon"] > low["recon"]  # what beta trades
    assert high["active_units"] <= low["active_units"]
    for r in rows:
        assert r["fid"] > 0 and 0 <= r["precision"] <= 1 and r["linear_accuracy"] > 0.3
    assert "| β |" in (out / "sweep.md").read_text() and (out / "samples-by-beta.png").stat().st_size > 0
    assert json.loads((out / "beta-4" / "config.json").read_text())["objective"]["beta"] == 4.0
    mtime = (out / "beta-4" / "model.safetensors").stat().st_mtime_ns
    code, stdout, err = run("sweep", "--beta", "0.25,4", *FLAGS, "--out", str(out))
    assert code == 0 and stdout.count("kept") == 2, stdout
    assert (out / "beta-4" / "model.safetensors").stat().st_mtime_ns == mtime


def test_runs_trained_at_once_in_child_processes_give_the_same_sweep(swept, tmp_path):
    out = tmp_path / "jobs"
    code, stdout, err = run("sweep", "--beta", "0.25,4", *FLAGS, "--jobs", "2", "--out", str(out))
    assert code == 0, err
    assert stdout.count("a child process") == 2
    assert "done: 6 epochs" in (out / "logs" / "beta-4.log").read_text()
    for one, two in zip(json.loads((swept / "sweep.json").read_text()), json.loads((out / "sweep.json").read_text())):
        assert one["beta"] == two["beta"]
        for key in ("loss", "recon", "kl"):  # one thread per child instead of two: rounding may differ
            assert two[key] == pytest.approx(one[key], rel=2e-2), key


@pytest.mark.parametrize("values", ["", "1,x", "1,1", "-1,2", "nan", "0.5,1e300"])
def test_bad_beta_lists_are_one_line_errors(values, tmp_path):
    code, _, err = run("sweep", "--beta", values, *FLAGS, "--out", str(tmp_path / "s"))
    assert code == 2 and "--beta" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


def test_a_child_that_fails_stops_the_sweep_with_its_own_one_line_reason(tmp_path):
    out = tmp_path / "sweep"
    epochs = FLAGS.index("--epochs") + 1
    flags = FLAGS[:epochs] + ["2"] + FLAGS[epochs + 1:]  # two epochs each
    code, _, err = run("sweep", "--beta", "0.25,4", *flags, "--jobs", "2", "--out", str(out))
    assert code == 0, err
    (out / "beta-4" / "training_state.safetensors").write_bytes(b"not a checkpoint")
    longer = FLAGS[:epochs] + ["4"] + FLAGS[epochs + 1:]  # both runs must continue: beta-4 cannot
    code, _, err = run("sweep", "--beta", "0.25,4", *longer, "--jobs", "2", "--out", str(out))
    assert code == 2 and "beta = 4 failed" in err and len(err.strip().splitlines()) == 1, err
    assert (out / "logs" / "beta-4.log").is_file()
    from vaekit.checkpoint import load_run

    assert load_run(out / "beta-0.25").epoch >= 2  # the other run stopped cleanly and still loads


VECTORS = ["--dataset", "blobs:3", "--hidden", "8", "--latent-dim", "2", "--batch-size", "64", "--iwae-k", "2",
           "--generation-n", "50", "--no-progress"]


def _files(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_sweep_keeps_only_runs_of_its_own_config_and_extends_their_epochs(tmp_path):
    out = tmp_path / "sweep"
    code, stdout, err = run("sweep", "--beta", "1", *VECTORS, "--epochs", "1", "--out", str(out))
    assert code == 0, err
    assert "samples-by-beta" not in stdout and not (out / "samples-by-beta.png").exists()  # vectors: no picture
    before = _files(out)
    code, _, err = run("sweep", "--beta", "1", *VECTORS, "--hidden", "16", "--epochs", "1", "--out", str(out))
    assert code == 2 and "holds a run of another config (model.hidden [8] here, [16] asked)" in err, err
    assert "--overwrite" in err and _files(out) == before  # refused before anything was trained or written
    code, stdout, err = run("sweep", "--beta", "1", *VECTORS, "--epochs", "3", "--out", str(out))
    assert code == 0 and "resuming" in stdout, err
    assert [r["epoch"] for r in map(json.loads, (out / "beta-1" / "history.jsonl").read_text().splitlines())] == [1, 2, 3]
    code, _, err = run("sweep", "--beta", "1", *VECTORS, "--hidden", "16", "--epochs", "1", "--out", str(out),
                       "--overwrite")
    assert code == 0, err
    config = json.loads((out / "beta-1" / "config.json").read_text())
    assert config["model"]["hidden"] == [16] and len((out / "beta-1" / "history.jsonl").read_text().splitlines()) == 1


def _started(out, betas):
    return all((out / f"beta-{b}" / "history.jsonl").is_file() and read_history(out / f"beta-{b}") for b in betas)


def test_a_stopped_sweep_stops_its_children_and_says_how_to_continue(tmp_path):
    """Started the way a script's `vaekit sweep ... &` starts it (SIGINT ignored, and so in its children):
    SIGTERM stops every run at a checkpoint with one line saying how to go on; after kill -9 of the sweep
    itself, its runs stop too instead of training on unseen."""
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "vaekit", "sweep", "--beta", "0.5,1,2", "--dataset", "digits", "--hidden", "16",
           "--latent-dim", "2", "--epochs", "5000", "--jobs", "2", "--no-progress", "--out", str(out)]
    ignore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    try:
        proc = subprocess.Popen(cmd, preexec_fn=ignore_sigint, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: _started(out, ["0.5", "1"]), 120, "both runs training")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert err.strip().splitlines() == [f"vaekit: the sweep was stopped; each run in training saved a checkpoint "
                                             f"(logs in {out / 'logs'}); run the same sweep again to continue them"]
        for b in ("0.5", "1"):
            assert "saved a checkpoint" in (out / "logs" / f"beta-{b}.log").read_text()
            assert load_run(out / f"beta-{b}").epoch == len(read_history(out / f"beta-{b}")) >= 1
        assert processes_naming(str(out)) == []

        done = {b: len(read_history(out / f"beta-{b}")) for b in ("0.5", "1")}
        proc = subprocess.Popen(cmd, preexec_fn=ignore_sigint, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_until(lambda: all(len(read_history(out / f"beta-{b}")) > n + 1 for b, n in done.items()), 120,
                   "the sweep resuming its runs")
        children = [p for p in processes_naming(str(out)) if p != proc.pid]
        assert len(children) == 2
        proc.kill()
        proc.communicate(timeout=60)
        wait_until(lambda: processes_naming(str(out)) == [], 60, "the runs stopping when the sweep died")
        for b in ("0.5", "1"):
            assert load_run(out / f"beta-{b}").epoch == len(read_history(out / f"beta-{b}")) > done[b] + 1
    finally:  # a failure here must not leave runs training on
        for pid in processes_naming(str(out)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
