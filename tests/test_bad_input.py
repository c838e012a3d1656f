"""The bad-input table: each row is a case and its expected one-line error. Every row must exit
with code 2, print exactly one short line on stderr naming the file or flag, show no traceback
and change nothing: no run folder appears, and every file the table's cases use (existing
runs included) is byte-for-byte the same afterwards."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import tarfile
import zipfile

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


def _zip_bomb(path, inflated: int) -> None:
    """A real .npz: one member, a valid .npy header and ``inflated`` zero bytes, deflated."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (inflated // 1024, 256)}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, header)
            f.write(buf.getvalue())
            for _ in range(inflated // (1 << 20)):
                f.write(b"\0" * (1 << 20))


def _tamper(path, change) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    with open(path, "rb") as f:
        meta = json.loads(f.read(int.from_bytes(f.read(8), "little")))["__metadata__"]
    change(tensors, meta)
    save_file(tensors, str(path), metadata=meta)


def _optimizer(meta, key, value):
    o = json.loads(meta["optimizer"])
    o[key] = value
    meta["optimizer"] = json.dumps(o)


def _more_inputs(t):
    """Files for the second half of the table: sizes, special files, damaged runs, messages."""
    trained = t / "trained"
    _zip_bomb(t / "bomb.npz", 64 << 20)
    with zipfile.ZipFile(t / "liar.npz", "w") as z:  # member header declares far more than it holds
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (1000, 1000)})
        z.writestr("x.npy", buf.getvalue() + b"\0" * 64)
    with zipfile.ZipFile(t / "many.npz", "w") as z:
        for i in range(1001):
            z.writestr(f"a{i}.npy", b"")
    huge = b"\x00\x00\x08\x03" + struct.pack(">3I", 60000, 2800, 2800)
    _idx_set(t / "idx_huge")
    (t / "idx_huge" / "train-images-idx3-ubyte").unlink()
    (t / "idx_huge" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(huge + b"\0" * 1000))
    os.mkfifo(t / "fifo.npy")
    os.mkfifo(t / "fifo.json")
    (t / "fifo_run").mkdir()
    shutil.copy(trained / "model.safetensors", t / "fifo_run" / "model.safetensors")
    os.mkfifo(t / "fifo_run" / "config.json")
    np.savez(t / "neg_labels.npz", x=np.random.default_rng(0).random((40, 4), dtype=np.float32),
             y=np.arange(40) % 3 - 1)
    np.savez(t / "one_class.npz", x=np.random.default_rng(0).random((40, 4), dtype=np.float32), y=np.zeros(40, int))
    main(["train", "--dataset", f"vectors:{t}/one_class.npz", "--hidden", "8", "--latent-dim", "2", "--batch-size",
          "8", "--epochs", "1", "--out", str(t / "one_class_run"), "--no-progress"])
    for name, change in {
        "st_truncated": None,
        "st_rng_dtype": lambda ts, m: ts.__setitem__("rng.torch", ts["rng.torch"].float()),
        "st_opt_json": lambda ts, m: m.__setitem__("optimizer", "{oops"),
        "st_moment_shape": lambda ts, m: ts.__setitem__("optim.0.exp_avg", ts["optim.0.exp_avg"][:1]),
        "st_step_past": lambda ts, m: (m.__setitem__("step", "999"), ts.__setitem__("partial.sums", ts["rng.torch"][:3].float()),
                                       ts.__setitem__("rng.data_epoch_start", ts["rng.data"].clone())),
        "st_scalars": lambda ts, m: _optimizer(m, "scalars", {"0.step": [1]}),
        "st_epoch": lambda ts, m: m.__setitem__("epoch", "1e9"),
    }.items():
        shutil.copytree(trained, t / name)
        state = t / name / "training_state.safetensors"
        if change is None:
            state.write_bytes(state.read_bytes()[:300])
        else:
            _tamper(state, change)
    shutil.copytree(trained, t / "garbage_model")
    (t / "garbage_model" / "model.safetensors").write_bytes(os.urandom(2000))
    shutil.copytree(trained, t / "huge_shape")
    _tamper(t / "huge_shape" / "model.safetensors", lambda ts, m: m.__setitem__("data_shape", "[3, 20000, 20000]"))
    for name, content in [("nested", b"[" * 50000 + b"]" * 50000), ("latin1", '{"preset": "\xe9"}'.encode("latin-1"))]:
        (t / name).mkdir()
        (t / name / "config.json").write_bytes(content)
    (t / "user_folder").mkdir()
    (t / "user_folder" / "notes.txt").write_text("mine")
    imgs = t / "imgs_changing"
    imgs.mkdir()
    for i in range(12):
        Image.new("L", (8, 8), 20 * i).save(imgs / f"{i}.png")
    main(["train", "--dataset", f"folder:{imgs}", "--hidden", "8", "--latent-dim", "2", "--batch-size", "4",
          "--epochs", "1", "--out", str(t / "folder_run"), "--no-progress"])
    shutil.copytree(imgs, t / "moved" / imgs.name)  # the run's images as they were, moved elsewhere
    for i in range(12):
        Image.new("L", (10, 10), 20 * i).save(imgs / f"{i}.png")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    t = tmp_path_factory.mktemp("bad")
    good_images = _idx((5, 28, 28))
    _idx_set(t / "idx_truncated", **{"t10k-images-idx3-ubyte": good_images[:-100]})
    _idx_set(t / "idx_magic", **{"t10k-images-idx3-ubyte": b"\x12\x34" + good_images[2:]})
    _idx_set(t / "idx_longer", **{"t10k-images-idx3-ubyte": good_images + b"\x00" * 7})
    _idx_set(t / "idx_counts", **{"t10k-labels-idx1-ubyte": _idx((4,))})
    _idx_set(t / "idx_checksum")
    gz = _idx_set(t / "idx_badgzip")
    (gz / "t10k-labels-idx1-ubyte").unlink()
    (gz / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx((5,)))[:-4])  # trailer cut
    np.save(t / "rank5.npy", np.zeros((4, 3, 2, 2, 2), np.float32))
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
    (t / "bad_line.csv").write_text("a,b,label\n1,2,cat\n3,,dog\n")
    (t / "named.csv").write_text("a,b,label\n" + "".join(f"{i},{i % 3},cat {i % 2}\n" for i in range(20)))
    os.symlink(t / "gone", t / "dangling")
    (t / "archived").mkdir()
    with tarfile.open(t / "archived" / "photos.tar", "w") as tar:
        tar.add(t / "imgs_sizes", arcname="photos")
    _more_inputs(t)
    _cifar_inputs(t)
    return t


def _cifar_inputs(t):
    """CIFAR-10 batch folders in the official binary format, each damaged in one way."""
    record = bytes([1]) + bytes(3072)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for case, damage in [("cut", lambda b: b[:-10]), ("label", lambda b: b + bytes([10]) + bytes(3072)),
                         ("missing", None)]:
        folder = t / f"cifar_{case}" / "cifar-10-batches-bin"
        folder.mkdir(parents=True)
        for name in names:
            if damage is None and name == "test_batch.bin":
                continue
            data = record * 3
            (folder / name).write_bytes(damage(data) if damage and name == "data_batch_2.bin" else data)


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
    (".npy of rank 5", [*TRAIN, "--dataset", "vectors:{t}/rank5.npy"], ["rank5.npy", "expected vectors (N, D) or images"]),
    (".npy of objects", [*TRAIN, "--dataset", "vectors:{t}/object.npy"], ["object.npy", "numpy.save as float32"]),
    (".npy with NaNs", [*TRAIN, "--dataset", "vectors:{t}/nan.npy", "--likelihood", "gaussian"], ["nan.npy", "NaN"]),
    ("a table with an empty field", [*TRAIN, "--dataset", "vectors:{t}/bad_line.csv"], ["bad_line.csv", "line 3, column 2 is empty"]),
    (".npy with zero rows", [*TRAIN, "--dataset", "vectors:{t}/empty.npy"], ["empty.npy", "too few rows"]),
    (".npy header lies about its size", [*TRAIN, "--dataset", "vectors:{t}/lying.npy"], ["lying.npy", "corrupt"]),
    ("values outside [0, 1] with Bernoulli",
     [*TRAIN, "--dataset", "vectors:{t}/wide.npy", "--likelihood", "bernoulli", "--hidden", "8", "--latent-dim", "2",
      "--batch-size", "16"], ["wide.npy", "--likelihood gaussian", "rescale"]),
    ("--out through a broken link", ["train", "--no-progress", "--out", "{t}/dangling/run"],
     ["{t}/dangling: a broken link (to {t}/gone)"]),
    ("-o through a broken link", ["sample", "{t}/trained", "-o", "{t}/dangling/s.png"],
     ["-o", "{t}/dangling: a broken link"]),
    ("image folder holding only an archive of images", [*TRAIN, "--dataset", "folder:{t}/archived"],
     ["photos.tar", "an archive", "tar -xf"]),
    ("an archive given as the image folder", [*TRAIN, "--dataset", "folder:{t}/archived/photos.tar"],
     ["photos.tar", "an archive of images", "unpack"]),
    ("an archive given as vectors", [*TRAIN, "--dataset", "vectors:{t}/archived/photos.tar"],
     ["photos.tar", "an archive", ".npy/.npz"]),
    ("an unknown class held out of named classes",
     ["anomaly", "--no-progress", "--out", "{t}/new", "--dataset", "vectors:{t}/named.csv", "--holdout-class", "7"],
     ["no class 7 to hold out", "'cat 0', 'cat 1'"]),
    ("a model flag out of range, before the data are read", [*TRAIN, "--dataset", "folder:{t}/imgs_text",
                                                               "--latent-dim", "0"], ["model.latent_dim=0"]),
    ("a run inside the image folder it reads", ["train", "--no-progress", "--preset", "digits-mlp", "--dataset",
                                                "folder:{t}/imgs_text", "--out", "{t}/imgs_text/run"],
     ["--out {t}/imgs_text/run: inside the image folder {t}/imgs_text", "choose a place outside it"]),
    ("a sweep inside the image folder it reads", ["sweep", "--beta", "1,2", "--preset", "digits-mlp", "--dataset",
                                                  "folder:{t}/imgs_text", "--out", "{t}/imgs_text"],
     ["--out {t}/imgs_text: inside the image folder"]),
    *[(f"{argv[0]} writing into the image folder its run reads", argv, [f"{argv[-2]} {argv[-1]}: inside the image folder "
                                                                       "{t}/imgs_changing", "choose a place outside it"])
      for argv in (["sample", "{t}/folder_run", "-o", "{t}/imgs_changing/s.png"],
                   ["reconstruct", "{t}/folder_run", "-o", "{t}/imgs_changing/r.npy"],
                   ["report", "{t}/folder_run", "-o", "{t}/imgs_changing/r.html"],
                   ["compare", "{t}/trained", "{t}/folder_run", "-o", "{t}/imgs_changing/c.png"],
                   ["plot", "{t}/folder_run", "--out", "{t}/imgs_changing/plots"],
                   ["export", "{t}/folder_run", "--out", "{t}/imgs_changing/onnx"])],
    ("plots into the image folder its run reads, moved", ["plot", "{t}/folder_run", "--data-dir", "{t}/moved",
                                                          "--out", "{t}/moved/imgs_changing/plots"],
     ["--out {t}/moved/imgs_changing/plots: inside the image folder {t}/moved/imgs_changing", "outside it"]),
    ("image folder with a text file", [*TRAIN, "--dataset", "folder:{t}/imgs_text"], ["notes.txt", "not an image"]),
    ("image folder with mixed sizes, a preset", [*TRAIN, "--preset", "digits-mlp", "--dataset", "folder:{t}/imgs_sizes"],
     ["big.png", "--image-size"]),
    ("run folder without config.json", ["evaluate", "{t}/no_config"], ["{t}/no_config", "not a run folder"]),
    ("a folder of run folders (a sweep's)", ["evaluate", "{t}"],
     ["not a run folder", "the run folders in it: {t}/", "more; pass one of them"]),
    ("a file as the run folder", ["evaluate", "{t}/a_file"], ["{t}/a_file", "a file, not a run folder"]),
    ("config.json malformed", ["evaluate", "{t}/bad_json"], ["config.json", "not valid JSON"]),
    ("config.json of an unknown version", ["evaluate", "{t}/version"], ["format_version 99"]),
    ("weights that do not fit the config", ["evaluate", "{t}/mismatch"], ["model.safetensors", "config.json says model.latent_dim=", "edited after training"]),
    ("latent size 0", [*TRAIN, "--latent-dim", "0"], ["model.latent_dim=0"]),
    ("negative beta", [*TRAIN, "--beta", "-0.5"], ["objective.beta=-0.5", "must be in 0..1e+06"]),
    ("batch larger than the data", [*TRAIN, "--batch-size", "5000"], ["--batch-size 5000", "1438 training examples"]),
    ("unknown preset", [*TRAIN, "--preset", "vae-xl"], ["vae-xl", "vaekit presets"]),
    ("unknown data set", [*TRAIN, "--dataset", "svhn"], ["svhn", "mnist"]),
    ("--out is a file", ["train", "--no-progress", "--out", "{t}/a_file/run"], ["a_file", "--out"]),
    ("not a number", [*TRAIN, "--lr", "fast"], ["--lr", "fast"]),
    ("--resume of nothing", ["train", "--resume", "{t}/nothing"], ["{t}/nothing"]),
    # A refused command changes nothing (the fixture's runs are compared byte for byte after every row).
    ("--overwrite with an unknown schedule", ["train", "--out", "{t}/trained", "--overwrite", "--set",
                                              "objective.schedule=exp"], ["schedule", "exp"]),
    ("--overwrite with over-budget layers", ["train", "--out", "{t}/trained", "--overwrite", "--hidden", "65536,65536"],
     ["memory budget"]),
    ("--overwrite of a folder that is not a run", ["train", "--out", "{t}/user_folder", "--overwrite"],
     ["{t}/user_folder", "not a vaekit run", "nothing was removed"]),
    ("--resume on a missing GPU", ["train", "--resume", "{t}/trained", "--device", "cuda", "--epochs", "3"],
     ["--device cuda", "no CUDA GPU"]),
    ("--resume on the meta device", ["train", "--resume", "{t}/trained", "--device", "meta"], ["--device meta"]),
    ("--resume with fewer epochs", ["train", "--resume", "{t}/trained", "--epochs", "0"], ["already trained 1 epochs"]),
    ("--resume with another model", ["train", "--resume", "{t}/trained", "--latent-dim", "3"], ["--resume continues"]),
    # Sizes: one budget, named with its number and limit.
    ("a real zip bomb", [*TRAIN, "--dataset", "vectors:{t}/bomb.npz"], ["bomb.npz", "inflates", "--max-ratio"]),
    ("a zip bomb under a raised ratio meets the budget", [*TRAIN, "--dataset", "vectors:{t}/bomb.npz", "--max-ratio", "1e6",
                                                          "--max-memory", "32M"], ["bomb.npz", "32.0 MiB", "--max-memory"]),
    (".npz member larger than its data", [*TRAIN, "--dataset", "vectors:{t}/liar.npz"], ["liar.npz", "larger than its data"]),
    (".npz of 1001 arrays", [*TRAIN, "--dataset", "vectors:{t}/many.npz"], ["many.npz", "at most 1000"]),
    ("layers over the memory budget", [*TRAIN, "--hidden", "65536,65536"], ["8,600,158,288 parameters", "--max-memory"]),
    ("a huge latent", [*TRAIN, "--latent-dim", "65536", "--hidden", "65536"], ["memory budget"]),
    ("images of 30000 pixels", [*TRAIN, "--dataset", "folder:{t}/imgs_sizes", "--image-size", "30000"],
     ["data.image_size=30000"]),
    ("blobs in 1e8 dimensions", [*TRAIN, "--dataset", "blobs:100000000"], ["blobs:100000000", "memory budget"]),
    ("ten million samples", ["sample", "{t}/trained", "-n", "10000000", "-o", "{t}/new/s.png"], ["megapixel", ".npy"]),
    ("--components without --sampler gmm", ["sample", "{t}/trained", "-o", "{t}/new/s.png", "--components", "3"],
     ["--components applies only with --sampler gmm"]),
    ("--refit without --sampler gmm", ["sample", "{t}/trained", "-o", "{t}/new/s.png", "--refit"],
     ["--refit applies only with --sampler gmm"]),
    ("--sampler without --generation", ["evaluate", "{t}/trained", "--sampler", "gmm"],
     ["--sampler applies only with --generation"]),
    ("--generation-n without --generation", ["evaluate", "{t}/trained", "--generation-n", "50"],
     ["--generation-n applies only with --generation"]),
    ("--set format_version", [*TRAIN, "--set", "format_version=2"], ["format_version=2 is vaekit's own"]),
    ("--labels beside the file's own", [*TRAIN, "--dataset", "vectors:{t}/neg_labels.npz", "--labels", "{t}/y.npy"],
     ["has labels of its own", "give one of them"]),
    ("--binarize of data outside [0, 1]", [*TRAIN, "--dataset", "blobs:4", "--binarize", "static"],
     ["blobs:4: values span", "--binarize static needs [0, 1]"]),
    ("--data-dir for a folder: data set", [*TRAIN, "--dataset", "folder:{t}", "--data-dir", "{t}"],
     ["--data-dir (data.data_dir=", "applies only to mnist, fashion-mnist and cifar10"]),
    ("evaluate --data-dir of a digits run", ["evaluate", "{t}/trained", "--data-dir", "{t}"],
     ["--data-dir {t}: this run's data (digits) are built into vaekit"]),
    ("sample --data-dir without --sampler gmm", ["sample", "{t}/trained", "-o", "{t}/new/s.png", "--data-dir", "{t}"],
     ["--data-dir applies only with --sampler gmm"]),
    ("an empty value in --hidden", [*TRAIN, "--hidden", "64,,32"], ["model.hidden: '64,,32' has an empty value"]),
    ("a sweep into a file", ["sweep", "--beta", "1,2", "--out", "{t}/empty.npy"], ["--out {t}/empty.npy: exists and is not a folder"]),
    ("an empty value in sweep --beta", ["sweep", "--beta", "1,,2", "--out", "{t}/new"],
     ["--beta 1,,2: an empty value between commas"]),
    ("plot --grid-dims without the grid", ["plot", "{t}/trained", "--only", "curves", "--grid-dims", "0", "1"],
     ["--grid-dims applies only with the latent grid"]),
    ("sweep --max-minutes", ["sweep", "--beta", "1,2", "--max-minutes", "5", "--out", "{t}/new"],
     ["--max-minutes applies to `vaekit train`"]),
    ("anomaly of a run with training flags", ["anomaly", "{t}/trained", "--holdout-class", "1", "--epochs", "3"],
     ["training flags (--epochs, --holdout-class) apply only without RUN_DIR"]),
    ("an empty data set name", [*TRAIN, "--set", "data.dataset="], ["no name given", "mnist"]),
    ("two flags setting one value", [*TRAIN, "--warmup", "3", "--schedule", "constant"],
     ["--warmup 3 sets objective.schedule=linear but --schedule constant sets it to constant"]),
    ("ten million samples as .npy", ["sample", "{t}/trained", "-n", "10000000", "-o", "{t}/new/s.npy", "--max-memory", "1G"],
     ["the codes and the samples", "memory budget of 1.0 GiB"]),
    ("a model file claiming 3x20000x20000 data", ["evaluate", "{t}/huge_shape"], ["memory budget"]),
    ("an IDX header declaring 470 GB", [*MNIST, "{t}/idx_huge"], ["train-images-idx3-ubyte.gz", "memory budget"]),
    ("a tiny --max-memory", [*TRAIN, "--max-memory", "1K"], ["1.0 KiB", "--max-memory"]),
    ("--max-memory not a size", [*TRAIN, "--max-memory", "lots"], ["--max-memory", "not a size"]),
    ("--max-ratio below 1", [*TRAIN, "--max-ratio", "0.5"], ["--max-ratio"]),
    # Only regular files are read.
    ("vectors from a FIFO", [*TRAIN, "--dataset", "vectors:{t}/fifo.npy"], ["fifo.npy", "FIFO"]),
    ("vectors from /dev/zero", [*TRAIN, "--dataset", "vectors:/dev/zero"], ["/dev/zero", "character device"]),
    ("labels from /dev/zero", [*TRAIN, "--dataset", "vectors:{t}/wide.npy", "--labels", "/dev/zero"],
     ["/dev/zero", "character device"]),
    ("--config from a FIFO", ["train", "--config", "{t}/fifo.json", "--out", "{t}/new"], ["fifo.json", "FIFO"]),
    ("--config a run folder", ["train", "--config", "{t}/trained", "--out", "{t}/new"],
     ["trained: a folder (a run's?)", "give {t}/trained/config.json"]),
    ("a run whose config.json is a FIFO", ["evaluate", "{t}/fifo_run"], ["config.json", "FIFO"]),
    ("vectors: a folder", [*TRAIN, "--dataset", "vectors:{t}/trained"], ["trained", "is a folder"]),
    # Damaged or tampered files and out-of-range flags: one line, never a traceback.
    ("training state cut short", ["train", "--resume", "{t}/st_truncated", "--epochs", "3"], ["training_state.safetensors"]),
    ("training state: RNG of the wrong type", ["train", "--resume", "{t}/st_rng_dtype", "--epochs", "3"],
     ["training_state.safetensors", "random-number state"]),
    ("training state: optimizer JSON broken", ["train", "--resume", "{t}/st_opt_json", "--epochs", "3"],
     ["training_state.safetensors", "damaged"]),
    ("training state: Adam moment of the wrong shape", ["train", "--resume", "{t}/st_moment_shape", "--epochs", "3"],
     ["training_state.safetensors", "exp_avg"]),
    ("training state: stopped past the end of an epoch", ["train", "--resume", "{t}/st_step_past", "--epochs", "3"],
     ["training_state.safetensors", "step 999"]),
    ("training state: a list as optimizer scalar", ["train", "--resume", "{t}/st_scalars", "--epochs", "3"],
     ["training_state.safetensors"]),
    ("training state: epoch not a count", ["train", "--resume", "{t}/st_epoch", "--epochs", "3"],
     ["training_state.safetensors", "epoch"]),
    ("model file of random bytes", ["evaluate", "{t}/garbage_model"], ["model.safetensors"]),
    ("config.json nested 50000 deep", ["evaluate", "{t}/nested"], ["config.json", "nested too deeply"]),
    ("config.json not UTF-8", ["evaluate", "{t}/latin1"], ["config.json", "not UTF-8"]),
    ("--seed past 64 bits", [*TRAIN, "--seed", str(2**70)], ["seed=", "2**63"]),
    ("evaluate on the meta device", ["evaluate", "{t}/trained", "--device", "meta"], ["--device meta"]),
    ("sample on a device that does not exist", ["sample", "{t}/trained", "-o", "{t}/new/s.png", "--device", "foo"],
     ["--device foo"]),
    ("--test-fraction 0.99999", [*TRAIN, "--test-fraction", "0.99999"], ["--test-fraction 0.99999", "no training"]),
    ("sample to an unknown format", ["sample", "{t}/trained", "-o", "{t}/new/x.xyz"], ["x.xyz", ".png or .npy"]),
    ("reconstruct -n 0", ["reconstruct", "{t}/trained", "-n", "0", "-o", "{t}/new/r.png"], ["-n", "out of range"]),
    ("probe -k 0", ["probe", "{t}/trained", "-k", "0"], ["-k", "out of range"]),
    ("probe with more neighbours than codes", ["probe", "{t}/trained", "-k", "5000", "-o", "{t}/new/p.png"],
     ["-k 5000", "1438 training examples"]),
    ("negative labels", [*TRAIN, "--dataset", "vectors:{t}/neg_labels.npz", "--likelihood", "gaussian"],
     ["neg_labels.npz", "class numbers"]),
    ("probe of single-class labels", ["probe", "{t}/one_class_run", "-o", "{t}/new/p.png"], ["single class"]),
    ("evaluate --iwae-k -1", ["evaluate", "{t}/trained", "--iwae-k", "-1"], ["--iwae-k", "out of range"]),
    ("plot --grid-dims of one dimension twice", ["plot", "{t}/trained", "--grid-dims", "0", "0", "--out", "{t}/new"],
     ["--grid-dims 0 0"]),
    ("plot --grid-dims of one number", ["plot", "{t}/trained", "--grid-dims", "0", "--out", "{t}/new"],
     ["--grid-dims", "expected two numbers, I J or I,J"]),
    ("plot --grid-dims of three numbers", ["plot", "{t}/trained", "--grid-dims", "0,1,2", "--out", "{t}/new"],
     ["--grid-dims", "expected two numbers, I J or I,J"]),
    ("a logger named twice", [*TRAIN, "--log", "tensorboard", "--log", "tensorboard"],
     ["train.log=['tensorboard', 'tensorboard'] names a logger twice"]),
    ("a held-out class named twice", ["anomaly", "--holdout-class", "3,3", "--out", "{t}/new"],
     ["data.holdout_classes=[3, 3] names a class twice"]),
    ("--image-shape for built-in images", [*TRAIN, "--image-shape", "8,8"],
     ["--image-shape (data.image_shape=[8, 8]) applies only to vectors: data"]),
    ("--image-shape with two channels", [*TRAIN, "--dataset", "vectors:{t}/rank5.npy", "--image-shape", "2,4,4"],
     ["data.image_shape=[2, 4, 4] must be H,W (grey) or C,H,W or H,W,C with C 1 or 3"]),
    ("--epochs -1", [*TRAIN, "--epochs", "-1"], ["train.epochs=-1"]),
    ("--max-minutes 0", [*TRAIN, "--max-minutes", "0"], ["--max-minutes", "positive"]),
    # Objectives by name, checked against the model before anything is written.
    ("--objective iwae with an autoencoder", [*TRAIN, "--objective", "iwae", "--model", "ae"], ["needs a VAE"]),
    ("--free-bits with an autoencoder", [*TRAIN, "--free-bits", "0.5", "--model", "ae"], ["--free-bits", "needs a VAE"]),
    ("--iwae-samples 0", [*TRAIN, "--objective", "iwae", "--iwae-samples", "0"], ["objective.iwae_samples=0"]),
    ("--iwae-samples without --objective iwae", [*TRAIN, "--iwae-samples", "9"], ["applies only to --objective iwae"]),
    ("negative --free-bits", [*TRAIN, "--free-bits", "-1"], ["objective.free_bits=-1.0"]),
    ("--free-bits with the IWAE bound", [*TRAIN, "--objective", "iwae", "--free-bits", "1"], ["--free-bits (objective.free_bits=1.0) applies only to --objective elbo"]),
    ("IWAE samples times the batch over the budget", [*TRAIN, "--objective", "iwae", "--iwae-samples", "10000",
                                                      "--batch-size", "1000", "--hidden", "4096,4096"],
     ["10,000,000 examples at once", "memory budget"]),
    ("an unknown objective", [*TRAIN, "--set", "objective.kind=vlb"], ["unknown objective 'vlb'", "elbo"]),
    ("--iwae-gradient without --objective iwae", [*TRAIN, "--iwae-gradient", "dreg"], ["applies only to --objective iwae"]),
    ("an unknown IWAE gradient", [*TRAIN, "--objective", "iwae", "--set", "objective.iwae_gradient=stl"],
     ["unknown IWAE gradient 'stl'", "dreg"]),
    ("--iwae-gradient dreg with a hierarchy", [*TRAIN, "--model", "hvae", "--latent-dims", "4,2", "--objective",
                                               "iwae", "--iwae-gradient", "dreg"], ["dreg needs one latent layer"]),
    ("--overwrite with an objective the model cannot use", ["train", "--out", "{t}/trained", "--overwrite",
                                                            "--objective", "iwae", "--model", "ae"], ["needs a VAE"]),
    # Colour: the CIFAR-10 binary files, the 8-bit likelihood and the residual architecture.
    ("a truncated CIFAR-10 batch", [*TRAIN, "--dataset", "cifar10", "--no-download", "--data-dir", "{t}/cifar_cut"],
     ["data_batch_2.bin", "3073-byte CIFAR-10 records"]),
    ("a CIFAR-10 label out of range", [*TRAIN, "--dataset", "cifar10", "--no-download", "--data-dir",
                                       "{t}/cifar_label"], ["data_batch_2.bin", "record 3 has label 10"]),
    ("a CIFAR-10 folder without its test batch", [*TRAIN, "--dataset", "cifar10", "--no-download", "--data-dir",
                                                  "{t}/cifar_missing"], ["test_batch.bin is missing"]),
    ("CIFAR-10 offline and not there", [*TRAIN, "--dataset", "cifar10", "--no-download", "--data-dir", "{t}/no_cifar"],
     ["cifar10", "--data-dir"]),
    ("a file as the data folder", [*TRAIN, "--dataset", "cifar10", "--data-dir", "{t}/a_file"],
     ["--data-dir {t}/a_file: is a file, not a folder"]),
    ("dlogistic on vectors", [*TRAIN, "--dataset", "vectors:{t}/wide.npy", "--likelihood", "dlogistic"],
     ["8-bit images", "--likelihood gaussian"]),
    ("dlogistic on float pixels", [*TRAIN, "--preset", "digits-mlp", "--arch", "conv", "--hidden", "8",
                                   "--likelihood", "dlogistic"], ["dlogistic likelihood models 8-bit images"]),
    ("--mixtures without dlogistic", [*TRAIN, "--mixtures", "4"], ["applies only to --likelihood dlogistic"]),
    ("--mixtures 0", [*TRAIN, "--likelihood", "dlogistic", "--mixtures", "0"], ["model.mixtures=0"]),
    ("resnet on vectors", [*TRAIN, "--dataset", "vectors:{t}/wide.npy", "--arch", "resnet"], ["image data"]),
    ("resnet with too many stages for the size", [*TRAIN, "--preset", "digits-mlp", "--arch", "resnet",
                                                  "--hidden", "8,8,8,8"], ["divisible by 16", "8x8"]),
    ("spatial latent not a whole number of maps", [*TRAIN, "--preset", "digits-mlp", "--arch", "conv", "--hidden",
                                                   "8", "--latent-dim", "17", "--spatial-latent"],
     ["--spatial-latent", "multiple of 16", "got 17"]),
    ("spatial latent with an MLP", [*TRAIN, "--spatial-latent"], ["model.spatial_latent", "--arch conv or resnet"]),
    ("spatial latent on a hierarchy", [*TRAIN, "--model", "hvae", "--latent-dims", "8,4", "--arch", "resnet",
                                       "--spatial-latent"], ["model.spatial_latent", "--model vae or ae"]),
    # Messages: one short line, control characters escaped, changed data named as such.
    ("a newline in a --set key", [*TRAIN, "--set", "objective.sche\ndule=exp"], ["unknown config key", "\\n"]),
    ("escape codes in a path", ["evaluate", "{t}/no\x1b[31msuch\nrun"], ["\\x1b", "\\n", "no such run folder"]),
    ("a 200,000-character value", [*TRAIN, "--set", "model.hidden=" + ",".join(["7"] * 100000)],
     ["model.hidden=", "characters)"]),
    ("images changed since training", ["evaluate", "{t}/folder_run"], ["the data changed since training", "[1, 10, 10]"]),
]


def _snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".vaekit.lock"}


@pytest.mark.parametrize("case,argv,needles", TABLE, ids=[row[0] for row in TABLE])
def test_bad_input_row(case, argv, needles, inputs, capsys):
    t = str(inputs)
    before = _snapshot(inputs)
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
    assert len(lines[0]) < 700, (case, len(lines[0]))
    assert not (inputs / "new").exists(), case
    assert _snapshot(inputs) == before, case


def test_the_table_covers_every_class_with_sixty_rows_or_more():
    assert len(TABLE) >= 60
