"""Handing a model on: ONNX graphs that give PyTorch's numbers, the run folder's model card with the
run's real metrics, TensorBoard event files with the expected tags, and a run folder that loads
anywhere without its training data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import run_cli as run
from vaekit.checkpoint import load_run
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.modelcard import write_model_card
from vaekit.train import fit

QUIET = dict(progress=False, log=lambda s: None)
DIGITS = DataConfig(dataset="digits", test_fraction=0.2)


def _cfg(model: ModelConfig, data: DataConfig = DIGITS, epochs: int = 2, **train) -> RunConfig:
    return RunConfig(seed=4, data=data, model=model, train=TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, **train))


MODELS = {
    "vae-mlp": ModelConfig(hidden=[32], latent_dim=4),
    "ae": ModelConfig(kind="ae", hidden=[32], latent_dim=3),
    "hvae": ModelConfig(kind="hvae", hidden=[32, 16], latent_dims=[5, 3], block_width=16),
    "vae-conv-gaussian": ModelConfig(arch="conv", hidden=[8, 16], latent_dim=4, likelihood="gaussian", learn_sigma=True),
    "cvae-conv": ModelConfig(arch="conv", hidden=[8, 16], latent_dim=3, conditional=True),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_graphs_match_pytorch_at_any_batch_size(name, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra (pip install -e '.[onnx]') is not installed")
    path = fit(_cfg(MODELS[name]), tmp_path / name, **QUIET).path
    code, out, err = run("export", str(path))
    assert code == 0, err
    info = json.loads((path / "onnx" / "export.json").read_text())
    model = load_run(path).model
    for batch in (1, 7):  # traced with 2 rows: the batch axis must be dynamic
        x = torch.rand(batch, *model.data_shape)
        y = torch.randint(10, (batch,)) if model.classes else None  # a conditional model's labels: int64 input y
        labels = {"y": y.numpy()} if model.classes else {}
        assert ("conditional" in info) == bool(model.classes)
        assert not model.classes or info["conditional"]["class_names"] == [str(c) for c in range(10)]
        enc = ort.InferenceSession(str(path / "onnx" / "encoder.onnx")).run(None, {"x": x.numpy(), **labels})
        mu, logvar = model.encode(x, y)
        want = [mu] if logvar is None else [mu, logvar]
        assert len(enc) == len(want) == len(info["encoder"]["outputs"])
        for got, ref in zip(enc, want):
            np.testing.assert_allclose(got, ref.detach().numpy(), rtol=1e-5, atol=1e-5)
        z = torch.randn(batch, model.latent_dim)
        params, mean = ort.InferenceSession(str(path / "onnx" / "decoder.onnx")).run(None, {"z": z.numpy(), **labels})
        with torch.no_grad():
            ref_params = model.decode(z, y)
            np.testing.assert_allclose(params, ref_params.numpy(), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(mean, model.mean(ref_params).numpy(), rtol=1e-5, atol=1e-5)


def test_export_refuses_what_it_cannot_do_before_writing(tmp_path):
    code, _, err = run("export", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert code == 2 and "missing" in err and not (tmp_path / "o").exists()
    path = fit(_cfg(MODELS["vae-mlp"], epochs=1), tmp_path / "r", **QUIET).path
    (tmp_path / "file").write_text("x")
    code, _, err = run("export", str(path), "--out", str(tmp_path / "file"))
    assert code == 2 and "not a folder" in err and len(err.strip().splitlines()) == 1


def test_every_run_gets_a_model_card_with_its_real_metrics(tmp_path, monkeypatch):
    path = fit(_cfg(MODELS["vae-mlp"]), tmp_path / "r", **QUIET).path
    card = (path / "README.md").read_text()
    last = json.loads((path / "history.jsonl").read_text().splitlines()[-1])
    assert card.startswith("---\nlibrary_name: vaekit\n") and "\n---\n" in card
    assert f"| loss | {last['test_loss']:.4f} |" in card and "after epoch 2" in card
    code, out, err = run("evaluate", str(path), "--iwae-k", "20", "--json")
    assert code == 0, err
    metrics = json.loads(out)
    assert json.loads((path / "metrics.json").read_text())["nll_iwae"] == metrics["nll_iwae"]
    card = (path / "README.md").read_text()
    assert f"| nll_iwae | {metrics['nll_iwae']:.4f} |" in card and "K = 20" in card
    assert f"| active_units | {metrics['active_units']} |" in card  # a count, not 4.0000
    assert "vaekit.load_run" in card and "Intended use and limits" in card
    fit(None, path, resume=True, epochs=3, **QUIET)  # trained on: the evaluation is of older weights
    card = (path / "README.md").read_text()
    last = json.loads((path / "history.jsonl").read_text().splitlines()[-1])
    assert f"| loss | {last['test_loss']:.4f} |" in card and "nll_iwae |" not in card
    assert "after epoch 3; `metrics.json` is from epoch 2" in card
    # the card's "how to use" holds: the folder loads elsewhere, with the data gone, and its Python runs
    moved = tmp_path / "elsewhere" / "my model"
    shutil.copytree(path, moved)
    assert load_run(moved).model.sample(3).shape == (3, 1, 8, 8)
    write_model_card(moved)
    card = (moved / "README.md").read_text()
    assert "vaekit sample 'my model' -n 64" in card  # the shell lines quote the folder's name
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(moved.parent)
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102 - the card's own example
    assert scope["x"].shape == (16, 1, 8, 8)


def test_evaluate_on_a_read_only_or_full_run_folder_still_prints_its_metrics(small_fs):
    """On a real tmpfs, remounted read-only, then filled up: the metrics are printed, the note says
    why metrics.json was not written, and what the folder held is intact."""
    import subprocess

    from conftest import fill_disk

    fs = small_fs(24 << 20)
    path = fit(_cfg(MODELS["vae-mlp"], epochs=1), fs / "r", **QUIET).path
    def files():
        return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file() and not p.name.startswith(".")}

    before = files()
    subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
    try:
        code, out, err = run("evaluate", str(path), "--iwae-k", "5")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(fs)], check=True)
    assert code == 0 and "IWAE" in out and "metrics.json not written" in err and "Read-only" in err
    filler = fill_disk(fs)
    code, out, err = run("evaluate", str(path), "--iwae-k", "5")
    filler.unlink()
    assert code == 0 and "IWAE" in out and "metrics.json not written" in err
    assert files() == before


def test_a_run_without_its_data_loads_and_samples(tmp_path):
    vectors = tmp_path / "emb.npy"
    np.save(vectors, np.random.default_rng(0).normal(size=(200, 12)).astype(np.float32))
    cfg = _cfg(ModelConfig(hidden=[16], latent_dim=2, likelihood="gaussian"), DataConfig(dataset=f"vectors:{vectors}"), 1)
    path = fit(cfg, tmp_path / "r", **QUIET).path
    vectors.unlink()
    import vaekit

    r = vaekit.load_run(path)
    assert r.model.sample(4).shape == (4, 12) and "vectors" in (path / "README.md").read_text()


def test_tensorboard_events_hold_the_expected_tags(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "r"
    code, _, err = run("train", "--dataset", "digits", "--hidden", "32", "--latent-dim", "3", "--epochs", "2",
                       "--batch-size", "64", "--tensorboard", "--out", str(out), "--no-progress")
    assert code == 0, err
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    for t in ["loss/train", "loss/test", "recon/test", "kl/test", "schedule/beta", "schedule/lr", "kl_per_dim/z001",
              "kl_per_dim/z003"]:
        assert t in tags["scalars"], t
    assert [e.step for e in acc.Scalars("loss/test")] == [1, 2]
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [e.value for e in acc.Scalars("loss/test")] == pytest.approx([h["test_loss"] for h in history])
    assert {"samples", "reconstructions"} <= set(tags["images"]) and len(acc.Images("samples")) == 2
    projector = list((out / "tensorboard").rglob("projector_config.pbtxt"))
    assert projector and list((out / "tensorboard").rglob("tensors.tsv"))
    assert json.loads((out / "config.json").read_text())["train"]["log"] == ["tensorboard"]


def test_logging_to_tensorboard_does_not_change_the_run(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    plain = fit(_cfg(MODELS["vae-mlp"]), tmp_path / "plain", **QUIET)
    logged = fit(_cfg(MODELS["vae-mlp"], log=["tensorboard"]), tmp_path / "logged", **QUIET)
    for k, v in plain.model.state_dict().items():
        assert torch.equal(v, logged.model.state_dict()[k]), k


def test_an_unknown_logger_is_refused_before_anything_is_written(tmp_path):
    code, _, err = run("train", "--dataset", "digits", "--epochs", "1", "--log", "wandb", "--out", str(tmp_path / "r"))
    assert code == 2 and "--log wandb" in err and not (tmp_path / "r").exists()
