"""The Python API does what the CLI does: one function per command, the same checks, the same lock."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import vaekit
from vaekit.cli import build_parser
from vaekit.errors import ConfigError, RunFolderError, VaekitError

TINY = {"data": {"dataset": "digits"}, "model": {"hidden": [16], "latent_dim": 2, "conditional": True},
        "train": {"epochs": 1, "batch_size": 256}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A conditional digits VAE trained from a plain dict, as config.json holds it."""
    return vaekit.fit(TINY, tmp_path_factory.mktemp("api") / "run", progress=False, log=lambda s: None).path


def test_every_command_has_its_function_in_the_api():
    commands = set(build_parser()._commands.choices)  # type: ignore[attr-defined]
    assert commands == set(vaekit.COMMANDS), "a new command needs its Python function in vaekit.COMMANDS"
    for command, name in vaekit.COMMANDS.items():
        assert name in vaekit.__all__ and getattr(vaekit, name) is not None, command
    assert {"importlib", "Any", "annotations"}.isdisjoint(dir(vaekit))


def test_sample_and_reconstruct_write_what_the_commands_write(run, tmp_path):
    done = vaekit.sample_run(run, tmp_path / "s.npy", 12, label=3, seed=1)
    assert done["n"] == 12 and "class 3" in done["codes"]
    values = np.load(done["file"])
    assert values.shape == (12, 1, 8, 8) and np.isfinite(values).all()
    again = vaekit.sample_run(run, tmp_path / "t.npy", 12, label="3", seed=1)  # a class number as text
    assert np.array_equal(np.load(again["file"]), values)
    grid = vaekit.sample_run(run, tmp_path / "grid.png", 20)  # a conditional run: one row per class
    assert grid["file"].stat().st_size > 0 and "per class" in grid["codes"]
    pair = np.load(vaekit.reconstruct_run(run, tmp_path / "r.npy", 5)["file"])
    assert pair.shape == (2, 5, 1, 8, 8)


def test_many_samples_and_reconstructions_are_decoded_a_chunk_at_a_time_within_the_budget(run, tmp_path,
                                                                                         monkeypatch):
    """`sample -n` and `reconstruct -n` to .npy need the memory of one chunk's activations plus the
    values themselves, so FID-sized sets fit; the values are those of decoding all at once, labels
    included. A reconstruction grid too large is refused before any work, with the -n that fits."""
    import torch

    from vaekit import budget, grids

    whole = np.load(vaekit.sample_run(run, tmp_path / "whole.npy", 40, seed=2)["file"])
    whole_pair = np.load(vaekit.reconstruct_run(run, tmp_path / "whole-r.npy", 30)["file"])
    monkeypatch.setattr(grids, "SAMPLE_CHUNK", 7)
    chunked = np.load(vaekit.sample_run(run, tmp_path / "chunked.npy", 40, seed=2)["file"])
    assert np.allclose(chunked, whole, atol=1e-6) and chunked.shape == whole.shape
    pair = np.load(vaekit.reconstruct_run(run, tmp_path / "chunked-r.npy", 30)["file"])
    assert np.allclose(pair, whole_pair, atol=1e-6) and pair.shape == (2, 30, 1, 8, 8)
    with budget.limits(max_bytes=3_000_000):  # 10,000 samples at once need ~7.8 MB of activations
        assert np.load(vaekit.sample_run(run, tmp_path / "many.npy", 10_000)["file"]).shape == (10_000, 1, 8, 8)
        with pytest.raises(VaekitError, match="the codes and the samples"):
            vaekit.sample_run(run, tmp_path / "more.npy", 20_000)
    assert torch.is_grad_enabled()
    monkeypatch.setattr(grids, "MAX_GRID_PIXELS", 40 * 58 * 58)  # 40 tiles of 8x8 digits, enlarged to 56
    with pytest.raises(VaekitError, match="a grid of 60 images .* use -n 20 or fewer"):
        vaekit.reconstruct_run(run, tmp_path / "r.png", 30)  # each example above its reconstruction
    assert not (tmp_path / "r.png").exists()


@pytest.mark.parametrize("call,words", [
    (lambda r, t: vaekit.sample_run(r, t / "s.jpg"), ["-o", "s.jpg", ".png or .npy"]),
    (lambda r, t: vaekit.sample_run(r, t, 4), ["is a folder"]),
    (lambda r, t: vaekit.sample_run(r, t / ("9" * 300 + ".png")), ["File name too long"]),
    (lambda r, t: vaekit.sample_run(r, t / "s.png", 0), ["-n 0"]),
    (lambda r, t: vaekit.sample_run(r, t / "s.png", 4, label=12), ["--label 12", "classes 0..9"]),
    (lambda r, t: vaekit.sample_run(r, t / "s.png", 4, label="pug"), ["--label pug", "not a class"]),
    (lambda r, t: vaekit.reconstruct_run(r, t / "r.png", -3), ["-n -3"]),
    (lambda r, t: vaekit.sample_run(r, t / "s.png", 4, sampler="gmm", components=0), ["--components 0"]),
    (lambda r, t: vaekit.sample_run(r, t / "s.png", 4, sampler="best"), ["--sampler best"]),
    (lambda r, t: vaekit.sample_run(r, t / "s.png", 4, components=3), ["--components applies only with --sampler gmm"]),
    (lambda r, t: vaekit.sample_run(r, t / "s.png", 4, refit=True), ["--refit applies only with --sampler gmm"]),
    (lambda r, t: vaekit.sample_run(r, t / "s.png", 4, data_dir=str(t)), ["--data-dir applies only with --sampler gmm"]),
    (lambda r, t: vaekit.evaluate_run(r, data_dir=str(t)), ["built into vaekit", "leave --data-dir out"]),
    (lambda r, t: vaekit.run_sweep(TINY, "1,,2", t / "sweep"), ["--beta 1,,2", "empty value"]),
    (lambda r, t: vaekit.evaluate_run(r, sampler="gmm"), ["apply only with generation=True"]),
    (lambda r, t: vaekit.plot_run(r, only="curves", grid_dims=(0, 1)), ["grid_dims=", "only with the latent grid"]),
    (lambda r, t: vaekit.probe_run(r, 0), ["-k 0"]),
    (lambda r, t: vaekit.anomaly_run(r), ["held no class out"]),
    (lambda r, t: vaekit.compare_runs(r, r, t / "c.svg"), [".png"]),
    (lambda r, t: vaekit.fit(42, t / "new"), ["RunConfig", "int"]),
    (lambda r, t: vaekit.fit({"model": {"latent_dim": "two"}}, t / "new"), ["latent_dim"]),
    (lambda r, t: vaekit.fit(t / "missing.json", t / "new"), ["missing.json"]),
    (lambda r, t: vaekit.run_sweep(TINY, "a,b", t / "sweep"), ["--beta a,b"]),
    (lambda r, t: vaekit.run_sweep(TINY, [1, 1], t / "sweep"), ["distinct"]),
    (lambda r, t: vaekit.run_sweep(TINY, [1, 2], t / "sweep", jobs=0), ["--jobs 0"]),
])
def test_bad_arguments_are_vaekit_errors_before_any_work(run, tmp_path, call, words):
    before = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(VaekitError) as e:
        call(run, tmp_path)
    assert all(w in str(e.value) for w in words), str(e.value)
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in run.rglob("*")) == before and not (tmp_path / "new").exists()


def _counted_flags():
    """(command, keyword, flag, lo, hi) for every flag whose converter has a range and whose function
    takes the keyword of the same name: derived from the parser, so a new flag is covered at once."""
    import inspect

    for name, sub in build_parser()._commands.choices.items():  # type: ignore[attr-defined]
        function = getattr(vaekit, vaekit.COMMANDS[name])
        takes = inspect.signature(function).parameters if callable(function) else {}  # presets: a table
        for action in sub._actions:
            if action.dest in takes and hasattr(action.type, "hi"):
                yield name, action.dest, action.option_strings[0], action.type.lo, action.type.hi


CALLS = {
    "train": lambda r, t, kw: vaekit.fit(TINY, t / "new", progress=False, **kw),
    "evaluate": lambda r, t, kw: vaekit.evaluate_run(r, **kw),
    "sample": lambda r, t, kw: vaekit.sample_run(r, t / "s.npy", **kw),
    "reconstruct": lambda r, t, kw: vaekit.reconstruct_run(r, t / "r.npy", **kw),
    "plot": lambda r, t, kw: vaekit.plot_run(r, only=["latent-grid"], **kw),
    "report": lambda r, t, kw: vaekit.report_run(r, out=t / "r.html", **kw),
    "sweep": lambda r, t, kw: vaekit.run_sweep(TINY, [1, 2], t / "new", **kw),
    "serve": lambda r, t, kw: vaekit.serve([r], **kw),
    "probe": lambda r, t, kw: vaekit.probe_run(r, **kw),
    "anomaly": lambda r, t, kw: vaekit.anomaly_run(r, **kw),
}
NEEDS = {("evaluate", "generation_n"): {"generation": True},  # what makes the flag apply
         ("evaluate", "components"): {"generation": True, "sampler": "gmm"},
         ("sample", "components"): {"sampler": "gmm"}, ("serve", "components"): {"sampler": "gmm"}}


@pytest.mark.parametrize("command,keyword,flag,bad", [
    (c, k, f, bad) for c, k, f, lo, hi in _counted_flags() for bad in (lo - 1, hi + 1)])
def test_every_function_refuses_what_its_command_refuses(run, tmp_path, command, keyword, flag, bad):
    """The functions check the ranges the CLI's converters check (one table, errors.RANGES), before any
    work: serve(port=70000) listened on port 4464, sample_run(seed=-1) and fit(max_minutes=-1) ran."""
    import threading

    kw = {**NEEDS.get((command, keyword), {}), keyword: (bad, 0) if keyword == "grid_dims" else bad}
    raised: list[BaseException] = []

    def call():
        try:
            CALLS[command](run, tmp_path, kw)
        except BaseException as e:  # noqa: BLE001  # handed to the test's thread
            raised.append(e)

    before = sorted(p.name for p in run.rglob("*"))
    worker = threading.Thread(target=call, daemon=True)  # an unchecked serve would listen for ever
    worker.start()
    worker.join(120)
    assert raised and isinstance(raised[0], VaekitError), (command, keyword, bad, raised)
    assert flag in str(raised[0]) and str(bad) in str(raised[0]), str(raised[0])
    assert sorted(p.name for p in run.rglob("*")) == before and not (tmp_path / "new").exists()


def test_fit_takes_a_json_file_or_a_dict_like_config_json(run, tmp_path):
    saved = json.loads((run / "config.json").read_text())
    partial = tmp_path / "mine.json"
    partial.write_text(json.dumps({"data": {"dataset": "blobs:3"}, "model": {"hidden": [8], "latent_dim": 2, "likelihood": "gaussian"},
                                   "train": {"epochs": 1}}))
    assert vaekit.fit(partial, tmp_path / "a", progress=False, log=lambda s: None).config.data.dataset == "blobs:3"
    again = vaekit.fit(saved, tmp_path / "b", progress=False, log=lambda s: None)
    assert again.config.to_dict() == saved
    with pytest.raises(ConfigError, match="unless resume=True"):
        vaekit.fit(None, tmp_path / "c")


def test_config_for_data_is_train_without_a_preset(tmp_path):
    said = []
    cfg, data = vaekit.config_for_data("blobs:12", {"train.epochs": 1}, progress=False, log=said.append)
    assert said and "no --preset" in said[0] and "12" in said[0]
    assert cfg.data.dataset == "blobs:12" and cfg.train.epochs == 1 and data.shape == (12,)
    assert vaekit.fit(cfg, tmp_path / "r", data=data, progress=False, log=lambda s: None).epoch == 1


def test_numpy_numbers_are_taken_where_python_numbers_are_and_saved_as_json_numbers(run, tmp_path):
    """Counts and settings computed with numpy (np.int64 from np.arange, np.float32 learning rates) were
    refused as "not a whole number" (iwae_k, n, seed) or would have reached json.dumps."""
    cfg = vaekit.RunConfig.from_dict(TINY).with_overrides({"train.lr": np.float32(1e-3), "model.latent_dim": np.int64(2)})
    assert cfg.train.lr == 0.001 and type(cfg.model.latent_dim) is int
    fitted = vaekit.fit(cfg, tmp_path / "np", progress=False, log=lambda s: None, epochs=np.int64(1),
                        max_minutes=np.float32(5))
    saved = json.loads((fitted.path / "config.json").read_text())
    assert saved["train"]["lr"] == 0.001 and saved["train"]["epochs"] == 1
    metrics = vaekit.evaluate_run(fitted.path, iwae_k=np.int64(3))
    assert metrics["iwae_k"] == 3 and type(metrics["iwae_k"]) is int
    assert vaekit.sample_run(run, tmp_path / "s.npy", np.int32(20), seed=np.uint8(7))["n"] == 20
    assert vaekit.reconstruct_run(run, tmp_path / "r.npy", np.int16(3))["n"] == 3
    assert fitted.model.sample(np.int64(2)).shape[0] == 2
    for bad, says in ((np.float64(2.0), "--iwae-k np.float64(2.0)"), (np.bool_(True), "--iwae-k np.True_")):
        with pytest.raises(VaekitError, match=re.escape(says)):
            vaekit.evaluate_run(fitted.path, iwae_k=bad)


def test_overrides_are_a_dict_of_dotted_keys_or_sections_as_config_json_nests_them():
    base = vaekit.RunConfig.from_dict(TINY)
    assert base.with_overrides({"train": {"epochs": 3}, "model.latent_dim": 4}).train.epochs == 3
    assert base.with_overrides(None).to_dict() == base.to_dict()
    for bad, says in (([("train.epochs", 2)], "overrides: a list; give a dict"), ("train.epochs=2", "overrides: a str"),
                      ({1: 2}, "key 1 is not a string"), ({"train": {"epochz": 1}}, "unknown config key 'train.epochz'")):
        with pytest.raises(ConfigError, match=re.escape(says)):
            base.with_overrides(bad)
    with pytest.raises(ConfigError, match="overrides: a str"):
        vaekit.config_for_data("blobs", "train.epochs=2")


def test_config_sections_are_dataclasses_or_dicts_and_their_types_are_checked(tmp_path):
    """RunConfig(train={...}), build_model({...}) and load_dataset({...}) were AttributeErrors, a
    TrainConfig(epochs="3") a TypeError inside the range check, load_dataset of an out-of-range
    DataConfig a download attempt."""
    cfg = vaekit.RunConfig(data={"dataset": "digits"}, train={"epochs": 3})
    assert isinstance(cfg.train, vaekit.TrainConfig) and cfg.train.epochs == 3 and cfg.train.batch_size == 128
    assert vaekit.build_model({"hidden": [8], "latent_dim": 2}, (6,)).latent_dim == 2
    assert cfg.with_overrides({"model.hidden": (30, 20)}).model.hidden == [30, 20]  # a tuple is a list to JSON
    assert vaekit.load_dataset({"dataset": "blobs:5"}, progress=False).shape == (5,)
    for call, says in ((lambda: vaekit.RunConfig(train=vaekit.TrainConfig(epochs="3")).validate(),
                        "'train.epochs' must be int, got the string '3'"),
                       (lambda: vaekit.RunConfig(train={"epochz": 3}), "unknown key 'train.epochz'"),
                       (lambda: vaekit.fit(vaekit.RunConfig(model=vaekit.ModelConfig(hidden="400")), tmp_path / "r"),
                        "'model.hidden' must be a list"),
                       (lambda: vaekit.build_model("vae", (6,)), "cfg: a str; give a ModelConfig or a dict"),
                       (lambda: vaekit.load_dataset("digits"), "cfg: a str; give a DataConfig or a dict"),
                       (lambda: vaekit.load_dataset(vaekit.DataConfig(dataset="mnist", test_fraction=5)),
                        "data.test_fraction=5.0 must be in (0, 1)")):
        with pytest.raises(ConfigError, match=re.escape(says)):
            call()
    assert not (tmp_path / "r").exists()


def test_save_png_and_the_posterior_name_what_they_cannot_take(tmp_path):
    import torch

    from vaekit.errors import InputError

    picture = vaekit.sample_grid(vaekit.build_model({"hidden": [8], "latent_dim": 2}, (1, 8, 8)), 4)
    assert vaekit.save_png(torch.from_numpy(picture), tmp_path / "s.png").stat().st_size > 0
    for bad, path, says in ((picture / 255.0, "a.png", "float64 of shape"), (picture[None], "a.png", "(1, "),
                            ([1, 2], "a.png", "a list"), (picture, "a.jpg", "write .png"), (picture, ".", "is a folder")):
        with pytest.raises(VaekitError, match=re.escape(says)):
            vaekit.save_png(bad, tmp_path / path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.png"]
    with pytest.raises(InputError, match=re.escape("mu (2, 3) and logvar (2, 4)")):
        vaekit.DiagonalGaussian(torch.zeros(2, 3), torch.zeros(2, 4))


def test_a_loaded_run_gives_its_history_and_metrics(tmp_path):
    """The numbers behind `plot`'s curves and `evaluate` in a notebook, without reading the files by hand."""
    cfg = vaekit.RunConfig.from_dict(TINY).with_overrides({"train.epochs": 2})
    run = vaekit.fit(cfg, tmp_path / "r", progress=False, log=lambda s: None)
    assert [r["epoch"] for r in run.history] == [1, 2] and run.history[-1]["test_loss"] > 0
    assert run.metrics is None
    measured = vaekit.evaluate_run(run.path, iwae_k=2)
    saved = vaekit.load_run(run.path).metrics
    assert saved["loss"] == measured["loss"] and saved["nll_iwae"] == measured["nll_iwae"] and saved["epoch"] == 2


@pytest.mark.parametrize("call", [
    lambda r, t, log: vaekit.fit(TINY, t / "new", progress=False, log=log),
    lambda r, t, log: vaekit.config_for_data("blobs:8", {}, progress=False, log=log),
    lambda r, t, log: vaekit.plot_run(r, t / "new", only=["curves"], log=log),
    lambda r, t, log: vaekit.report_run(r, out=t / "new.html", log=log),
    lambda r, t, log: vaekit.run_sweep(TINY, [1, 2], t / "new", log=log),
    lambda r, t, log: vaekit.Explorer(r, log=log),
], ids=["fit", "config_for_data", "plot_run", "report_run", "run_sweep", "Explorer"])
def test_a_log_that_is_no_function_is_refused(run, tmp_path, call):
    """log=5 was taken, and failed at the first line the work printed (for fit, only with progress=False)."""
    with pytest.raises(VaekitError, match=re.escape("log: a int; give a function taking one line of text")):
        call(run, tmp_path, 5)
    assert not (tmp_path / "new").exists() and not (tmp_path / "new.html").exists()


def test_log_none_is_silence(tmp_path, capsys):
    vaekit.fit(TINY, tmp_path / "quiet", progress=False, log=None)
    assert capsys.readouterr().out == ""


def test_fit_trains_only_on_data_its_saved_config_loads_again(tmp_path):
    """Every later command reloads the data from config.json: data= that the config would not load
    (made by hand, loaded for another config, not a Dataset) are refused before the folder exists."""
    cfg = vaekit.RunConfig.from_dict(TINY)
    digits = vaekit.load_dataset(cfg.data, progress=False)
    x = digits.train_x.float()
    by_hand = vaekit.Dataset("mine", x[:1000], None, x[1000:], None)
    other = vaekit.load_dataset(cfg.with_overrides({"data.test_fraction": 0.3}).data, progress=False)
    for data, says in ((by_hand, "made by hand.*vectors:FILE.npy"), (x, "not Tensor"),
                       (other, r"data.test_fraction=0.3, but the config says 0.1"),
                       (vaekit.load_dataset(vaekit.DataConfig(dataset="blobs:8"), progress=False),
                        "data.dataset='blobs:8', but the config says 'digits'")):
        with pytest.raises(VaekitError, match=says):
            vaekit.fit(cfg, tmp_path / "r", data=data, progress=False, log=lambda s: None)
        assert not (tmp_path / "r").exists()
    assert vaekit.fit(cfg, tmp_path / "r", data=digits, progress=False, log=lambda s: None).epoch == 1


def test_probe_plot_and_compare_write_into_the_run_folder(run):
    result = vaekit.probe_run(run, 3)
    assert 0 <= result["linear_accuracy"] <= 1 and result["knn_k"] == 3 and "y_test" not in result
    assert (run / "plots" / "probe-confusion.png").is_file() and result["plot"].endswith("probe-confusion.png")
    written = vaekit.plot_run(run, only=["curves"])
    assert list(written) == ["curves"] and written["curves"].is_file()
    same = vaekit.compare_runs(run, run)
    assert (run / "plots" / "compare.png").is_file() and len(same["latents"]) == 1  # the same name twice
    assert same["negative_elbo"]["difference"] == 0


def test_compare_tells_two_latent_sizes_apart_on_the_same_examples(run, tmp_path):
    """Runs of other latent sizes are compared too (the figure then decodes no shared z)."""
    wider = vaekit.fit({**TINY, "model": {**TINY["model"], "latent_dim": 5}}, tmp_path / "wider", progress=False,
                       log=lambda s: None).path
    result = vaekit.compare_runs(run, wider, tmp_path / "c.png")
    e = result["negative_elbo"]
    assert (tmp_path / "c.png").is_file() and e["n"] == json.loads((run / "data.json").read_text())["n_test"] and e["difference"] == pytest.approx(e["a"] - e["b"])
    assert 0 < e["difference_se"] and set(result["latents"]) == {"run", "wider"}
    assert result["same_data"] is True


def test_compare_says_when_run_b_was_trained_on_other_examples(run, tmp_path):
    """B trained on another split of the same data has seen some of A's test examples: its ELBO on
    them is no held-out figure, and compare says so (it said nothing)."""
    other = vaekit.fit({**TINY, "data": {**TINY["data"], "split_seed": 7}}, tmp_path / "other", progress=False,
                       log=lambda s: None).path
    with pytest.warns(UserWarning, match="other data or another split.*not a held-out figure for B"):
        result = vaekit.compare_runs(run, other, tmp_path / "c.png")
    assert result["same_data"] is False and "negative_elbo" in result
    (other / "data.json").unlink()  # a run from before data.json: unknown, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert vaekit.compare_runs(run, other, tmp_path / "c.png")["same_data"] is None


def test_an_api_writer_is_refused_while_another_process_holds_the_run(run, tmp_path):
    """The lock is the library's, not the CLI's: a Python caller meets it as the command does."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from vaekit.runlock import run_lock\n"
        f"with run_lock({str(run)!r}, 'train'):\n"
        "    print('held', flush=True); time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
        for call in (lambda: vaekit.plot_run(run, only=["curves"]), lambda: vaekit.probe_run(run),
                     lambda: vaekit.compare_runs(run, run), lambda: vaekit.report_run(run, iwae_k=0),
                     lambda: vaekit.export_run(run, out=run / "onnx"),
                     lambda: vaekit.sample_run(run, run / "more.png"), lambda: vaekit.reconstruct_run(run, run / "r.npy"),
                     lambda: vaekit.fit(None, run, resume=True, epochs=2, progress=False)):
            with pytest.raises(RunFolderError, match=f"in use by another vaekit process \\(pid {holder.pid}"):
                call()
        assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before
        outside = vaekit.compare_runs(run, run, tmp_path / "c.png")  # a figure outside the folder needs no lock
        assert (tmp_path / "c.png").is_file() and outside
    finally:
        holder.kill()
        holder.wait()


def test_a_command_that_calls_another_takes_the_lock_once(run):
    """report plots under its own lock: the lock is re-entrant within a thread, not a self-refusal."""
    t0 = time.monotonic()
    page = vaekit.report_run(run, iwae_k=0)
    assert page.is_file() and (run / "plots" / "curves.png").is_file() and time.monotonic() - t0 < 120


PATH_ARGUMENTS = {
    "evaluate_run": lambda r, t, p: vaekit.evaluate_run(p),
    "evaluate_run data_dir": lambda r, t, p: vaekit.evaluate_run(r, data_dir=p),
    "load_run": lambda r, t, p: vaekit.load_run(p),
    "sample_run": lambda r, t, p: vaekit.sample_run(p, t / "s.png"),
    "sample_run out": lambda r, t, p: vaekit.sample_run(r, p),
    "reconstruct_run out": lambda r, t, p: vaekit.reconstruct_run(r, p),
    "plot_run": lambda r, t, p: vaekit.plot_run(p),
    "plot_run out_dir": lambda r, t, p: vaekit.plot_run(r, p),
    "report_run": lambda r, t, p: vaekit.report_run(p),
    "compare_runs run_b": lambda r, t, p: vaekit.compare_runs(r, p),
    "probe_run": lambda r, t, p: vaekit.probe_run(p),
    "anomaly_run": lambda r, t, p: vaekit.anomaly_run(p),
    "export_run out": lambda r, t, p: vaekit.export_run(r, "onnx", out=p),
    "model_card": lambda r, t, p: vaekit.model_card(p),
    "Explorer": lambda r, t, p: vaekit.Explorer(p),
    "fit run_dir": lambda r, t, p: vaekit.fit(TINY, p),
    "fit cfg": lambda r, t, p: vaekit.fit(p, t / "new"),
    "run_sweep out": lambda r, t, p: vaekit.run_sweep(TINY, [1, 2], p),
}


OPTIONAL = ("evaluate_run data_dir", "plot_run out_dir", "export_run out")  # None is their default


@pytest.mark.parametrize("name,bad", [
    (name, bad) for name in PATH_ARGUMENTS for bad in (None, 3, "", b"r")
    if not (bad is None and name in OPTIONAL) and not (name == "fit cfg" and bad != "")  # fit takes configs too
])
def test_a_path_argument_that_is_no_path_is_a_vaekit_error_naming_it(run, tmp_path, monkeypatch, name, bad):
    """Not a TypeError from deep inside, and an empty path is never read as the current folder (here,
    the run folder itself)."""
    monkeypatch.chdir(run)
    before = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(VaekitError) as e:
        PATH_ARGUMENTS[name](run, tmp_path, bad)
    assert "empty path" in str(e.value) if bad == "" else "give a path" in str(e.value), str(e.value)
    assert sorted(p.name for p in run.rglob("*")) == before and not (tmp_path / "new").exists()


def test_every_function_reads_a_tilde_as_the_home_folder(run, tmp_path, monkeypatch):
    """As the CLI does for every path argument: a run folder given as ~/... from Python."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(run, home / "r")
    monkeypatch.setenv("HOME", str(home))
    assert vaekit.load_run("~/r").epoch == 1
    metrics = vaekit.evaluate_run("~/r", iwae_k=0, progress=False)
    assert "not_saved" not in metrics and (home / "r" / "metrics.json").is_file()
    assert vaekit.sample_run("~/r", "~/s.npy", 3, label=1)["file"] == home / "s.npy"
    assert vaekit.reconstruct_run("~/r", "~/rec.png", 3)["file"].is_file()
    assert vaekit.probe_run("~/r")["plot"] == str(home / "r" / "plots" / "probe-confusion.png")
    assert vaekit.plot_run("~/r", only=["curves"])["curves"] == home / "r" / "plots" / "curves.png"
    assert vaekit.compare_runs("~/r", "~/r", "~/c.png") and (home / "c.png").is_file()
    assert "# r:" in vaekit.model_card("~/r")
    explorer = vaekit.Explorer("~/r", log=lambda s: None)
    assert explorer.path == home / "r" and explorer.samples(2)["samples"]
    assert vaekit.sample_run("~/r", "~/g.npy", 3, label=0, sampler="gmm", components=2)["file"].is_file()
    assert (home / "r" / "sampler_gmm.safetensors").is_file() and not (tmp_path / "~").exists()
    assert vaekit.fit(None, "~/r", resume=True, epochs=2, progress=False, log=lambda s: None).epoch == 2
