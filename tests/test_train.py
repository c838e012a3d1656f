"""The trainer: run folder contents, exact resume, refusals that protect data and earlier runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vaekit.checkpoint import HISTORY, read_history
from vaekit.errors import ConfigError, RunFolderError, VaekitError
from vaekit.evaluate import evaluate_run
from vaekit.train import fit

HISTORY_KEYS = {"epoch", "beta", "lr", "train_loss", "train_recon", "train_kl", "test_loss", "test_recon",
                "test_kl", "test_kl_per_dim", "train_seconds", "seconds"}


def _numbers(history):
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in history]


def test_training_writes_a_complete_run_folder_and_learns(digits_cfg, tmp_path):
    digits_cfg.train.epochs = 4
    run = fit(digits_cfg, tmp_path / "run", progress=False, log=lambda s: None)
    names = {p.name for p in run.path.iterdir()}
    assert {"config.json", "model.safetensors", "training_state.safetensors", "history.jsonl",
            "samples.png", "reconstructions.png"} <= names
    history = read_history(run.path)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4] and set(history[0]) == HISTORY_KEYS
    assert history[-1]["test_loss"] < history[0]["test_loss"]
    assert history[-1]["test_loss"] == pytest.approx(history[-1]["test_recon"] + history[-1]["test_kl"])
    assert sum(history[-1]["test_kl_per_dim"]) == pytest.approx(history[-1]["test_kl"])
    m = evaluate_run(run.path, progress=False, iwae_k=0)
    assert m["n"] == 359 and m["loss"] == pytest.approx(history[-1]["test_loss"], rel=1e-5)
    raw = run.path.joinpath("model.safetensors").read_bytes()
    assert b"pickle" not in raw and raw[8:9] == b"{"  # safetensors: 8-byte length, then a JSON header


def test_resume_is_exact(digits_cfg, tmp_path):
    digits_cfg.train.epochs = 4
    straight = fit(digits_cfg, tmp_path / "a", progress=False, log=lambda s: None)
    digits_cfg.train.epochs = 2
    fit(digits_cfg, tmp_path / "b", progress=False, log=lambda s: None)
    resumed = fit(None, tmp_path / "b", resume=True, epochs=4, progress=False, log=lambda s: None)
    assert _numbers(read_history(straight.path)) == _numbers(read_history(resumed.path))
    for (k, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert json.loads((tmp_path / "b" / "config.json").read_text())["train"]["epochs"] == 4


def test_resume_drops_history_past_the_checkpoint(digits_cfg, tmp_path):
    digits_cfg.train.epochs = 2
    run = fit(digits_cfg, tmp_path / "r", progress=False, log=lambda s: None)
    lines = (run.path / HISTORY).read_text().splitlines()
    extra = json.loads(lines[-1]) | {"epoch": 3}
    (run.path / HISTORY).write_text("\n".join(lines + [json.dumps(extra)]) + "\n")
    fit(None, run.path, resume=True, epochs=3, progress=False, log=lambda s: None)
    assert [r["epoch"] for r in read_history(run.path)] == [1, 2, 3]


def test_autoencoder_shares_the_trainer(digits_cfg, tmp_path):
    digits_cfg.model.kind = "ae"
    run = fit(digits_cfg, tmp_path / "ae", progress=False, log=lambda s: None)
    history = read_history(run.path)
    assert all(r["train_kl"] == 0 and r["test_kl"] == 0 for r in history)
    assert history[-1]["test_recon"] < history[0]["test_recon"]


def test_gaussian_on_vectors_and_no_grids(tmp_path):
    from vaekit.presets import get_preset

    x = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32) * 3
    np.save(tmp_path / "v.npy", x)
    cfg = get_preset("embedding-mlp").with_overrides({
        "data.dataset": f"vectors:{tmp_path / 'v.npy'}", "model.hidden": "32", "model.latent_dim": "4",
        "model.likelihood": "gaussian", "model.learn_sigma": "true", "train.epochs": "2"})
    run = fit(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    assert not (run.path / "samples.png").exists()
    assert run.model.likelihood.sigma != 1.0


def test_bernoulli_refuses_data_outside_unit_range(tmp_path):
    from vaekit.presets import get_preset

    np.save(tmp_path / "v.npy", np.linspace(-2, 2, 40, dtype=np.float32).reshape(10, 4))
    cfg = get_preset("tiny-4-8-2").with_overrides({
        "data.dataset": f"vectors:{tmp_path / 'v.npy'}", "model.likelihood": "bernoulli", "model.output": "auto"})
    with pytest.raises(VaekitError, match="use --likelihood gaussian"):
        fit(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_each_epochs_record_is_serialised_once_however_long_the_run(tmp_path, monkeypatch):
    """history.jsonl is rewritten whole each epoch; serialising every record again each time made a
    2,000-epoch run of a small model spend more time on its history than on training."""
    from vaekit import files
    from vaekit.presets import get_preset

    serialised: list[dict] = []
    real = files.strict_json
    monkeypatch.setattr(files, "strict_json", lambda v, *a, **k: serialised.append(v) or real(v, *a, **k))
    cfg = get_preset("tiny-4-8-2").with_overrides({"train.epochs": "40"})
    fit(cfg, tmp_path / "r", progress=False, log=lambda s: None)
    records = [v for v in serialised if isinstance(v, dict) and "test_loss" in v]
    assert [r["epoch"] for r in records] == list(range(1, 41))  # was 1 + 2 + ... + 40 = 820
    assert [r["epoch"] for r in read_history(tmp_path / "r")] == list(range(1, 41))
    monkeypatch.undo()
    fit(None, tmp_path / "r", resume=True, epochs=45, progress=False, log=lambda s: None)
    assert [r["epoch"] for r in read_history(tmp_path / "r")] == list(range(1, 46))


def test_existing_run_is_not_overwritten(digits_cfg, tmp_path):
    digits_cfg.train.epochs = 1
    fit(digits_cfg, tmp_path / "r", progress=False, log=lambda s: None)
    before = (tmp_path / "r" / "model.safetensors").read_bytes()
    with pytest.raises(RunFolderError, match="not empty"):
        fit(digits_cfg, tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == before
    (tmp_path / "r" / "plots").mkdir()
    (tmp_path / "r" / "plots" / "curves.png").write_bytes(b"old")
    (tmp_path / "r" / "my-notes.txt").write_text("mine")
    digits_cfg.seed = 99
    fit(digits_cfg, tmp_path / "r", overwrite=True, progress=False, log=lambda s: None)
    assert (tmp_path / "r" / "model.safetensors").read_bytes() != before
    assert not (tmp_path / "r" / "plots").exists()  # the old run's plots would mislead
    assert (tmp_path / "r" / "my-notes.txt").read_text() == "mine"  # files vaekit did not write stay
    (tmp_path / "r" / "plots").mkdir()
    (tmp_path / "r" / "plots" / "curves.png").write_bytes(b"old")
    (tmp_path / "r" / "plots" / "my-figure.png").write_bytes(b"mine")
    fit(digits_cfg, tmp_path / "r", overwrite=True, progress=False, log=lambda s: None)
    assert sorted(p.name for p in (tmp_path / "r" / "plots").iterdir()) == ["my-figure.png"]


def test_batch_larger_than_data_is_refused(digits_cfg, tmp_path):
    digits_cfg.train.batch_size = 5000
    with pytest.raises(ConfigError, match="larger than the 1438 training examples"):
        fit(digits_cfg, tmp_path / "r", progress=False)


@pytest.mark.filterwarnings("ignore:.*differ from the ones")  # the poisoned data are other data on purpose
def test_divergence_stops_with_a_message_and_keeps_last_good_checkpoint(digits_cfg, tmp_path):
    from dataclasses import replace

    from vaekit.data import load_dataset

    digits_cfg.train.epochs = 1
    fit(digits_cfg, tmp_path / "r", progress=False, log=lambda s: None)
    good = (tmp_path / "r" / "model.safetensors").read_bytes()
    data = load_dataset(digits_cfg.data)
    poisoned = data.train_x.float()
    poisoned[5, 0, 3, 3] = float("nan")
    with pytest.raises(VaekitError, match="epoch 2.*last good checkpoint"):
        fit(None, tmp_path / "r", resume=True, epochs=2, data=replace(data, train_x=poisoned),
            progress=False, log=lambda s: None)
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == good
    assert [r["epoch"] for r in read_history(tmp_path / "r")] == [1]


def test_max_minutes_stops_after_the_epoch_that_fills_the_budget(digits_cfg, tmp_path):
    digits_cfg.train.epochs = 5
    lines = []
    run = fit(digits_cfg, tmp_path / "r", progress=False, log=lines.append, max_minutes=1e-6)
    assert run.epoch == 1 and len(read_history(run.path)) == 1
    assert any("stopping after epoch 1 of 5" in line and "--resume" in line for line in lines)
    assert (run.path / "samples.png").exists()
    assert fit(None, run.path, resume=True, progress=False, log=lambda s: None).epoch == 5


@pytest.mark.parametrize("preset,shape,overrides", [
    ("digits-mlp", (1, 8, 8), {}), ("fashion-conv-2d", (1, 28, 28), {"model.conditional": True, "model.classes": 10}),
    ("fashion-conv-2d-ae", (1, 28, 28), {}), ("cifar10-resnet", (3, 32, 32), {}), ("mnist-vamp-iwae", (1, 28, 28), {}),
    ("mnist-hvae", (1, 28, 28), {}), ("embedding-mlp", (768,), {}),
])
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch's own import
def test_every_model_familys_step_compiles_to_one_graph(preset, shape, overrides):
    """--compile pays only when the whole step is one graph: a break (an operation torch.compile cannot
    trace, such as a ContextVar read in the noise) cuts it into pieces run apart, and the compiled
    step measured slower than the eager one on an H200. Traced, not compiled: seconds, no compiler."""
    import torch._dynamo as dynamo

    from vaekit.models import build_model
    from vaekit.presets import get_preset
    from vaekit.train import StepModule

    cfg = get_preset(preset).with_overrides(overrides)
    model = build_model(cfg.model, shape)
    y = torch.randint(0, 10, (8,)) if model.classes else None
    explained = dynamo.explain(StepModule(model, cfg))(torch.rand(8, *shape), 1.0, y)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), [
        r.reason.splitlines()[0] for r in explained.break_reasons]


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch's own import
def test_compile_on_the_cpu_trains_the_same_run_and_needs_a_compiler(digits_cfg, tmp_path):
    """--compile (torch.compile of the whole step) gives the eager run's numbers on the CPU; where no C++
    compiler works, it is refused in one line before any folder is made (it was an internal error after
    the run folder had been started)."""
    import os
    import subprocess
    import sys

    # half the 1,438 training digits per batch: every step has one shape, so the step is compiled once
    cfg = digits_cfg.with_overrides({"train.epochs": 2, "train.batch_size": 719, "model.hidden": "32"})
    eager = read_history(fit(cfg, tmp_path / "eager", progress=False, log=lambda s: None).path)
    compiled = read_history(fit(cfg.with_overrides({"train.compile": True}), tmp_path / "compiled", progress=False,
                                log=lambda s: None).path)
    assert len(compiled) == len(eager) == 2
    for a, b in zip(eager, compiled):
        for key in ("train_loss", "test_loss", "test_kl"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), key
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler")}
    r = subprocess.run([sys.executable, "-m", "vaekit", "train", "--compile", "--epochs", "1", "--no-progress",
                        "--out", str(tmp_path / "nocc")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--compile: torch.compile needs a working C++ compiler" in r.stderr
    assert not (tmp_path / "nocc").exists()


def test_a_warm_up_that_outlasts_the_run_is_said_before_training(tmp_path):
    """`--warmup 20 --epochs 2` trained a beta-VAE with beta 0.1 and `--lr-warmup 20` never reached --lr,
    without a word; each is now a note before the first epoch (a run that reaches them says nothing)."""
    from vaekit.config import RunConfig

    said: list[str] = []
    cfg = RunConfig().with_overrides({"objective.schedule": "linear", "objective.warmup_epochs": 20,
                                      "train.lr_warmup_epochs": 4.0, "train.epochs": 2})
    fit(cfg, tmp_path / "a", progress=False, log=said.append)
    notes = [s for s in said if s.startswith("note:")]
    assert notes == ["note: the beta warm-up (20 epochs) outlasts the run's 2: beta ends at 0.1, not 1; train 20 "
                     "epochs or more, or shorten --warmup",
                     "note: the learning-rate warm-up (4 epochs) outlasts the run's 2: the rate ends at 50% of --lr; "
                     "train longer or shorten --lr-warmup"]
    said.clear()
    fit(cfg.with_overrides({"objective.warmup_epochs": 2, "train.lr_warmup_epochs": 2.0}), tmp_path / "b",
        progress=False, log=said.append)
    assert not [s for s in said if s.startswith("note:")]
