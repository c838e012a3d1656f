"""RunConfig: JSON round trip, overrides from strings, strict parsing and range checks."""

from __future__ import annotations

import json

import pytest

from vaekit.config import RunConfig
from vaekit.errors import ConfigError
from vaekit.presets import PRESETS, get_preset


def test_json_round_trip_for_every_preset(tmp_path):
    for name in PRESETS:
        cfg = get_preset(name)
        path = tmp_path / f"{name}.json"
        path.write_text(cfg.to_json())
        assert RunConfig.load(path) == cfg


def test_seed_presets_have_the_seed_shapes():
    m = get_preset("mnist-mlp")
    assert (m.model.hidden, m.model.latent_dim, m.model.likelihood) == ([400, 400], 20, "bernoulli")
    assert (m.objective.schedule, m.objective.warmup_epochs, m.data.dataset) == ("linear", 5, "mnist")
    e = get_preset("embedding-mlp")
    assert (e.model.hidden, e.model.latent_dim, e.model.likelihood) == ([512, 512], 256, "mse")
    f, a = get_preset("fashion-conv-2d"), get_preset("fashion-conv-2d-ae")
    assert (f.model.arch, f.model.latent_dim, f.model.kind, a.model.kind) == ("conv", 2, "vae", "ae")
    assert f.data.dataset == a.data.dataset == "fashion-mnist"
    t = get_preset("tiny-4-8-2")
    assert (t.model.hidden, t.model.latent_dim, t.seed) == ([8], 2, 42)
    s = get_preset("mlp-sigmoid-mse")
    assert (s.model.output, s.model.likelihood) == ("sigmoid", "mse")


def test_overrides_parse_strings_by_field_type():
    cfg = get_preset("mnist-mlp").with_overrides(
        {"model.latent_dim": "8", "model.hidden": "128,64", "train.lr": "3e-4",
         "data.download": "false", "data.data_dir": "none", "objective.beta": 4}
    )
    assert cfg.model.latent_dim == 8 and cfg.model.hidden == [128, 64]
    assert cfg.train.lr == 3e-4 and cfg.data.download is False and cfg.data.data_dir is None
    assert cfg.objective.beta == 4.0
    assert get_preset("mnist-mlp").model.latent_dim == 20  # presets are fresh copies


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("model.latent_dim", "0", "latent_dim=0 must be in 1..65536"),
        ("model.hidden", "400,100000", "hidden"),
        ("preset", "../../etc", "preset"),
        ("objective.beta", "-1", "beta=-1.0 must be >= 0"),
        ("train.batch_size", "0", "batch_size"),
        ("train.lr", "nan", "train.lr"),
        ("model.latent_dim", "two", "not a valid int"),
        ("model.depth", "3", "unknown config key 'model.depth'"),
        ("data.binarize", "sometimes", "binarize"),
    ],
)
def test_bad_overrides_are_named(key, value, match):
    with pytest.raises(ConfigError, match=match):
        get_preset("digits-mlp").with_overrides({key: value})


def test_strict_parsing_of_config_files(tmp_path):
    d = get_preset("digits-mlp").to_dict()
    bad_version = {**d, "format_version": 99}
    with pytest.raises(ConfigError, match="format_version 99"):
        RunConfig.from_dict(bad_version)
    with pytest.raises(ConfigError, match="unknown key 'model.colour'"):
        RunConfig.from_dict({**d, "model": {**d["model"], "colour": 1}})
    with pytest.raises(ConfigError, match="'train.epochs' must be int"):
        RunConfig.from_dict({**d, "train": {**d["train"], "epochs": "ten"}})
    with pytest.raises(ConfigError, match="'model.latent_dim' must be int, got the string '8'$"):
        RunConfig.from_dict({**d, "model": {**d["model"], "latent_dim": "8"}})
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.load(path)
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="expected a JSON object"):
        RunConfig.load(path)
    path.write_text('{"train": {"epochs": 1, "lr": 0.01, "epochs": 2}}')  # json itself keeps the last silently
    with pytest.raises(ConfigError, match="config.json: the key 'epochs' is given twice"):
        RunConfig.load(path)
    path.write_bytes(b"\xef\xbb\xbf" + b'{"train": {"epochs": 3}}')  # the BOM Windows editors write
    assert RunConfig.load(path).train.epochs == 3


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        get_preset("nope")


def test_a_hand_written_config_gives_only_what_it_changes(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text('{"model": {"latent_dim": 3, "hidden": [16]}, "train": {"epochs": 2}}')
    cfg = RunConfig.load(path)
    assert cfg.model.latent_dim == 3 and cfg.model.hidden == [16] and cfg.train.epochs == 2
    assert cfg.train.lr == RunConfig().train.lr and cfg.format_version == RunConfig().format_version
    assert get_preset("digits-mlp").with_overrides({"model.hidden": "[64, 32]"}).model.hidden == [64, 32]
