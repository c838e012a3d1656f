"""What got in a new user's way in the first hour, each fixed and checked: messages that say what
is wrong, pictures that do not mislead, units that fit the likelihood."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import run_cli as run


FAST = ["--hidden", "32", "--epochs", "2", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    t = tmp_path_factory.mktemp("first")
    assert run("train", "--preset", "digits-mlp", "--latent-dim", "2", *FAST, "--out", str(t / "vae"))[0] == 0
    assert run("train", "--preset", "digits-mlp", "--model", "ae", "--latent-dim", "2", *FAST, "--out", str(t / "ae"))[0] == 0
    np.save(t / "emb.npy", np.random.default_rng(0).normal(size=(50, 12)).astype(np.float32))
    assert run("train", "--dataset", f"vectors:{t}/emb.npy", "--likelihood", "gaussian", *FAST, "--out",
               str(t / "vec"))[0] == 0
    assert run("train", "--preset", "tiny-4-8-2", "--epochs", "2", "--no-progress", "--out", str(t / "mse"))[0] == 0
    return t


def test_the_ae_grid_spans_its_codes_and_the_vae_grid_its_prior(runs):
    from vaekit.figures import PLOTS, open_run

    ae = open_run(runs / "ae")
    fig = PLOTS["latent-grid"](ae)
    title = fig.axes[0].get_title()
    extent = float(title.split("±")[1].split(" ")[0])
    codes = ae.codes
    spread = float((codes - codes.median(0).values).abs().flatten().quantile(0.99))
    assert title.startswith("AE:") and extent == pytest.approx(spread, rel=1e-2)
    assert "[-3, 3]" in PLOTS["latent-grid"](open_run(runs / "vae")).axes[0].get_title()
    trav = PLOTS["traversals"](ae).axes[0]
    assert "own range" in trav.get_title() and ".." in trav.get_yticklabels()[0].get_text()


def test_vector_reconstructions_export_as_npy(runs, tmp_path):
    code, _, err = run("reconstruct", str(runs / "vec"), "-n", "5", "-o", str(tmp_path / "r.npy"))
    assert code == 0, err
    pair = np.load(tmp_path / "r.npy")
    assert pair.shape == (2, 5, 12)
    code, _, err = run("reconstruct", str(runs / "vec"), "-o", str(tmp_path / "r.png"))
    assert code == 2 and ".npy" in err and len(err.strip().splitlines()) == 1


def test_huge_sample_grids_are_refused_with_a_pointer_to_npy(runs, tmp_path):
    code, _, err = run("sample", str(runs / "vae"), "-n", "100000", "-o", str(tmp_path / "s.png"))
    assert code == 2 and "megapixel" in err and "-o FILE.npy" in err
    assert run("sample", str(runs / "vae"), "-n", "100000", "-o", str(tmp_path / "s.npy"))[0] == 0
    assert np.load(tmp_path / "s.npy").shape == (100000, 1, 8, 8)


@pytest.mark.parametrize("argv,needle", [
    (["sample", "{r}", "-o", "x.txt"], ".png or .npy"),
    (["evaluate", "{r}", "--device", "mps"], "--device mps"),
    (["evaluate", "{r}", "--device", "cuda"], "--device cuda"),
    (["train", "--resume", "{r}", "--epochs", "1"], "already trained 2 epochs"),
])
def test_messages_name_the_problem(runs, argv, needle):
    code, _, err = run(*[a.replace("{r}", str(runs / "vae")) for a in argv])
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_counts_are_spelled_right_and_compare_writes_into_the_first_run(runs, tmp_path):
    copy = tmp_path / "vae"
    shutil.copytree(runs / "vae", copy)
    code, out, _ = run("plot", str(copy), "--only", "curves")
    assert code == 0 and "wrote 1 plot to" in out
    code, out, err = run("compare", str(copy), str(runs / "ae"))
    assert code == 0, err
    assert (copy / "plots" / "compare.png").is_file() and not (tmp_path / "compare.png").exists()


def test_mse_runs_are_not_reported_in_nats_or_bits(runs):
    code, out, _ = run("evaluate", str(runs / "mse"), "--json", "--iwae-k", "3")
    m = json.loads(out)
    assert code == 0 and "bits_per_dim" not in m and "elbo_bits_per_dim" not in m and m["units"].startswith("squared")
    code, out, _ = run("evaluate", str(runs / "mse"), "--iwae-k", "3")
    assert "squared error, not nats" in out and "bits per dimension" not in out
    code, out, _ = run("evaluate", str(runs / "vae"), "--json", "--iwae-k", "3")
    assert json.loads(out)["units"] == "nats" and "bits_per_dim" in json.loads(out)


def test_resume_says_when_plots_are_stale(runs, tmp_path):
    copy = tmp_path / "vae"
    shutil.copytree(runs / "vae", copy)
    assert run("plot", str(copy), "--only", "curves")[0] == 0
    code, out, _ = run("train", "--resume", str(copy), "--epochs", "3", "--no-progress")
    assert code == 0 and "were made before this training" in out


def test_an_official_file_in_the_wrong_folder_is_named(mnist_dir, tmp_path):
    for f in mnist_dir.iterdir():
        if "idx" in f.name:
            shutil.copy(f, tmp_path / f.name)
    code, _, err = run("train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--no-download",
                       "--out", str(tmp_path / "r"))
    assert code == 2 and "official mnist" in err and "--dataset mnist" in err and "delete" not in err


def test_the_run_folders_reconstructions_name_their_rows(runs):
    from PIL import Image

    with Image.open(runs / "vae" / "reconstructions.png") as im:
        a = np.asarray(im.convert("L"))
    margin, tiles = a[:, :90], a[:, 96:]
    assert (margin < 100).sum() > 50  # the words "input" and "reconstruction" are drawn there
    assert tiles.shape[1] > 8 * 56


def test_the_report_says_when_and_from_which_epoch_it_was_made(runs, tmp_path):
    copy = tmp_path / "vae"
    shutil.copytree(runs / "vae", copy)
    assert run("report", str(copy), "--iwae-k", "2")[0] == 0
    assert "from the\nweights of epoch 2" in (copy / "report.html").read_text() or \
        "weights of epoch 2" in " ".join((copy / "report.html").read_text().split())


def test_readme_and_presets_speak_to_outsiders():
    """No internal project terms in what a user reads: describe models by what they are."""
    import re
    from pathlib import Path

    from vaekit.presets import PRESETS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    pattern = re.compile(r"\bissue [0-9]|\bseed[ -]00[0-4]|seed system|\bthe spec\b", re.I)
    assert not pattern.findall(readme)
    assert not [p.summary for p in PRESETS.values() if pattern.search(p.summary)]


def test_the_readme_layout_names_every_module_and_every_command_function():
    """A reader finds where a thing lives from the README: each module is in its layout, and each
    command's Python function in its API table."""
    from pathlib import Path

    import vaekit

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    modules = [p.name for p in (root / "src" / "vaekit").glob("*.py") if not p.name.startswith("__")]
    assert [m for m in modules if f"  {m}" not in layout] == []
    api = readme[readme.index("## Python API"):readme.index("## Conventions")]
    assert [f for f in vaekit.COMMANDS.values() if f"`{f}" not in api] == []
