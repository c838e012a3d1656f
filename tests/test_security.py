"""No code execution from files, and loaders that survive hostile input.

The fuzz tests feed random and mutated files to every loader (IDX, .npy/.npz, image folder,
config.json, safetensors): each must load or raise vaekit's own error, never crash, hang or
allocate what the file does not hold. A longer run: VAEKIT_FUZZ_EXAMPLES=5000 pytest tests/test_security.py
"""

from __future__ import annotations

import io
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaekit.checkpoint import load_run
from vaekit.config import DataConfig, RunConfig
from vaekit.data import load_dataset
from vaekit.data.idx import parse_idx, read_idx_bytes
from vaekit.errors import VaekitError
from vaekit.presets import get_preset

SRC = Path(__file__).resolve().parents[1] / "src" / "vaekit"
FUZZ = settings(max_examples=int(os.environ.get("VAEKIT_FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def test_package_source_has_no_pickle_eval_exec_or_unsafe_torch_load():
    offenders = []
    for path in SRC.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"\bimport pickle|from pickle|\bpickle\.|cloudpickle|(?<![\w.])eval\(|(?<![\w.])exec\(", code):
                offenders.append(f"{path.name}:{n}: {line.strip()}")
            if "torch.load(" in code and "weights_only=True" not in code:
                offenders.append(f"{path.name}:{n}: {line.strip()}")
            if "allow_pickle=True" in code:
                offenders.append(f"{path.name}:{n}: {line.strip()}")
    assert offenders == []


def test_the_scan_would_catch_offenders():
    bad = ["import pickle", "x = eval(s)", "exec(code)", "torch.load(f)"]
    pattern = re.compile(r"\bimport pickle|from pickle|\bpickle\.|(?<![\w.])eval\(|(?<![\w.])exec\(")
    assert all(pattern.search(b) or ("torch.load(" in b and "weights_only=True" not in b) for b in bad)
    assert not pattern.search("model.eval()")


def _valid_idx() -> bytes:
    return b"\x00\x00\x08\x03" + (3).to_bytes(4, "big") + (4).to_bytes(4, "big") * 2 + bytes(range(48))


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(data)
    for pos, val in edits:
        if b:
            b[pos % len(b)] = val
    return bytes(b[:cut] if cut is not None else b)


@FUZZ
@given(st.one_of(st.binary(max_size=200),
                 st.builds(_mutate, st.just(_valid_idx()), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)),
                                                                     max_size=4), st.none() | st.integers(0, 70))))
def test_fuzz_idx(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("idx")
    for name, payload in [("x-idx3-ubyte", data), ("x-idx3-ubyte.gz", data)]:
        path = d / name
        path.write_bytes(payload)
        try:
            arr = parse_idx(read_idx_bytes(path), path)
        except VaekitError:
            continue
        assert arr.nbytes <= len(payload)


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _safetensors_bytes() -> bytes:
    from safetensors.torch import save

    return save({"x": torch.arange(24, dtype=torch.float32).reshape(6, 4), "y": torch.arange(6) % 2})


def _vectors_or_refused(folder: Path, name: str, data: bytes) -> None:
    """A file of mutated bytes as vectors: data loads as vectors or images, or is vaekit's one-line refusal."""
    path = folder / name
    path.write_bytes(data)
    try:
        ds = load_dataset(DataConfig(dataset=f"vectors:{path}"))
    except VaekitError:
        return
    assert (ds.train_x.dtype.is_floating_point and ds.train_x.ndim in (2, 4)) or (
        ds.train_x.dtype == torch.uint8 and ds.train_x.ndim == 4 and ds.scale == 255.0)  # vectors, or images


@FUZZ
@given(st.one_of(
    st.binary(max_size=300),
    st.builds(_mutate, st.just(_npy_bytes(np.arange(24, dtype=np.float32).reshape(6, 4))),
              st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)), max_size=4), st.none() | st.integers(0, 250)),
))
def test_fuzz_npy(tmp_path_factory, data):
    _vectors_or_refused(tmp_path_factory.mktemp("npy"), "v.npy", data)


@FUZZ
@given(st.one_of(
    st.binary(max_size=300),
    st.builds(_mutate, st.just(_safetensors_bytes()),
              st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4), st.none() | st.integers(0, 300)),
))
def test_fuzz_safetensors_vectors(tmp_path_factory, data):
    _vectors_or_refused(tmp_path_factory.mktemp("st"), "v.safetensors", data)


_TABLE = b"a,b,label\n1.5,2,cat\n-3,4e-2,dog\n5,6,cat\n"


@FUZZ
@given(st.one_of(
    st.text(alphabet="0123456789,;.\t\n\r #\"'-+eEnaifxl\ufeff\u00e9", max_size=120).map(str.encode),
    st.binary(max_size=120),
    st.builds(_mutate, st.just(_TABLE), st.lists(st.tuples(st.integers(0, 60), st.integers(0, 255)), max_size=4),
              st.none() | st.integers(0, 50)),
), st.sampled_from(["v.csv", "v.tsv", "v.txt"]))
def test_fuzz_text_table(tmp_path_factory, data, name):
    path = tmp_path_factory.mktemp("table") / name
    path.write_bytes(data)
    try:
        ds = load_dataset(DataConfig(dataset=f"vectors:{path}"))
    except VaekitError:
        return
    assert ds.train_x.dtype == torch.float32 and ds.train_x.ndim == 2 and bool(torch.isfinite(ds.train_x).all())


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6), st.none() | st.integers(0, 1200))
def test_fuzz_npz(tmp_path_factory, edits, cut):
    buf = io.BytesIO()
    np.savez(buf, x=np.ones((8, 3), np.float32), y=np.arange(8))
    path = tmp_path_factory.mktemp("npz") / "v.npz"
    path.write_bytes(_mutate(buf.getvalue(), edits, cut))
    try:
        load_dataset(DataConfig(dataset=f"vectors:{path}"))
    except VaekitError:
        pass


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(["a.png", "b.jpg", "c.gif"]))
def test_fuzz_image_folder(tmp_path_factory, data, name):
    from PIL import Image

    d = tmp_path_factory.mktemp("imgs")
    Image.new("L", (8, 8)).save(d / "ok1.png")
    Image.new("L", (8, 8)).save(d / "ok2.png")
    (d / name).write_bytes(data)
    try:
        ds = load_dataset(DataConfig(dataset=f"folder:{d}"))
    except VaekitError:
        return
    assert ds.shape == (1, 8, 8)


json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=12)


def _poke(d: dict, path: list[str], value) -> dict:
    d = json.loads(json.dumps(d))
    target = d
    for key in path[:-1]:
        target = target.setdefault(key, {}) if isinstance(target, dict) else {}
    if isinstance(target, dict):
        target[path[-1]] = value
    return d


CONFIG_KEYS = [[k] for k in get_preset("digits-mlp").to_dict()] + [
    [s, k] for s, v in get_preset("digits-mlp").to_dict().items() if isinstance(v, dict) for k in v]


@FUZZ
@given(st.sampled_from(CONFIG_KEYS), json_values)
def test_fuzz_config_json(tmp_path_factory, key, value):
    d = tmp_path_factory.mktemp("cfg")
    text = json.dumps(_poke(get_preset("digits-mlp").to_dict(), key, value))
    (d / "config.json").write_text(text)
    try:
        cfg = RunConfig.load(d / "config.json")
    except VaekitError:
        return
    cfg.validate()
    assert 1 <= cfg.model.latent_dim <= 65536 and all(1 <= h <= 65536 for h in cfg.model.hidden)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_run_folder_weights(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("run")
    (d / "config.json").write_text(get_preset("tiny-4-8-2").to_json())
    (d / "model.safetensors").write_bytes(data)
    with pytest.raises(VaekitError):
        load_run(d)


def test_a_safetensors_header_claiming_huge_tensors_is_refused(tmp_path):
    header = json.dumps({"fc_mu.weight": {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 4 * 10**10]},
                         "__metadata__": {"data_shape": "[4]"}}).encode()
    (tmp_path / "config.json").write_text(get_preset("tiny-4-8-2").to_json())
    (tmp_path / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\x00" * 16)
    with pytest.raises(VaekitError):
        load_run(tmp_path)


def test_paths_from_a_config_cannot_escape(tmp_path, monkeypatch):
    """A config's preset name feeds the default run folder; it may not climb out of runs/."""
    cfg = get_preset("digits-mlp").to_dict()
    cfg["preset"] = "../../escaped"
    (tmp_path / "evil.json").write_text(json.dumps(cfg))
    monkeypatch.chdir(tmp_path)
    from vaekit.cli import main

    assert main(["train", "--config", str(tmp_path / "evil.json"), "--epochs", "1", "--no-progress"]) == 2
    assert not list(tmp_path.parent.glob("escaped*")) and not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from vaekit.config import ModelConfig, TrainConfig
    from vaekit.train import fit

    cfg = RunConfig(seed=2, data=DataConfig(dataset="digits", test_fraction=0.2),
                    model=ModelConfig(hidden=[16], latent_dim=2), train=TrainConfig(epochs=1, batch_size=64))
    return fit(cfg, tmp_path_factory.mktemp("tiny") / "run", progress=False, log=lambda s: None).path


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 200_000), st.integers(0, 255)), min_size=1, max_size=8),
       st.none() | st.integers(0, 200_000))
def test_fuzz_training_state(tmp_path_factory, tiny_run, edits, cut):
    """Random byte edits and cuts anywhere in a real training_state.safetensors: resume's loader
    either restores a usable state or refuses with vaekit's error."""
    import torch

    from vaekit.checkpoint import STATE, load_training_state
    from vaekit.optim import make_optimizer

    d = tmp_path_factory.mktemp("state")
    good = (tiny_run / STATE).read_bytes()
    (d / STATE).write_bytes(_mutate(good, edits, cut))
    run = load_run(tiny_run)
    optimizer = make_optimizer(run.model, run.config)
    try:
        state = load_training_state(d, run.model, optimizer)
    except VaekitError:
        return
    assert state.epoch >= 0 and state.step >= 0 and torch.is_tensor(state.rng["torch"])


@FUZZ
@given(st.binary(max_size=600) | st.text(max_size=300).map(str.encode))
def test_fuzz_history(tmp_path_factory, data):
    from vaekit.checkpoint import HISTORY, read_history

    d = tmp_path_factory.mktemp("hist")
    (d / HISTORY).write_bytes(b'{"epoch": 1, "test_loss": 3.0}\n' + data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a cut-short last line is dropped with a warning
            records = read_history(d)
    except VaekitError:
        return
    assert all(isinstance(r, dict) for r in records) and records[0]["epoch"] == 1
    assert all(isinstance(r["epoch"], int) and r["epoch"] >= 1 for r in records)
    json.dumps(records, allow_nan=False)  # what the explorer answers with
    from vaekit.plots import training_curves

    training_curves(records)  # what plot and report draw: the records were a traceback there (a string loss)


def test_edited_history_records_are_named_or_drawn_never_a_traceback(tmp_path):
    from vaekit.checkpoint import HISTORY, read_history
    from vaekit.plots import training_curves

    for line, says in [('{"epoch": "1"}', 'line 2 has no epoch number \\("epoch": "1"\\)'), ("{}", "no epoch number"),
                       ('{"epoch": 2, "lr": {}}', 'line 2: "lr": {} is not a number'), ("[2]", "not a JSON object"),
                       ('{"epoch": 2, "test_kl_per_dim": "x"}', '"test_kl_per_dim" is not a list of numbers')]:
        (tmp_path / HISTORY).write_text('{"epoch": 1, "test_loss": 3.0}\n' + line + "\n")
        with pytest.raises(VaekitError, match=says):
            read_history(tmp_path)
    (tmp_path / HISTORY).write_text('{"epoch": 1, "test_kl_per_dim": [1.0, 2.0], "beta": null}\n'
                                    '{"epoch": 2, "test_kl_per_dim": [1.0], "test_loss": 1e400}\n')
    records = read_history(tmp_path)
    assert records[1]["test_loss"] is None  # inf, which vaekit writes as null
    training_curves(records)  # per-dimension lists of two widths: told, not drawn


NASTY = st.sampled_from(["0", "-1", "1", "3", "2", "10000000", "100000000", str(2**70), "-" + str(2**70), "1e309",
                         "nan", "inf", "-0", "0.5", "abc", "", " ", "1\n2", "\x1b[31m", "9" * 5000, "1,2", "cuda",
                         "meta", "foo", "x.xyz", "x.png", "x.npy", "../../x.png", "\x00"])
CLI_CASES = {  # command -> flags fuzzed with hostile values (compute kept small: -n, k and sizes are capped by range)
    "evaluate": ["--iwae-k", "--device", "--max-memory", "--max-ratio"],
    "sample": ["-n", "--seed", "--device", "-o", "--max-memory"],
    "reconstruct": ["-n", "--device", "-o"],
    "probe": ["-k", "-o"],
    "plot": ["--grid-dims", "--only"],
    "train": ["--epochs", "--latent-dim", "--hidden", "--batch-size", "--lr", "--beta", "--seed", "--test-fraction",
              "--device", "--set", "--dataset", "--image-size", "--likelihood", "--max-minutes", "--lr-warmup",
              "--warmup", "--lr-min", "--grad-clip", "--sigma", "--holdout-class"],
}


@FUZZ
@given(st.sampled_from(sorted(CLI_CASES)), st.data())
def test_fuzz_cli_flags(tmp_path_factory, tiny_run, command, data):
    """Hostile values for the CLI's flags: every outcome is success or one line with exit code 2,
    never a traceback or an internal error."""
    import contextlib

    from vaekit.cli import main

    out = tmp_path_factory.mktemp("cli")
    flags = data.draw(st.lists(st.sampled_from(CLI_CASES[command]), min_size=1, max_size=3, unique=True))
    argv = [command]
    if command == "train":
        argv += ["--out", str(out / "r"), "--no-progress", "--epochs", "0"]
    else:
        argv.append(str(tiny_run))
    if command in ("sample", "reconstruct"):
        argv += ["-o", str(out / "x.png")]
    if command == "evaluate":
        argv += ["--iwae-k", "2"]
    for flag in flags:
        value = data.draw(NASTY)
        if flag == "--set":
            value = data.draw(st.sampled_from(["model.hidden", "train.lr", "objective.schedule", "x.y", "seed"])) + "=" + value
        if flag == "--dataset":
            value = data.draw(st.sampled_from(["blobs:", "vectors:", "folder:", "mnist:", ""])) + value
        if flag in ("-o",):
            value = str(out / value.replace("/", "_").replace("\x00", "_")) if value else value
        argv += [flag, value] if flag != "--grid-dims" else [flag, value, data.draw(NASTY)]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    text = err.getvalue()
    assert "Traceback" not in text and "internal error" not in text, (argv, text)
    assert code in (0, 2), (argv, code, text)
    if code == 2:
        assert len(text.strip().splitlines()) == 1, (argv, text)
