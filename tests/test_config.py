"""RunConfig: JSON round trip, overrides from strings, strict parsing and range checks."""

from __future__ import annotations

import json
import re

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
        ("objective.beta", "-1", "beta=-1.0 must be in 0..1e\\+06"),
        ("objective.beta", "1e300", "beta=1e\\+300 must be in 0..1e\\+06"),  # beta * KL overflows: NaN at step 2
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


# each setting that applies only somewhere: (the other settings that make it not apply, a value of its own)
MISPLACED = {
    "objective.beta": ({"model.kind": "ae"}, 2.0), "objective.schedule": ({"model.kind": "ae"}, "linear"),
    "objective.iwae_samples": ({}, 9), "objective.iwae_gradient": ({}, "dreg"),
    "objective.free_bits": ({"objective.kind": "iwae"}, 1.0), "objective.warmup_epochs": ({}, 3),
    "objective.cycle_epochs": ({}, 3), "objective.cycle_ramp": ({}, 0.25), "model.mixtures": ({}, 3),
    "model.sigma": ({}, 0.5), "model.learn_sigma": ({}, True), "model.standardize": ({}, True),
    "model.pseudo_inputs": ({}, 10), "model.latent_dims": ({}, [4, 2]), "model.block_width": ({}, 32),
    "model.res_blocks": ({}, 3), "model.spatial_latent": ({}, True), "train.lr_min": ({}, 1e-5),
    "data.channels": ({}, 3), "data.data_dir": ({}, "/somewhere"), "data.image_size": ({}, 16), "data.labels": ({}, "y.npy"), "data.image_shape": ({}, [8, 8]),
    "data.resize": ({"data.dataset": "folder:/photos"}, "squash"),
    "data.test_fraction": ({"data.dataset": "mnist"}, 0.2),
}


def _nested(flat: dict) -> dict:
    d: dict = {}
    for key, value in flat.items():
        section, name = key.split(".")
        d.setdefault(section, {})[name] = value
    return d


def test_a_setting_that_does_not_apply_is_refused_when_given_and_reset_when_inherited():
    """Given by the user (flag, --set, API overrides, a hand-written config file) it is an error naming
    the flag and what decides; carried over from a preset whose feature the user switched off, it
    goes back to its default, so that switching never fails over a value nobody typed."""
    from vaekit.config import APPLIES

    assert set(MISPLACED) == {entry[0] for entry in APPLIES}
    flags = {key: flag for key, flag, *_ in APPLIES}
    for key, (context, value) in MISPLACED.items():
        with pytest.raises(ConfigError, match=f"^{re.escape(flags[key])} \\({re.escape(key)}=.* applies only to .*, not with "):
            RunConfig().with_overrides({**context, key: value})
        with pytest.raises(ConfigError, match="applies only to"):  # a config file written by hand gives it too
            RunConfig.from_dict(_nested({**context, key: value}))
    assert get_preset("mnist-vamp-iwae").with_overrides({"objective.kind": "elbo"}).objective.iwae_samples == 5
    switched = get_preset("cifar10-resnet").with_overrides({"model.likelihood": "gaussian", "model.arch": "mlp"})
    assert (switched.model.mixtures, switched.model.spatial_latent, switched.model.res_blocks) == (1, False, 1)
    assert get_preset("mnist-vamp").with_overrides({"model.prior": "normal"}).model.pseudo_inputs == 500
    assert get_preset("mnist-mlp").with_overrides({"objective.schedule": "constant"}).objective.warmup_epochs == 5
    ae = get_preset("cifar10-resnet").with_overrides({"model.kind": "ae"})  # schedule reset, so then its warm-up
    assert (ae.objective.schedule, ae.objective.warmup_epochs) == ("constant", 5)
    for name in PRESETS:
        get_preset(name).validate()
    from vaekit.config import ModelConfig
    from vaekit.models import build_model

    with pytest.raises(ConfigError, match="^--sigma .* applies only to --likelihood gaussian"):
        build_model(ModelConfig(sigma=0.5), (4,))  # a model config given alone is checked the same way
    # a complete config vaekit wrote (a run folder's) whose stale setting no one chose is read, reset
    saved = RunConfig().to_dict()
    saved["model"]["pseudo_inputs"] = 200
    assert RunConfig.from_dict(saved).model.pseudo_inputs == 500

