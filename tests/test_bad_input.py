"""The bad-input table: each row is a case and its expected one-line error. Every row must exit
with code 2, print exactly one line on stderr naming the file or flag, show no traceback and
write nothing (no run folder appears)."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
from PIL import Image

from vaekit.cli import main
from vaekit.presets import get_preset


def _idx(dims, fill=0, magic=b"\x00\x00\x08") -> bytes:
    return magic + bytes([len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + bytes([fill]) * int(np.prod(dims))


def _idx_set(folder, **overrides):
    folder.mkdir(parents=True, exist_ok=True)
    files = {"train-images-idx3-ubyte": _idx((10, 28, 28)), "train-labels-idx1-ubyte": _idx((10,)),
             "t10k-images-idx3-ubyte": _idx((5, 28, 28)), "t10k-labels-idx1-ubyte": _idx((5,))}
    files.update(overrides)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture
def inputs(tmp_path):
    t = tmp_path
    good_images = _idx((5, 28, 28))
    _idx_set(t / "idx_truncated", **{"t10k-images-idx3-ubyte": good_images[:-100]})
    _idx_set(t / "idx_magic", **{"t10k-images-idx3-ubyte": b"\x12\x34" + good_images[2:]})
    _idx_set(t / "idx_longer", **{"t10k-images-idx3-ubyte": good_images + b"\x00" * 7})
    _idx_set(t / "idx_counts", **{"t10k-labels-idx1-ubyte": _idx((4,))})
    _idx_set(t / "idx_checksum")
    gz = _idx_set(t / "idx_badgzip")
    (gz / "t10k-labels-idx1-ubyte").unlink()
    (gz / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx((5,)))[:-4])  # trailer cut
    np.save(t / "rank3.npy", np.zeros((4, 3, 2), np.float32))
    np.save(t / "object.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(t / "nan.npy", np.array([[np.nan, 1.0], [0.0, 1.0], [1.0, 0.0]], np.float32))
    np.save(t / "empty.npy", np.zeros((0, 8), np.float32))
    np.save(t / "wide.npy", np.linspace(-3, 3, 400, dtype=np.float32).reshape(100, 4))
    with open(t / "lying.npy", "wb") as f:  # declares 300 GB, holds 64 bytes
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10**8, 768)})
        f.write(b"\x00" * 64)
    for name in ("imgs_text", "imgs_sizes"):
        (t / name).mkdir()
        for i in range(3):
            Image.new("L", (8, 8), 40 * i).save(t / name / f"{i}.png")
    (t / "imgs_text" / "notes.txt").write_text("not an image")
    Image.new("L", (12, 12)).save(t / "imgs_sizes" / "big.png")
    run = t / "run"
    run.mkdir()
    cfg = get_preset("digits-mlp")
    (run / "config.json").write_text(cfg.to_json())
    for name, text in [("no_config", None), ("bad_json", "{oops"), ("version", "v99"), ("mismatch", "latent")]:
        d = t / name
        d.mkdir()
        d_cfg = cfg.to_dict()
        if text == "v99":
            d_cfg["format_version"] = 99
        if text == "latent":
            d_cfg["model"]["latent_dim"] = 3
        if text is not None:
            (d / "config.json").write_text(text if text == "{oops" else json.dumps(d_cfg))
    main(["train", "--preset", "digits-mlp", "--epochs", "1", "--out", str(t / "trained"), "--no-progress"])
    (t / "mismatch" / "model.safetensors").write_bytes((t / "trained" / "model.safetensors").read_bytes())
    (t / "a_file").write_text("x")
    return t


TRAIN = ["train", "--no-progress", "--out", "{t}/new"]
MNIST = [*TRAIN, "--dataset", "mnist", "--no-download", "--data-dir"]

TABLE = [
    # (case, argv, substrings the single stderr line must contain)
    ("missing data folder", [*MNIST, "{t}/nowhere"], ["{t}/nowhere", "train-images-idx3-ubyte", "--data-dir"]),
    ("IDX truncated", [*MNIST, "{t}/idx_truncated"], ["t10k-images-idx3-ubyte", "truncated"]),
    ("IDX wrong magic number", [*MNIST, "{t}/idx_magic"], ["t10k-images-idx3-ubyte", "magic"]),
    ("IDX header disagrees with size", [*MNIST, "{t}/idx_longer"], ["t10k-images-idx3-ubyte", "longer than its header"]),
    ("IDX labels and images differ", [*MNIST, "{t}/idx_counts"], ["t10k-labels-idx1-ubyte", "4 labels for 5 images"]),
    ("IDX not the official files", [*MNIST, "{t}/idx_checksum"], ["checksum mismatch", "download it again"]),
    ("gzip corrupt", [*MNIST, "{t}/idx_badgzip"], ["t10k-labels-idx1-ubyte.gz", "gzip"]),
    (".npy of rank 3", [*TRAIN, "--dataset", "vectors:{t}/rank3.npy"], ["rank3.npy", "2-d array (N, D)"]),
    (".npy of objects", [*TRAIN, "--dataset", "vectors:{t}/object.npy"], ["object.npy", "numpy.save as float32"]),
    (".npy with NaNs", [*TRAIN, "--dataset", "vectors:{t}/nan.npy", "--likelihood", "gaussian"], ["nan.npy", "NaN"]),
    (".npy with zero rows", [*TRAIN, "--dataset", "vectors:{t}/empty.npy"], ["empty.npy", "too few rows"]),
    (".npy header lies about its size", [*TRAIN, "--dataset", "vectors:{t}/lying.npy"], ["lying.npy", "corrupt"]),
    ("values outside [0, 1] with Bernoulli",
     [*TRAIN, "--dataset", "vectors:{t}/wide.npy", "--likelihood", "bernoulli", "--hidden", "8", "--latent-dim", "2",
      "--batch-size", "16"], ["wide.npy", "--likelihood gaussian", "rescale"]),
    ("image folder with a text file", [*TRAIN, "--dataset", "folder:{t}/imgs_text"], ["notes.txt", "not an image"]),
    ("image folder with mixed sizes", [*TRAIN, "--dataset", "folder:{t}/imgs_sizes"], ["--image-size"]),
    ("run folder without config.json", ["evaluate", "{t}/no_config"], ["{t}/no_config", "not a run folder"]),
    ("config.json malformed", ["evaluate", "{t}/bad_json"], ["config.json", "not valid JSON"]),
    ("config.json of an unknown version", ["evaluate", "{t}/version"], ["format_version 99"]),
    ("weights that do not fit the config", ["evaluate", "{t}/mismatch"], ["model.safetensors", "do not match"]),
    ("latent size 0", [*TRAIN, "--latent-dim", "0"], ["model.latent_dim=0"]),
    ("negative beta", [*TRAIN, "--beta", "-0.5"], ["objective.beta=-0.5", ">= 0"]),
    ("batch larger than the data", [*TRAIN, "--batch-size", "5000"], ["--batch-size 5000", "1438 training examples"]),
    ("unknown preset", [*TRAIN, "--preset", "vae-xl"], ["vae-xl", "vaekit presets"]),
    ("unknown data set", [*TRAIN, "--dataset", "cifar10"], ["cifar10", "mnist"]),
    ("--out is a file", ["train", "--no-progress", "--out", "{t}/a_file/run"], ["a_file", "--out"]),
    ("not a number", [*TRAIN, "--lr", "fast"], ["--lr", "fast"]),
    ("--resume of nothing", ["train", "--resume", "{t}/nothing"], ["{t}/nothing"]),
]


@pytest.mark.parametrize("case,argv,needles", TABLE, ids=[row[0] for row in TABLE])
def test_bad_input_row(case, argv, needles, inputs, capsys):
    t = str(inputs)
    capsys.readouterr()
    try:
        code = main([a.replace("{t}", t) for a in argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, (case, err)
    assert len(lines) == 1 and "Traceback" not in err, (case, err)
    for needle in needles:
        assert needle.replace("{t}", t) in lines[0], (case, lines[0])
    assert not (inputs / "new").exists(), case


def test_the_table_is_at_least_twenty_rows():
    assert len(TABLE) >= 20
