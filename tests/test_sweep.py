"""`vaekit sweep --beta ...`: one run per value, a table whose KL falls as beta grows, a figure, and a
sweep that continues where it stopped instead of training again."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli as run

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


@pytest.mark.parametrize("values", ["", "1,x", "1,1", "-1,2", "nan"])
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
