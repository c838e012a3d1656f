"""The GPU path, run where a CUDA GPU is (`pytest -m gpu`, or `bash scripts/gpu_check.sh` on a lent
machine; skipped elsewhere): the same run on the GPU as on the CPU up to sampling noise, every
precision, channels-last conv nets, torch.compile, exact resume, and no host sync per step."""

from __future__ import annotations

import math
import warnings
from collections import Counter

import pytest
import torch

from vaekit.checkpoint import load_run, read_history
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.train import fit

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
QUIET = dict(progress=False, log=lambda s: None)


def cfg(arch: str = "mlp", epochs: int = 3, **train) -> RunConfig:
    model = ModelConfig(hidden=[64], latent_dim=4) if arch == "mlp" else ModelConfig(arch="conv", hidden=[8, 16],
                                                                                     latent_dim=4)
    return RunConfig(seed=3, data=DataConfig(dataset="digits", test_fraction=0.2), model=model,
                     train=TrainConfig(**{"epochs": epochs, "batch_size": 64, "lr": 2e-3, **train}))


def losses(run_dir) -> list[float]:
    return [r["test_loss"] for r in read_history(run_dir)]


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_the_gpu_trains_what_the_cpu_trains(tmp_path, arch):
    cpu = losses(fit(cfg(arch, device="cpu"), tmp_path / "cpu", **QUIET).path)
    gpu = losses(fit(cfg(arch, device="cuda"), tmp_path / "gpu", **QUIET).path)
    assert gpu[-1] < gpu[0]
    assert gpu[-1] == pytest.approx(cpu[-1], rel=0.03)  # different noise draws, same model and data


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_every_precision_trains(tmp_path, precision):
    fp32 = losses(fit(cfg(device="cuda"), tmp_path / "fp32", **QUIET).path)
    half = losses(fit(cfg(device="cuda", precision=precision), tmp_path / precision, **QUIET).path)
    assert all(math.isfinite(v) for v in half) and half[-1] < half[0]
    assert half[-1] == pytest.approx(fp32[-1], rel=0.05)


@pytest.mark.parametrize("arch,precision", [("mlp", "fp32"), ("conv", "fp16")])
def test_resume_on_the_gpu_is_exact(tmp_path, arch, precision):
    straight = fit(cfg(arch, epochs=4, device="cuda", precision=precision), tmp_path / "a", **QUIET)
    fit(cfg(arch, epochs=2, device="cuda", precision=precision), tmp_path / "b", **QUIET)
    resumed = fit(None, tmp_path / "b", resume=True, epochs=4, **QUIET)
    assert losses(straight.path) == pytest.approx(losses(resumed.path), rel=1e-5)
    a, b = load_run(straight.path).model.state_dict(), load_run(resumed.path).model.state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), k


def test_compile_on_the_gpu(tmp_path):
    eager = losses(fit(cfg(device="cuda"), tmp_path / "eager", **QUIET).path)
    compiled = losses(fit(cfg(device="cuda", compile=True), tmp_path / "compiled", **QUIET).path)
    assert compiled[-1] == pytest.approx(eager[-1], rel=0.03)


def syncs_while(fn) -> list[str]:
    """Where (file:line) each synchronising CUDA operation ``fn`` makes was called from."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return [f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)]


def test_no_host_sync_per_step(tmp_path):
    """A training step must not wait for the GPU: the loss sums stay on the device and the NaN guard
    reads them every 50 steps. An epoch's own reads (the checkpoint's copies to the host, the test
    pass) do not depend on the batch size, so the syncs of an epoch of 90 steps less those of an epoch
    of 23 are what the 67 more steps cost."""
    few, many = (syncs_while(lambda: fit(cfg(device="cuda", epochs=1, batch_size=b), tmp_path / str(b), **QUIET))
                 for b in (64, 16))
    steps = 90 - 23
    assert len(many) - len(few) < steps / 10, (len(many), len(few), Counter(many).most_common(6))


def test_evaluate_on_the_gpu(tmp_path):
    from vaekit.evaluate import evaluate_run

    run = fit(cfg(device="cpu"), tmp_path / "run", **QUIET)
    cpu = evaluate_run(run.path, device="cpu", iwae_k=50, progress=False, save=False)
    gpu = evaluate_run(run.path, device="cuda", iwae_k=50, progress=False, save=False)
    assert gpu["loss"] == pytest.approx(cpu["loss"], rel=0.01)
    assert gpu["nll_iwae"] == pytest.approx(cpu["nll_iwae"], rel=0.01)


def test_every_command_runs_a_run_folder_on_the_gpu(tmp_path):
    """A conditional conv run trained on the CPU, then each command's function with device="cuda":
    every tensor a command makes must meet the model on its device."""
    import vaekit

    conditional = cfg("conv", epochs=1, device="cpu")
    conditional = conditional.with_overrides({"model.conditional": True})
    run = fit(conditional, tmp_path / "run", **QUIET).path
    vaekit.sample_run(run, tmp_path / "s.png", 20, device="cuda")
    vaekit.sample_run(run, tmp_path / "g.npy", 4, label=3, sampler="gmm", components=2, device="cuda")
    vaekit.reconstruct_run(run, tmp_path / "r.npy", 4, device="cuda")
    assert len(vaekit.plot_run(run, device="cuda")) >= 8
    assert vaekit.compare_runs(run, run, tmp_path / "c.png", device="cuda")["negative_elbo"]["difference"] == 0
    assert vaekit.probe_run(run, device="cuda")["linear_accuracy"] > 0.1
    assert vaekit.report_run(run, iwae_k=5, progress=False, device="cuda").is_file()
    generated = vaekit.evaluate_run(run, device="cuda", iwae_k=5, progress=False, save=False, generation=True,
                                    generation_n=200)
    assert math.isfinite(generated["fid"]) and generated["class_accuracy"] is not None, generated
    e = vaekit.Explorer(run, device="cuda", log=lambda s: None)
    assert e.samples(4, label=2)["samples"] and e.decode_map(0.1, -0.2, label=1)["png"]
    assert e.example(0)["decoded"] and len(e.interpolate(0, 1, 4)["steps"]) == 4
    assert e.decode([0.0] * e.latent_dim, label=5)["png"]


def image_folder(root, shape: tuple[int, ...], n: int = 160, classes: int = 2):
    """``n`` random images of ``shape`` (C, H, W) as PNG files, one sub-folder per class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (shape[1], shape[2], shape[0]), dtype=np.uint8)
        Image.fromarray(pixels[..., 0] if shape[0] == 1 else pixels).save(folder / f"{i}.png")
    return root


# Each model family the GPU runs on: its preset, the shape of its data and what keeps it small.
FAMILIES = [
    ("mnist-hvae", (1, 28, 28), {"objective.iwae_samples": 2}),
    ("mnist-vamp-iwae", (1, 28, 28), {"model.pseudo_inputs": 8}),
    ("mnist-nll", (1, 28, 28), {}),  # dynamic binarisation, drawn on the device
    ("cifar10-resnet", (3, 32, 32), {}),  # residual nets, spatial latent, discretised logistic mixture
    ("fashion-conv-2d", (1, 28, 28), {"model.conditional": True}),
    ("embedding-mlp", (768,), {}),
]


@pytest.mark.parametrize("preset,shape,overrides", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_model_family_trains_and_runs_on_the_gpu(tmp_path, preset, shape, overrides, device="cuda"):
    """Every family trains an epoch on the GPU, resumes there for a second (finite losses), and is
    evaluated, sampled and reconstructed there: a tensor made on the wrong device anywhere in a
    family's code (as the explorer's map had) fails here, not on a user's first GPU run."""
    import numpy as np

    import vaekit
    from vaekit.evaluate import evaluate_run
    from vaekit.presets import get_preset

    if len(shape) == 1:
        np.save(tmp_path / "vectors.npy", np.random.default_rng(0).standard_normal((160, *shape)).astype(np.float32))
        dataset = f"vectors:{tmp_path / 'vectors.npy'}"
    else:
        dataset = f"folder:{image_folder(tmp_path / 'images', shape)}"
    cfg = get_preset(preset).with_overrides({"data.dataset": dataset, "data.test_fraction": 0.2, "train.epochs": 1,
                                             "train.batch_size": 32, "train.eval_batch_size": 32,
                                             "train.device": device, **overrides})
    fit(cfg, tmp_path / "run", **QUIET)
    run = fit(None, tmp_path / "run", resume=True, epochs=2, **QUIET).path
    history = losses(run)
    assert len(history) == 2 and all(math.isfinite(v) for v in history), history
    metrics = evaluate_run(run, device=device, iwae_k=4, progress=False, save=False)
    assert math.isfinite(metrics["loss"]) and math.isfinite(metrics["nll_iwae"]), metrics
    vaekit.sample_run(run, tmp_path / "s.npy", 4, device=device)
    vaekit.reconstruct_run(run, tmp_path / "r.npy", 4, device=device)


def test_running_out_of_gpu_memory_is_one_line():
    """A real CUDA out-of-memory error (a RuntimeError subclass) is the CLI's one line with what to change,
    not "internal error ... a bug in vaekit"."""
    from vaekit.cli import _out_of_memory

    with pytest.raises(RuntimeError) as e:
        torch.empty(1 << 50, dtype=torch.uint8, device="cuda")
    line = _out_of_memory(e.value)
    assert line and line.startswith("out of GPU memory (CUDA out of memory") and "--batch-size" in line, line
