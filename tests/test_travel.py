"""Run folders travel: a run moved to another folder (and read from another working directory)
works with every command, given only --data-dir where its data moved too; data paths are stored
absolute, and where the data came from is recorded with a fingerprint."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli as run


SMALL = ["--hidden", "16", "--latent-dim", "2", "--batch-size", "8", "--epochs", "1", "--no-progress"]


def _images(folder):
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True)
        for i in range(12):
            Image.new("L", (8, 8), (20 * i + (120 if c == "b" else 0)) % 256).save(folder / c / f"{i}.png")


def _vectors(folder):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(folder / "emb.npy", rng.normal(size=(60, 6)).astype(np.float32))
    np.save(folder / "labels.npy", np.arange(60) % 3)


@pytest.mark.parametrize("kind", ["folder", "vectors"])
def test_a_moved_run_works_from_anywhere_with_data_dir(kind, tmp_path, monkeypatch):
    home = tmp_path / "home"
    if kind == "folder":
        _images(home / "data" / "imgs")
        source = ["--dataset", "folder:data/imgs"]
    else:
        _vectors(home / "data")
        source = ["--dataset", "vectors:data/emb.npy", "--labels", "data/labels.npy", "--likelihood", "gaussian"]
    monkeypatch.chdir(home)
    assert run("train", *source, *SMALL, "--out", "runs/r")[0] == 0
    cfg = json.loads((home / "runs" / "r" / "config.json").read_text())
    assert cfg["data"]["dataset"].split(":", 1)[1].startswith(str(tmp_path))  # stored absolute
    record = json.loads((home / "runs" / "r" / "data.json").read_text())
    assert len(record["fingerprint"]) == 16 and record["n_train"] + record["n_test"] in (24, 60)

    # Move the run and the data elsewhere, and work from a third place.
    shutil.move(str(home / "runs" / "r"), str(tmp_path / "moved-run"))
    shutil.move(str(home / "data"), str(tmp_path / "new-data"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r, d = str(tmp_path / "moved-run"), str(tmp_path / "new-data")
    code, _, err = run("evaluate", r)
    assert code == 2 and "--data-dir" in err and len(err.strip().splitlines()) == 1
    for cmd in (["evaluate", r, "--data-dir", d, "--iwae-k", "5"], ["plot", r, "--data-dir", d],
                ["probe", r, "--data-dir", d], ["report", r, "--data-dir", d, "--iwae-k", "2"],
                ["reconstruct", r, "--data-dir", d, "-n", "4", "-o", "rec.npy"],
                ["sample", r, "-n", "4", "-o", "s.npy"],
                ["train", "--resume", r, "--epochs", "2", "--data-dir", d, "--no-progress"],
                ["evaluate", r, "--iwae-k", "0"]):  # the resumed run now records the new place
        code, _, err = run(*cmd)
        assert code == 0, (cmd, err)
        assert "warning" not in err, (cmd, err)  # same data: the fingerprint matches
    assert (tmp_path / "moved-run" / "plots" / "curves.png").is_file()


def test_a_renamed_vectors_file_is_found_by_its_new_name_and_a_wrong_place_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "emb.npy", np.random.default_rng(0).normal(size=(60, 6)).astype(np.float32))
    assert run("train", "--dataset", "vectors:emb.npy", *SMALL, "--out", "r")[0] == 0
    (tmp_path / "emb.npy").rename(tmp_path / "embeddings-v2.npy")
    code, out, err = run("evaluate", "r", "--data-dir", "embeddings-v2.npy", "--iwae-k", "2")
    assert code == 0 and "warning" not in err, err  # the same data under a new name
    code, _, err = run("evaluate", "r", "--data-dir", str(tmp_path / "nowhere"))
    assert code == 2 and "this run's data ('emb.npy') are not in" in err and "or the file itself" in err


def test_changed_contents_of_the_same_shape_give_a_warning(tmp_path, monkeypatch):
    _vectors(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    assert run("train", "--dataset", "vectors:data/emb.npy", "--likelihood", "gaussian", *SMALL, "--out", "r")[0] == 0
    np.save(tmp_path / "data" / "emb.npy", np.ones((60, 6), np.float32))
    code, _, err = run("evaluate", "r", "--iwae-k", "0")
    assert code == 0 and "differ from the ones" in err and len(err.strip().splitlines()) == 1


def test_an_mnist_run_with_a_relative_data_dir_works_from_another_directory(mnist_dir, tmp_path, monkeypatch):
    import os

    monkeypatch.chdir(tmp_path)
    rel = os.path.relpath(mnist_dir, tmp_path)
    assert run("train", "--preset", "mnist-mlp", "--data-dir", rel, "--no-download", "--epochs", "0", "--out", "r",
               "--no-progress")[0] == 0
    other = tmp_path / "deeper" / "still"
    other.mkdir(parents=True)
    monkeypatch.chdir(other)
    code, out, err = run("evaluate", str(tmp_path / "r"), "--iwae-k", "0", "--json")
    assert code == 0, err
    assert json.loads(out)["n"] == 10000


def test_photographs_at_full_size_are_resized_without_a_preset_and_a_preset_names_the_flag(tmp_path, monkeypatch):
    """Phone photos are thousands of pixels a side: a model of that size does not fit, so without a
    preset (and without --image-size) they are resized to 64 px, said in one line; with a preset the
    refusal names --image-size, not only --max-memory."""
    from vaekit.autoconfig import image_size_for
    from vaekit.checkpoint import load_run

    assert image_size_for([(32, 32)] * 3) is None and image_size_for([(1200, 900)]) == 64
    assert image_size_for([(28, 28), (32, 32)]) == 24 and image_size_for([(10, 12), (64, 64)]) == 16
    rng = np.random.default_rng(0)
    (tmp_path / "photos").mkdir()
    for i in range(10):
        Image.fromarray((rng.random((240, 320, 3)) * 255).astype(np.uint8)).save(tmp_path / "photos" / f"{i}.jpg")
    monkeypatch.chdir(tmp_path)
    code, out, err = run("train", "--dataset", "folder:photos", "--epochs", "1", "--out", "p", "--no-progress")
    assert code == 0, err
    assert "images of 320x240 are cropped to their centred squares and scaled to 64x64" in out and "3x64x64 colour images" in out
    assert load_run("p").data_shape == (3, 64, 64) and load_run("p").config.data.image_size == 64
    code, _, err = run("train", "--preset", "cifar10-resnet", "--dataset", "folder:photos", "--batch-size", "4",
                       "--epochs", "1", "--out", "q", "--no-progress")
    assert code == 2 and "--image-size N (the data are 320x240)" in err and not (tmp_path / "q").exists()
    Image.fromarray((rng.random((48, 40, 3)) * 255).astype(np.uint8)).save(tmp_path / "photos" / "small.png")
    code, out, err = run("train", "--dataset", "folder:photos", "--epochs", "1", "--out", "mixed", "--no-progress")
    assert code == 0 and "several sizes (40x48, 320x240) are cropped to their centred squares and scaled to 40x40" in out, err
    # an odd size the 16-image probe does not see: the load meets it, and the folder is resized all the same
    (tmp_path / "late").mkdir()
    for i in range(40):
        Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(tmp_path / "late" / f"{i:03d}.png")
    Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8)).save(tmp_path / "late" / "999.png")
    code, out, err = run("train", "--dataset", "folder:late", "--epochs", "1", "--out", "late-run", "--no-progress")
    assert code == 0 and "several sizes (32x32, 40x40) are scaled to 32x32" in out, err
    assert load_run("late-run").data_shape == (1, 32, 32)


def test_photos_of_another_shape_are_cropped_not_squashed_unless_asked(tmp_path, monkeypatch):
    """A 4:3 photo made square: by default its centred square is scaled (no distortion: a circle stays
    round); --resize squash scales both sides instead; a run folder written before --resize existed
    reads as squash, the way its data were made; --resize where nothing is resized is refused."""
    import json

    from vaekit.checkpoint import load_config, load_run
    from vaekit.config import DataConfig
    from vaekit.data import load_dataset

    (tmp_path / "p").mkdir()
    for i in range(4):  # 80x60, a white stripe on the left eighth, black elsewhere
        a = np.zeros((60, 80), np.uint8)
        a[:, :10] = 255
        Image.fromarray(a).save(tmp_path / "p" / f"{i}.png")
    x = {how: load_dataset(DataConfig(dataset=f"folder:{tmp_path / 'p'}", image_size=30, resize=how,
                                      test_fraction=0.25)).train_x[0, 0].numpy() for how in ("crop", "squash")}
    assert x["crop"].max() == 0  # the centred 60x60 (columns 10..69) misses the stripe
    assert (x["squash"][:, :3] == 255).all() and x["squash"][:, 5:].max() == 0  # an eighth of the width
    monkeypatch.chdir(tmp_path)
    assert run("train", "--dataset", "folder:p", "--image-size", "30", "--epochs", "1", "--out", "r",
               "--no-progress")[0] == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["data"]["resize"] == "crop"
    del saved["data"]["resize"]  # as an older vaekit wrote it
    (tmp_path / "r" / "config.json").write_text(json.dumps(saved))
    assert load_config(tmp_path / "r").data.resize == "squash" and load_run(tmp_path / "r").epoch == 1
    code, _, err = run("train", "--dataset", "folder:p", "--resize", "squash", "--channels", "1", "--hidden", "8",
                       "--epochs", "1", "--out", "s", "--no-progress", "--preset", "digits-mlp")
    assert code == 2 and "--resize (data.resize=squash) applies only to folder: data resized" in err


def test_no_preset_chooses_a_model_that_fits_the_data(tmp_path, monkeypatch):
    """Colour photos get a residual conv VAE with a discretised logistic likelihood; embeddings an MLP;
    the choice is printed in one line, and an explicit flag wins over it."""
    from vaekit.checkpoint import load_run

    rng = np.random.default_rng(0)
    (tmp_path / "photos").mkdir()
    for i in range(24):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(tmp_path / "photos" / f"{i}.png")
    np.save(tmp_path / "emb.npy", rng.normal(size=(80, 96)).astype(np.float32))
    monkeypatch.chdir(tmp_path)
    code, out, err = run("train", "--dataset", "folder:photos", "--epochs", "1", "--out", "p", "--no-progress")
    assert code == 0, err
    assert "chose a residual conv VAE" in out and "3x32x32 colour images" in out and "logistic" in out
    assert "spatial latent of 8 maps of 8x8" in out
    r = load_run("p")
    assert r.data_shape == (3, 32, 32) and r.config.model.arch == "resnet"
    assert (r.config.model.likelihood, r.config.model.mixtures) == ("dlogistic", 5)
    assert (r.config.model.spatial_latent, r.config.model.latent_dim, r.config.model.hidden) == (True, 512, [32, 64])
    # a latent size of one's own takes the spatial wiring with it: a vector latent of that size
    code, out, err = run("train", "--dataset", "folder:photos", "--latent-dim", "64", "--epochs", "1", "--out", "q",
                         "--no-progress")
    assert code == 0, err
    assert "your flags set latent_dim" in out
    q = load_run("q").config.model
    assert (q.arch, q.spatial_latent, q.latent_dim, q.likelihood) == ("resnet", False, 64, "dlogistic")
    code, out, err = run("train", "--dataset", "vectors:emb.npy", "--epochs", "1", "--out", "v", "--no-progress")
    assert code == 0 and "chose an MLP VAE (192, 192; latent 12" in out and "96-d vectors" in out
    code, out, err = run("train", "--dataset", "folder:photos", "--arch", "mlp", "--likelihood", "bernoulli",
                         "--latent-dim", "5", "--epochs", "1", "--out", "m", "--no-progress")
    assert code == 0, err
    m = load_run("m").config.model
    assert (m.arch, m.likelihood, m.latent_dim, m.learn_sigma) == ("mlp", "bernoulli", 5, False)
    code, out, err = run("train", "--preset", "digits-mlp", "--epochs", "1", "--out", "d", "--no-progress")
    assert code == 0 and "chose" not in out  # a preset: nothing is chosen for you


@pytest.mark.parametrize("side, stages, maps", [(32, [32, 64], 8), (64, [32, 64, 128], 8), (96, [32, 64, 128], 12)])
def test_colour_photos_get_a_spatial_latent_at_the_deepest_resolution(side, stages, maps):
    """8-bit colour images get 8 latent maps at the encoder's deepest resolution (a third stage from 64 px),
    and the model that choice describes builds; turning the spatial latent off, or an architecture of
    one's own, gives a vector latent of 32 again."""
    import torch

    from vaekit.autoconfig import choose_model
    from vaekit.config import RunConfig
    from vaekit.data import Dataset
    from vaekit.models import build_model

    x = torch.randint(0, 256, (4, 3, side, side), dtype=torch.uint8)
    data = Dataset("photos", x, None, x, None, scale=255.0)
    chosen, why = choose_model(data)
    assert chosen["model.hidden"] == ",".join(map(str, stages)) and chosen["model.spatial_latent"] is True
    assert chosen["model.latent_dim"] == 8 * maps * maps and f"8 maps of {maps}x{maps}" in why
    cfg = RunConfig().with_overrides(chosen)
    model = build_model(cfg.model, data.shape)
    assert model.encode(x[:2].float() / 255)[0].shape == (2, 8 * maps * maps)
    for given in ({"model.spatial_latent": False}, {"model.arch": "conv"}, {"model.hidden": "16,32"}):
        chosen, _ = choose_model(data, given)
        assert "model.spatial_latent" not in chosen and chosen["model.latent_dim"] == 32


def test_the_line_saying_what_was_chosen_describes_the_model_the_flags_make_with_it(tmp_path):
    """`--model hvae` without a preset was refused ("needs two or more latent layers") and `--model ae`
    was announced as "an MLP VAE": the line now describes the model trained, and a hierarchy gets two
    layers (the latent size, then half of it) unless --latent-dims says."""
    import torch

    from vaekit.autoconfig import choose_model, config_for_data
    from vaekit.data import Dataset

    x = torch.rand(20, 6)
    data = Dataset("vectors", x, None, x, None)
    for given, says in (({"model.kind": "hvae"}, "an MLP hierarchical VAE (64, 64; latent layers 2, 1;"),
                        ({"model.kind": "hvae", "model.latent_dims": "3,2,1"}, "latent layers 3, 2, 1;"),
                        ({"model.kind": "ae"}, "an MLP autoencoder (64, 64; latent 2;"),
                        ({"model.likelihood": "gaussian", "model.sigma": 0.5}, "Gaussian likelihood (sigma 0.5))")):
        assert says in choose_model(data, given)[1]
    pixels = torch.randint(0, 256, (20, 3 * 16 * 16)).float()  # a table of colour pixels, as read
    line = choose_model(Dataset("vectors", pixels, None, pixels, None))[1]
    assert line.endswith("rows of 768 whole numbers in 0..255 look like images: --image-shape 16,16,3 reads them so")
    assert "look like images" not in choose_model(Dataset("vectors", pixels / 7, None, pixels / 7, None))[1]
    said: list[str] = []
    cfg, _ = config_for_data("digits", {"model.kind": "hvae", "model.latent_dim": 6}, progress=False, log=said.append)
    assert cfg.model.latent_dims == [6, 3] and "hierarchical VAE (512, 256; latent layers 6, 3" in said[0]


def test_two_runs_served_side_by_side_take_data_dir_where_their_data_are_files(tmp_path, monkeypatch):
    from vaekit.errors import DataError
    from vaekit.explore import Explorer
    from vaekit.server import _data_dirs

    _images(tmp_path / "data" / "imgs")
    monkeypatch.chdir(tmp_path)
    assert run("train", "--dataset", "folder:data/imgs", *SMALL, "--out", "photos")[0] == 0
    assert run("train", *SMALL, "--out", "digits")[0] == 0
    shutil.move(str(tmp_path / "data"), str(tmp_path / "moved"))
    pair, moved = [str(tmp_path / "photos"), str(tmp_path / "digits")], str(tmp_path / "moved")
    dirs = _data_dirs(pair, moved)
    assert dirs == [moved, None]
    assert [len(Explorer(r, d).map_points()["xy"]) for r, d in zip(pair, dirs)] == [2, 359]
    # No run of the pair reads files: the flag is refused as for one run, not dropped.
    both = [str(tmp_path / "digits")] * 2
    with pytest.raises(DataError, match="built into vaekit"):
        [Explorer(r, d) for r, d in zip(both, _data_dirs(both, moved))]
