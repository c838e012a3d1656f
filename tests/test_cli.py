"""The vaekit command end to end in a temporary folder, and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from vaekit.cli import main

FAST = ["--preset", "digits-mlp", "--epochs", "2", "--hidden", "32", "--latent-dim", "4", "--no-progress"]


def vaekit(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *FAST, "--out", str(out), "--beta", "0.5"]) == 0
    return out


def test_train_prints_where_results_are(run_dir, capsys):
    out = run_dir.parent / "again"
    assert main(["train", *FAST, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"Results in {out}/" in printed and "samples.png" in printed
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["hidden"] == [32] and cfg["train"]["epochs"] == 2 and cfg["preset"] == "digits-mlp"


def test_evaluate_json_uses_beta_one(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert {"loss", "recon", "kl", "n"} <= set(m)
    assert m["n"] == 359 and m["loss"] == pytest.approx(m["recon"] + m["kl"])  # beta 0.5 in training
    assert main(["evaluate", str(run_dir)]) == 0
    assert "negative ELBO" in capsys.readouterr().out


def test_sample_and_reconstruct_write_pngs(run_dir, tmp_path):
    assert main(["sample", str(run_dir), "-n", "16", "-o", str(tmp_path / "s.png")]) == 0
    with Image.open(tmp_path / "s.png") as im:
        assert im.size[0] > 100 and im.size == im.size[::-1]
    assert main(["sample", str(run_dir), "-n", "5", "-o", str(tmp_path / "s.npy")]) == 0
    arr = np.load(tmp_path / "s.npy")
    assert arr.shape == (5, 1, 8, 8) and arr.min() >= 0 and arr.max() <= 1
    assert main(["reconstruct", str(run_dir), "-o", str(tmp_path / "r.png"), "-n", "8"]) == 0
    with Image.open(tmp_path / "r.png") as im:
        assert im.size[0] > im.size[1] > 0  # one row of inputs, one of reconstructions


def test_resume_extends_a_run(run_dir, capsys):
    copy = run_dir.parent / "resumed"
    assert main(["train", *FAST, "--out", str(copy)]) == 0
    assert main(["train", "--resume", str(copy), "--epochs", "3", "--no-progress"]) == 0
    assert "3 epochs" in capsys.readouterr().out
    assert len((copy / "history.jsonl").read_text().splitlines()) == 3
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    for flags, says in ((["--out", str(copy.parent / "elsewhere")], "names another; drop --out"),
                        (["--overwrite"], "give one of them"), (["--lr", "0.1"], "got train.lr")):
        assert main(["train", "--resume", str(copy), "--epochs", "4", *flags]) == 2
        assert says in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()} == before
    assert not (copy.parent / "elsewhere").exists()
    assert main(["train", "--resume", str(copy), "--out", f"{copy}/", "--epochs", "4", "--no-progress"]) == 0


def test_presets_lists_every_name(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ["embedding-mlp", "fashion-conv-2d", "fashion-conv-2d-ae", "mlp-sigmoid-mse", "mnist-mlp",
                 "tiny-4-8-2", "digits-mlp"]:
        assert name in out


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


BAD_INPUT = [
        (["train", "--preset", "nope"], ["nope", "vaekit presets"]),
        (["train", "--dataset", "cifar"], ["cifar"]),
        (["train", "--dataset", "mnist", "--data-dir", "{tmp}/empty", "--no-download"],
         ["train-images-idx3-ubyte", "empty"]),
        (["train", "--dataset", "vectors:{tmp}/bad.npy"], ["bad.npy", "expected vectors (N, D) or images"]),
        (["train", "--dataset", "vectors:{tmp}/nan.npy", "--likelihood", "gaussian"], ["nan.npy", "non-finite"]),
        (["train", "--latent-dim", "0"], ["latent_dim"]),
        (["train", "--beta", "-1"], ["beta"]),
        (["train", "--batch-size", "99999", "--out", "{tmp}/big"], ["--batch-size"]),
        (["train", "--set", "model.colour=red"], ["model.colour"]),
        (["train", "--epochs", "many"], ["--epochs"]),
        (["evaluate", "{tmp}"], ["not a run folder"]),
        (["evaluate", "{tmp}/missing"], ["no such run folder"]),
        (["sample", "{tmp}/broken", "-o", "{tmp}/x.png"], ["model.safetensors"]),
        (["train", "--resume", "{tmp}/nothing"], ["nothing"]),
        (["frobnicate"], ["frobnicate"]),
        (["train", "--max-minutes", "-1"], ["--max-minutes", "positive"]),
        (["train", "--lr-schedule", "triangle"], ["--lr-schedule", "triangle"]),
        (["train", "--lr-min", "1", "--lr", "0.001"], ["train.lr_min"]),
        (["train", *FAST, "--out", "{tmp}/bad.npy/run"], ["bad.npy", "another --out"]),
        (["sample", "{tmp}/broken", "-o", "{tmp}/x.png"], ["model.safetensors"]),
        (["sample", "{tmp}/broken", "-o", "{tmp}/bad.npy/x.png"], ["bad.npy is not a folder"]),  # before the run
]


def _bad_input_files(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    np.save(tmp_path / "bad.npy", np.zeros((3, 4, 5, 6, 7), np.float32))
    np.save(tmp_path / "nan.npy", np.array([[np.nan, 1.0], [0.0, 1.0]], np.float32))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text(json.dumps(
        json.loads((__import__("vaekit.presets").presets.get_preset("digits-mlp").to_json()))))
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")


@pytest.mark.parametrize("args,needles", BAD_INPUT)
def test_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, args, needles):
    """In this process (the same `main` and error path as the command; a process costs ~3 s here)."""
    _bad_input_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    _one_line_error(subprocess.CompletedProcess(args, code, out, err), *[n.replace("{tmp}", str(tmp_path))
                                                                         for n in needles])


@pytest.mark.parametrize("row", [0, 12, 14])
def test_a_real_process_gives_the_same_one_line(tmp_path, row):
    args, needles = BAD_INPUT[row]
    _bad_input_files(tmp_path)
    proc = vaekit(*[a.replace("{tmp}", str(tmp_path)) for a in args], cwd=tmp_path)
    _one_line_error(proc, *[n.replace("{tmp}", str(tmp_path)) for n in needles])


def test_occupied_out_folder_is_refused_and_kept(run_dir):
    before = (run_dir / "model.safetensors").read_bytes()
    proc = vaekit("train", *FAST, "--out", str(run_dir))
    _one_line_error(proc, str(run_dir), "--overwrite")
    assert (run_dir / "model.safetensors").read_bytes() == before


def test_vaekit_alone_lists_every_command_with_one_line_each():
    proc = vaekit()
    assert proc.returncode == 0, proc.stderr
    for name in ("train", "evaluate", "sample", "reconstruct", "plot", "report", "compare", "probe", "anomaly",
                 "walkthrough", "presets"):
        assert any(line.split()[:1] == [name] and len(line.split()) > 2 for line in proc.stdout.splitlines()), name


def test_every_option_of_every_command_has_help_and_train_names_its_defaults():
    from vaekit.cli import build_parser

    parser = build_parser()
    for name, sub in parser._commands.choices.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, (name, action.option_strings or action.dest)
    text = " ".join(parser._commands.choices["train"].format_help().split())
    assert "digits-mlp: 60" in text and "digits-mlp: 256,128" in text  # epochs and hidden of the default preset
    assert "(default: cpu)" in parser._commands.choices["sample"].format_help()


def test_output_piped_into_head_is_not_an_error_and_the_work_goes_on(tmp_path):
    proc = subprocess.run(f"{sys.executable} -m vaekit walkthrough | head -1", shell=True, capture_output=True,
                          text=True)
    assert proc.stderr == "" and len(proc.stdout.splitlines()) == 1
    # unbuffered, so the reader is gone after the first epoch's line: training still runs to the end
    proc = subprocess.run(f"{sys.executable} -m vaekit train --preset tiny-4-8-2 --epochs 30 --out run --no-progress"
                          " | head -1; exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", capture_output=True,
                          text=True, cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout.startswith("epoch   1/30")
    assert len((tmp_path / "run" / "history.jsonl").read_text().splitlines()) == 30


def test_standard_output_that_fails_or_lacks_characters_is_one_line_or_escaped(tmp_path):
    """Real streams: a full device (``> /dev/full``) is an error naming standard output once the work
    is done, a closed stdout is no error, and an ASCII-only encoding escapes a non-ASCII path
    instead of crashing."""
    run = lambda cmd, **env: subprocess.run(cmd, shell=True, capture_output=True, text=True, cwd=tmp_path,  # noqa: E731
                                            env={**os.environ, **env})
    full = run(f"{sys.executable} -m vaekit walkthrough > /dev/full")
    assert full.returncode == 2 and full.stderr.strip().splitlines() == [
        "vaekit: error: standard output: No space left on device; what was printed is incomplete; the command's "
        "work is done"]
    full = run(f"{sys.executable} -m vaekit train --preset tiny-4-8-2 --epochs 3 --out full --no-progress > /dev/full")
    assert full.returncode == 2 and "standard output: No space left on device" in full.stderr
    assert len((tmp_path / "full" / "history.jsonl").read_text().splitlines()) == 3
    closed = run(f"{sys.executable} -m vaekit walkthrough >&-")
    assert closed.returncode == 0 and closed.stderr == ""
    ascii_out = run(f"{sys.executable} -m vaekit train --preset tiny-4-8-2 --epochs 1 --out \u00e9t\u00e9 --no-progress",
                    PYTHONIOENCODING="ascii")
    assert ascii_out.returncode == 0, ascii_out.stderr
    assert "done: 1 epoch. Results in" in ascii_out.stdout and "\\xe9t\\xe9" in ascii_out.stdout
    assert (tmp_path / "\u00e9t\u00e9" / "model.safetensors").is_file()


@pytest.mark.parametrize("argv,meant", [
    (["tran"], "'tran' (did you mean 'train'?)"),
    (["train", "--likelihood", "bernouli"], "'bernouli' (did you mean 'bernoulli'?)"),
    (["train", "--preset", "MNIST_mlp"], "'MNIST_mlp' (did you mean 'mnist-mlp'?)"),
    (["train", "--set", "model.latnet_dim=3"], "'model.latnet_dim' (did you mean 'model.latent_dim'?)"),
    (["train", "--dataset", "fashion_mnist"], "'fashion_mnist' (did you mean 'fashion-mnist'?)"),
])
def test_a_mistyped_name_is_answered_with_the_one_probably_meant(argv, meant, tmp_path):
    code, _, err = run_cli(*argv, "--out", str(tmp_path / "r")) if argv[0] == "train" else run_cli(*argv)
    assert code == 2 and meant in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_flag_choices_are_the_registries():
    """cli.py lists choices as literals (it starts without importing torch); they must name exactly
    what the registries hold, so a new family or objective cannot be left out of --help."""
    from vaekit.cli import TRAIN_FLAGS
    from vaekit.likelihoods import LIKELIHOODS
    from vaekit.models import MODELS
    from vaekit.models.nets import ARCHS
    from vaekit.models.priors import PRIORS
    from vaekit.objectives import IWAE_GRADIENTS, OBJECTIVES, SCHEDULES
    from vaekit.optim import LR_SCHEDULES
    from vaekit.precision import DTYPES

    registries = {
        "--model": MODELS, "--arch": ARCHS, "--likelihood": LIKELIHOODS, "--prior": PRIORS,
        "--objective": OBJECTIVES, "--iwae-gradient": IWAE_GRADIENTS, "--schedule": SCHEDULES,
        "--lr-schedule": LR_SCHEDULES, "--precision": DTYPES,
    }
    choices = {flag: kw["choices"] for flag, _, kw in TRAIN_FLAGS if "choices" in kw}
    for flag, registry in registries.items():
        assert sorted(choices[flag]) == sorted(registry), flag


def test_a_dependencys_deprecation_of_its_own_code_is_not_shown(capsys):
    """torch.compile warns that torch.jit.script_method is deprecated, from torch's own file: not for
    the user; a dependency's other warnings, and deprecations raised at vaekit's code, are shown once."""
    import warnings

    from vaekit import cli

    with cli._dependency_warnings([True]):
        for _ in range(2):
            warnings.warn_explicit("script_method is deprecated", DeprecationWarning,
                                   "/usr/lib/site-packages/torch/jit/_script.py", 366)
            warnings.warn_explicit("overflow in cast", RuntimeWarning, "/usr/lib/site-packages/numpy/core.py", 1)
            warnings.warn_explicit("old keyword", FutureWarning, "/usr/lib/site-packages/sklearn/base.py", 1)
            warnings.warn_explicit("called the old way", DeprecationWarning, cli.__file__, 10)
    err = capsys.readouterr().err.splitlines()
    assert err == ["vaekit: warning: overflow in cast", "vaekit: warning: old keyword",
                   "vaekit: warning: called the old way"]


def test_every_command_takes_the_flags_scripts_pass_to_all():
    from vaekit.cli import build_parser

    for name, sub in build_parser()._commands.choices.items():  # type: ignore[attr-defined]
        for flag in ("--no-progress", "--max-memory", "--max-ratio", "--help"):
            assert flag in sub._option_string_actions, (name, flag)


def test_the_flags_every_command_takes_may_come_before_it(run_dir, capsys):
    """`vaekit --max-memory 1K evaluate RUN` is the same as after the command (it was 'invalid
    choice: 1K'); given in both places, the one after the command wins, as it does in git."""
    assert main(["--no-progress", "--max-memory", "1K", "evaluate", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "over the memory budget of 1.0 KiB" in err and "--max-memory" in err and "invalid choice" not in err
    assert main(["--max-memory", "1K", "--max-ratio", "5", "evaluate", str(run_dir), "--max-memory", "4G",
                 "--iwae-k", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["iwae_k"] == 2
    assert main(["--max-memory", "lots", "evaluate", str(run_dir)]) == 2
    assert "argument --max-memory: 'lots' is not a size" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA GPU")
def test_every_command_on_a_run_folder_takes_a_device_and_refuses_one_that_is_not_there(run_dir, tmp_path):
    """--device is on every command that runs a run folder's model; cpu and auto run here, and cuda
    on a machine without a GPU is one line naming it, before anything is written."""
    commands = [["evaluate", str(run_dir)], ["sample", str(run_dir), "-o", str(tmp_path / "s.png")],
                ["reconstruct", str(run_dir), "-o", str(tmp_path / "r.png")], ["plot", str(run_dir), "--only", "curves"],
                ["report", str(run_dir), "--iwae-k", "0"], ["compare", str(run_dir), str(run_dir)],
                ["probe", str(run_dir)], ["serve", str(run_dir), "--port", "0"]]
    for argv in commands:
        code, _, err = run_cli(*argv, "--device", "cuda")
        assert code == 2 and len(err.strip().splitlines()) == 1 and "cuda" in err, (argv, err)
    for argv in commands[1:4] + commands[5:7]:  # evaluate and report run on the default device elsewhere
        code, _, err = run_cli(*argv, "--device", "auto" if argv[0] == "plot" else "cpu")
        assert code == 0, (argv, err)


def test_a_class_to_hold_out_may_be_named(tmp_path, monkeypatch):
    """--holdout-class dog on a folder of class folders: the config keeps dog's number; a name the
    data do not have is one line listing theirs, before any run folder exists."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(["cat", "dog", "bird"]):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.clip(rng.normal(60 + 70 * k, 20, (8, 8)), 0, 255).astype(np.uint8)).save(
                tmp_path / "pets" / name / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    small = ["--dataset", "folder:pets", "--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--no-progress"]
    code, out, err = run_cli("anomaly", *small, "--holdout-class", "dog", "--out", "a", "--json")
    assert code == 0, err
    assert json.loads((tmp_path / "a" / "config.json").read_text())["data"]["holdout_classes"] == [2]  # bird, cat, dog
    result = json.loads(out.strip().splitlines()[-1])
    assert result["holdout_classes"] == [2] and result["holdout_names"] == ["dog"]
    code, out, err = run_cli("anomaly", "a")
    assert code == 0 and "held-out class [2] (dog) vs the rest" in out, err
    code, _, err = run_cli("train", *small, "--holdout-class", "fish", "--out", "b")
    assert code == 2 and "bird, cat, dog" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "b").exists()
    code, _, err = run_cli("train", *small, "--holdout-class", "DOG", "--out", "c")  # case aside, one class
    assert code == 0 and json.loads((tmp_path / "c" / "config.json").read_text())["data"]["holdout_classes"] == [2]


def test_a_class_name_matches_whatever_its_unicode_form_or_case_unless_that_makes_two():
    import unicodedata

    from vaekit.checkpoint import class_index

    made_on_a_mac = unicodedata.normalize("NFD", "café")  # 'e' + combining accent, as macOS keeps file names
    assert made_on_a_mac != "café" and class_index(["bar", made_on_a_mac], "café") == 1
    assert class_index(["Cat", "dog"], "cat") == 0 and class_index(["Cat", "cat"], "cat") == 1
    assert class_index(["Cat", "cat"], "CAT") is None and class_index(None, "cat") is None


def test_class_names_the_font_cannot_draw_are_one_warning_line_not_one_per_character(tmp_path, monkeypatch):
    """matplotlib warns once per glyph its font lacks; the user gets one line from that place."""
    rng = np.random.default_rng(0)
    for name in ["猫咪", "犬", "café", "🐍"]:
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(tmp_path / "pets" / name / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("train", "--dataset", "folder:pets", "--epochs", "1", "--hidden", "16", "--latent-dim", "3",
                           "--no-progress", "--out", "run")
    assert code == 0, err
    code, _, err = run_cli("plot", "run", "--only", "latent-scatter")
    assert code == 0, err
    glyphs = [line for line in err.splitlines() if "missing from font" in line]
    assert len(glyphs) == 1 and "(and 3 more like it)" in glyphs[0], err


def test_a_quoted_tilde_is_the_home_folder_not_a_folder_named_tilde(tmp_path, monkeypatch, capsys):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    assert main(["train", "--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--no-progress", "--out", "~/r"]) == 0
    assert (home / "r" / "config.json").is_file() and not (cwd / "~").exists()
    assert main(["sample", "~/r", "-n", "2", "-o", "~/s.npy"]) == 0 and (home / "s.npy").is_file()
    assert main(["evaluate", "~/r"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("argv,name", [
    (["train", "--out", "", "--epochs", "1"], "--out"),
    (["evaluate", ""], "RUN_DIR"),
    (["train", "--data-dir", " ", "--epochs", "1"], "--data-dir"),
])
def test_an_empty_path_is_refused_not_read_as_the_default(argv, name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert f"{name}: an empty path" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_a_bad_environment_variable_is_named(run_dir, monkeypatch):
    from conftest import run_cli

    for name, value, says in (("VAEKIT_MAX_MEMORY", "lots", "'lots' is not a size"),
                              ("VAEKIT_MAX_RATIO", "-3", "'-3' is not a usable compression ratio")):
        monkeypatch.setenv(name, value)
        code, _, err = run_cli("evaluate", str(run_dir), "--iwae-k", "0")
        assert code == 2 and err.startswith(f"vaekit: error: ${name}: {says}"), err
        monkeypatch.delenv(name)


def test_the_defaults_the_cli_fills_in_are_the_librarys():
    """Flags that need another are parsed without a default (to tell given from not); the default the
    CLI then fills in must be the one the Python function has."""
    import inspect

    from vaekit.cli import DEPENDENT_FLAGS
    from vaekit.evaluate import evaluate_run
    from vaekit.grids import sample_run
    from vaekit.server import serve

    functions = {"evaluate": evaluate_run, "sample": sample_run, "serve": serve}
    for command, dest, _, _, _, default in DEPENDENT_FLAGS:
        if command in functions:
            assert inspect.signature(functions[command]).parameters[dest].default == default, (command, dest)



def test_runs_started_together_without_out_each_get_their_own_folder(tmp_path):
    """`for lr in ...; do vaekit train --lr $lr & done`: the runs start in the same second, and the
    default folder runs/<preset>-<time> was one folder for all (the others were refused). Each claims
    its own now (-2, -3); a refused run leaves no folder, and no runs/ where there was none."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    failed = subprocess.run([sys.executable, "-m", "vaekit", "train", "--no-progress", "--epochs", "1",
                             "--set", "train.lr=1e30"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert failed.returncode == 2 and "NaN" in failed.stderr and not (tmp_path / "runs").exists()
    procs = [subprocess.Popen([sys.executable, "-m", "vaekit", "train", "--no-progress", "--epochs", "1",
                               "--lr", lr], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for lr in ("1e-3", "2e-3", "3e-3")]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 3 and all((f / "model.safetensors").is_file() for f in folders)
    assert sorted(json.loads((f / "config.json").read_text())["train"]["lr"] for f in folders) == [1e-3, 2e-3, 3e-3]


def test_a_current_folder_that_was_deleted_is_one_line_not_mkls_fatal_error(tmp_path):
    """In a deleted folder, loading torch ended the process with "Intel oneMKL FATAL ERROR: Cannot load
    libtorch_cpu.so" (a shell whose folder was removed by another terminal, say)."""
    gone = tmp_path / "gone"
    gone.mkdir()
    script = f'cd "{gone}" && rmdir "{gone}" && exec "{sys.executable}" -m vaekit train --dataset blobs:50 --out "{tmp_path}/r"'
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("vaekit: error: the current folder no longer exists"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_a_list_flag_given_twice_means_both_values():
    """`--holdout-class 3 --holdout-class 5` held out class 5 alone (argparse keeps the last value)."""
    from vaekit.cli import build_parser

    args = build_parser().parse_args(["anomaly", "--holdout-class", "3", "--holdout-class", "5,7", "--log", "tensorboard"])
    assert args.holdout_class == "3,5,7" and args.log == "tensorboard"


def test_a_file_name_cannot_send_escape_codes_to_the_terminal(tmp_path, capsys):
    """Standard output shows control characters as escapes: a run folder named with "\\x1b[2J" (clear
    the screen) or a terminal title sequence printed it raw in the "done:" line; errors already did."""
    out = tmp_path / "run\x1b[2J\x07"
    assert main(["train", "--preset", "tiny-4-8-2", "--epochs", "1", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\x07" not in printed and "run\\x1b[2J\\x07" in printed


def test_one_test_example_gives_no_standard_error_rather_than_zero(tmp_path, capsys):
    """A test split of one example printed '± 0.0000' (and wrote loss_se 0): a spread of one value is
    unknown, not nothing."""
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32))
    run = tmp_path / "r"
    assert main(["train", "--dataset", f"vectors:{tmp_path / 'v.npy'}", "--test-fraction", "0.02", "--epochs", "1",
                 "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--iwae-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "n = 1," in out and "±" not in out and "unknown" in out  # active units: no variation to measure
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["loss_se"] is None and saved["active_units"] is None and saved["mse_std"] is None
