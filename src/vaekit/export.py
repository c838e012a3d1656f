"""``vaekit export RUN_DIR --format onnx``: the encoder and the decoder as ONNX graphs with a dynamic
batch axis, beside a JSON file that says what goes in and comes out. A registry of formats, so that
another (e.g. TorchScript) is one more entry.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from .checkpoint import Run, load_run
from .errors import VaekitError
from .files import atomic_write, make_folder, output_folder, user_path, write_via_buffer

ONNX_DIR = "onnx"
OPSET = 17


class EncoderGraph(nn.Module):
    """x (and a conditional model's int64 labels y) -> posterior mean and log-variance (an AE: its code only)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, ...]:
        mu, logvar = self.model.encode(x, y)
        return (mu,) if logvar is None else (mu, logvar)


class DecoderGraph(nn.Module):
    """z (and a conditional model's int64 labels y) -> the likelihood's parameters (e.g. Bernoulli
    logits) and the expected x."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        params = self.model.decode(z, y)
        return params, self.model.mean(params)


def _need_onnx() -> None:
    if importlib.util.find_spec("onnx") is None:  # torch's exporter needs it to write the file
        raise VaekitError("--format onnx needs the onnx package: pip install -e '.[onnx]'")


def _onnx(run: Run, out: Path) -> list[Path]:
    model = run.model.float()
    model.train(False)
    batch = 2  # traced with two rows; the batch axis is marked dynamic
    x = torch.rand(batch, *model.data_shape)
    z = torch.randn(batch, model.latent_dim)
    enc_out = ["mu", "logvar"] if model.variational else ["code"]
    labels = (torch.arange(batch) % model.classes,) if model.classes else ()
    names = ["y"] if model.classes else []
    graphs = [("encoder", EncoderGraph(model), (x, *labels), ["x", *names], enc_out),
              ("decoder", DecoderGraph(model), (z, *labels), ["z", *names], ["params", "mean"])]
    written = []
    for name, graph, example, inputs, outputs in graphs:
        axes = {n: {0: "batch"} for n in inputs + outputs}
        path = out / f"{name}.onnx"

        def write(buf, graph=graph, example=example, inputs=inputs, outputs=outputs, axes=axes) -> None:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(graph, example, buf, input_names=inputs, output_names=outputs,
                                  dynamic_axes=axes, opset_version=OPSET, dynamo=False)
        try:
            write_via_buffer(path, write)
        except (RuntimeError, TypeError, ValueError) as e:  # an operator the exporter lacks, say
            raise VaekitError(f"{run.path}: the {name} could not be exported to ONNX ({str(e)[:200]})") from None
        written.append(path)
    label_input = {"y": ["batch"]} if model.classes else {}
    info = {
        "format": "onnx", "opset": OPSET, "run": run.path.resolve().name, "epoch": run.epoch,
        "model": run.config.model.kind, "likelihood": run.config.model.likelihood,
        "encoder": {"file": "encoder.onnx", "input": {"x": ["batch", *model.data_shape], **label_input},
                    "outputs": {n: ["batch", model.latent_dim] for n in enc_out},
                    "note": "x as vaekit feeds the model: float32, images scaled to [0, 1]"},
        "decoder": {"file": "decoder.onnx", "input": {"z": ["batch", model.latent_dim], **label_input},
                    "outputs": {"params": ["batch", *model.param_shape], "mean": ["batch", *model.data_shape]},
                    "note": "params: the likelihood's parameters (e.g. Bernoulli logits); mean: the expected x"},
    }
    if model.classes:
        from .checkpoint import recorded_class_names

        info["conditional"] = {"classes": model.classes, "y": "int64 class numbers 0..classes-1, one per row",
                               "class_names": recorded_class_names(run.path)}
    written.append(atomic_write(out / "export.json", json.dumps(info, indent=2) + "\n"))
    return written


FORMATS: dict[str, tuple[Callable[[], None], Callable[[Run, Path], list[Path]]]] = {"onnx": (_need_onnx, _onnx)}


def export_run(run_dir: str | Path, format: str = "onnx", out: str | Path | None = None) -> list[Path]:
    """Write the run's model in ``format`` into ``out`` (default RUN_DIR/<format>); returns the files."""
    from .runlock import writing_into

    if format not in FORMATS:
        raise VaekitError(f"--format {format}: unknown; choose from {', '.join(sorted(FORMATS))}")
    need, write = FORMATS[format]
    need()
    run_dir = user_path(run_dir, "run_dir")
    run = load_run(run_dir)  # a bad run folder is refused before anything is created
    target = output_folder(out, "--out") if out is not None else run_dir / format
    with writing_into(run_dir, [target], "export", "--out DIR"):
        make_folder(target, "choose another --out")
        return write(run, target)
