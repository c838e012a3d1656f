"""What the live latent-space explorer (``vaekit serve``) computes, without any web code: a map of
the test codes, decoding any point, codes of picked examples, interpolations and samples (from the
prior, or from the Gaussian mixture fitted to the training codes).

Every request's numbers are checked here (``RequestError`` names the field and the allowed range),
so the web layer only moves JSON and bytes.
"""

from __future__ import annotations

import base64
import io
import json
import math
import threading
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .checkpoint import load_run, read_history
from .errors import VaekitError, integer, line_sink, real, show, whole_number
from .figures import RunView
from .files import user_path
from .modelcard import evaluation
from .models.base import blend_labels
from .plots import principal_plane, slerp
from .samplers import DEFAULT_COMPONENTS, check_sampler, gmm_for_run, sample_codes, saved_gmm

MAP_POINTS = 2000  # test codes drawn on the map (the first ones of the test split)
MAX_BATCH = 64  # images per request (samples, interpolation steps)
CODE_LIMIT = 1e3  # |z| above this is no place a decoder was trained for: refused
SLIDER_DIMS = 512  # sliders shown (one per dimension up to this), the dimensions with the most KL first


class RequestError(ValueError):
    """A request the explorer refuses; its message is the one-line reason sent back (HTTP 400)."""


def _given(value: Any) -> str:
    """A refused value as a message shows it: as JSON spells it (what a request sent), else its repr."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):  # numpy arrays, tensors, objects given from Python
        text = show(value, 40)
    return text[:40]


def _int(value: Any, name: str, lo: int, hi: int) -> int:
    n = integer(value)
    if n is None and isinstance(value, str):  # a query string's number
        try:
            n = int(value)
        except ValueError:
            raise RequestError(f"{name}: expected an integer in {lo}..{hi}, got '{str(value)[:40]}'") from None
    if n is None:
        raise RequestError(f"{name}: expected an integer in {lo}..{hi}, got {_given(value)}")
    if not lo <= n <= hi:
        raise RequestError(f"{name}: {n} is outside {lo}..{hi}")
    return n


def _float(value: Any, name: str, limit: float = CODE_LIMIT) -> float:
    x = real(value)
    if x is None:
        raise RequestError(f"{name}: expected a number, got {_given(value)}")
    if not math.isfinite(x) or abs(x) > limit:
        raise RequestError(f"{name}: {x} is not a finite number within +-{limit:g}")
    return x


def _code(value: Any, name: str, dim: int) -> list[float]:
    """A latent code: a JSON list, or from Python also a tuple, a 1-d numpy array or tensor."""
    if hasattr(value, "tolist") and getattr(value, "ndim", None) == 1:
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or len(value) != dim:
        got = f"a list of {len(value)}" if isinstance(value, (list, tuple)) else _given(value)
        raise RequestError(f"{name}: expected a list of {dim} numbers (the latent code), got {got}")
    return [_float(v, f"{name}[{i}]") for i, v in enumerate(value)]


class Explorer:
    """One run, loaded once, answering the explorer's questions. Thread-safe: requests are served
    one decode at a time (torch's own threads do the parallel work)."""

    def __init__(self, run_dir: str | Path, data_dir: str | None = None, device: str = "cpu",
                 map_points: int = MAP_POINTS, sampler: str = "prior", components: int = DEFAULT_COMPONENTS,
                 log: Callable[[str], None] = print) -> None:
        from .data import check_data_dir
        from .evaluate import run_data

        check_sampler(sampler, components)
        log = line_sink(log)
        map_points = whole_number(map_points, "map_points")
        self.path = run_dir = user_path(run_dir, "run_dir")
        run = load_run(run_dir, device)
        run.model.train(False)
        self.note = ""
        check_data_dir(run.config.data, data_dir)
        try:
            data = run_data(run, data_dir, progress=False)
        except VaekitError as e:  # a run folder without its data still explores: from prior draws
            data = None
            self.note = f"test data not found ({e}); the map shows draws from the prior instead"
        self._lock = threading.Lock()
        self.view = RunView(run, data.to(run.model.device) if data is not None else None, seed=run.config.seed)  # type: ignore[arg-type]
        self.n = min(map_points, len(data.test_x)) if data is not None else min(map_points, 500)
        self.gmm = gmm_for_run(run_dir, components, data_dir, log=log) if sampler == "gmm" else saved_gmm(run_dir, run)
        self.samplers = ["prior", "gmm"] if self.gmm is not None else ["prior"]

    # -- what the run is ---------------------------------------------------------------------------
    @property
    def model(self):
        return self.view.model

    @property
    def surface(self):
        return self.view.surface

    @property
    def latent_dim(self) -> int:
        return int(self.surface.latent_dim)

    @property
    def is_image(self) -> bool:
        return len(self.model.data_shape) == 3

    @cached_property
    def _examples(self) -> tuple[torch.Tensor, torch.Tensor, np.ndarray | None]:
        """(x shown, code on the map, labels) of the map's points."""
        with torch.no_grad():
            if self.view.data is None:
                gen = torch.Generator(device=self.model.device).manual_seed(self.view.seed)
                codes = self.model.prior.sample(self.n, self.model, gen)[:, -self.latent_dim:]
                return self._decode(codes), codes, None
            x = self.view.test_x(self.n)
            codes = self.view.surface_codes[: self.n]
            labels = self.view.labels[: self.n] if self.view.labels is not None else None
            return x, codes, labels

    @cached_property
    def _plane(self) -> tuple[torch.Tensor, torch.Tensor, str]:
        """The map's coordinates, on the CPU whatever the model's device: the code itself for a 1- or 2-d
        latent, else its top two principal directions; a 1-d latent lies along the map's width."""
        if self.latent_dim <= 2:
            axes = torch.eye(2, self.latent_dim, dtype=torch.float64)
            title = "latent dimensions 1 and 2" if self.latent_dim == 2 else "latent dimension 1, across: a 1-d latent has no second"
            return torch.zeros(self.latent_dim, dtype=torch.float64), axes, title
        return (*principal_plane(self._examples[1].cpu()), "principal components 1 and 2 of the test codes")

    @cached_property
    def kl_order(self) -> tuple[list[int], list[float] | None]:
        """Latent dimensions by decreasing test KL (by the spread of the codes where no KL exists)."""
        kl = self.view.surface_kl if self.view.data is not None and self.model.variational else None
        score = kl if kl is not None else self._examples[1].double().std(0, correction=0).tolist()
        order = sorted(range(self.latent_dim), key=lambda i: -score[i])
        return order, (None if kl is None else [float(kl[i]) for i in order])

    def info(self) -> dict[str, Any]:
        cfg = self.view.run.config
        order, kl = self.kl_order
        class_names = self.view.data.class_names if self.view.data is not None else None
        return {
            "name": self.path.name, "preset": cfg.preset, "model": cfg.model.kind, "latent_dim": self.latent_dim,
            "layers": list(getattr(self.model, "dims", [self.model.latent_dim])),
            "data_shape": list(self.model.data_shape), "kind": "image" if self.is_image else "vector",
            "dataset": cfg.data.dataset, "map_axes": self._plane[2], "examples": self.n,
            "dims_by_kl": order[:SLIDER_DIMS], "kl": None if kl is None else kl[:SLIDER_DIMS],
            "class_names": list(class_names) if class_names else None, "note": self.note,
            "epochs": self.view.run.epoch, "variational": bool(self.model.variational),
            "classes": int(self.model.classes), "default_label": self.view.surface_class if self.model.classes else None,
            "samplers": self.samplers,
            "gmm_components": None if self.gmm is None else len(self.gmm.weights),
        }

    # -- the views ---------------------------------------------------------------------------------
    def map_points(self) -> dict[str, Any]:
        """The map: one 2-d point per example, with its label."""
        _, codes, labels = self._examples
        center, axes, title = self._plane
        xy = ((codes.double().cpu() - center) @ axes.T).float()
        lo, hi = xy.min(0).values, xy.max(0).values
        pad = (hi - lo).clamp_min(1e-3) * 0.05
        return {"xy": xy.tolist(), "labels": None if labels is None else [int(v) for v in labels],
                "bounds": [float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]), float(hi[1] + pad[1])],
                "axes": title}

    def decode_map(self, u: Any, v: Any, label: Any = None) -> dict[str, Any]:
        """Decode the map point (u, v): the code the map's plane puts there (as class ``label``, for a
        conditional model)."""
        center, axes, _ = self._plane
        uv = torch.tensor([_float(u, "u"), _float(v, "v")], dtype=torch.float64)
        z = (center + uv @ axes).float()[None]
        return {"code": z[0].tolist(), **self._payloads(self._decode(z, self._labels(label, 1)))[0]}

    def decode(self, code: Any, label: Any = None) -> dict[str, Any]:
        """Decode one latent code (a list of ``latent_dim`` numbers), as class ``label`` if conditional."""
        z = torch.tensor([_code(code, "code", self.latent_dim)])
        return self._payloads(self._decode(z, self._labels(label, 1)))[0]

    def example(self, index: Any) -> dict[str, Any]:
        """A map point: its input, its code and the decoded code."""
        i = _int(index, "index", 0, self.n - 1)
        x, codes, labels = self._examples
        out = {"index": i, "code": codes[i].tolist(), "label": None if labels is None else int(labels[i])}
        out["input"] = self._payloads(x[i: i + 1])[0]
        y = None if labels is None or not self.model.classes else torch.tensor([int(labels[i])])
        out["decoded"] = self._payloads(self._decode(codes[i: i + 1], y))[0]
        return out

    def interpolate(self, a: Any, b: Any, steps: Any = 8, mode: Any = "linear") -> dict[str, Any]:
        """Decoded points on the path between the codes of examples a and b (linear or spherical)."""
        i, j = _int(a, "a", 0, self.n - 1), _int(b, "b", 0, self.n - 1)
        k = _int(steps, "steps", 2, MAX_BATCH)
        if mode not in ("linear", "slerp"):
            raise RequestError(f"mode: expected 'linear' or 'slerp', got {_given(mode)}")
        _, codes, labels = self._examples
        t = torch.linspace(0, 1, k, device=codes.device)
        za, zb = codes[i], codes[j]
        z = (1 - t)[:, None] * za + t[:, None] * zb if mode == "linear" else slerp(za, zb, t)
        y = None  # a conditional model: the two examples' classes blended along the path
        if self.model.classes and labels is not None:
            y = blend_labels(self.model.classes, int(labels[i]), int(labels[j]), t)
        return {"mode": mode, "steps": self._payloads(self._decode(z, y))}

    def samples(self, n: Any = 16, seed: Any = 0, label: Any = None, sampler: Any = "prior") -> dict[str, Any]:
        """n draws from the model's full prior (top-down for a hierarchy), or from the Gaussian mixture
        fitted to the training codes (``sampler="gmm"``, where the run has one), decoded to their
        means; a conditional model draws class ``label`` (default: the classes in turn)."""
        k, s = _int(n, "n", 1, MAX_BATCH), _int(seed, "seed", 0, 2**31 - 1)
        if sampler not in self.samplers:
            fit = " (this run has no fitted mixture: start `vaekit serve --sampler gmm`)" if sampler == "gmm" else ""
            raise RequestError(f"sampler: {_given(sampler)} is not one of {', '.join(self.samplers)}{fit}")
        y = None if label is None else self._labels(label, k).to(self.model.device)
        gen = torch.Generator(device=self.model.device).manual_seed(s)
        with self._lock, torch.no_grad():
            if sampler == "prior":
                x = self.model.sample(k, generator=gen, y=y)
            else:
                y = self.model.default_labels(k) if y is None else y
                x = self.model.mean(self.model.decode(sample_codes(self.model, k, sampler, gen, self.gmm, y), y))
        return {"seed": s, "sampler": sampler, "samples": self._payloads(x)}

    def curves(self) -> dict[str, Any]:
        """history.jsonl (the training curves) and metrics.json when the run has been evaluated at the
        epoch it has now (an evaluation of older weights is left out). A damaged history leaves the
        curves empty and says why (``problem``); the other views work on."""
        keep = ("epoch", "train_loss", "test_loss", "train_recon", "test_recon", "train_kl", "test_kl", "beta", "lr")
        try:
            records = read_history(self.path)
        except VaekitError as e:
            return {"history": [], "metrics": None, "problem": str(e)}
        metrics, current = evaluation(self.path, records)
        return {"history": [{k: r.get(k) for k in keep} for r in records],
                "metrics": metrics if current and records else None}

    # -- helpers -----------------------------------------------------------------------------------
    def _labels(self, label: Any, n: int) -> torch.Tensor | None:
        """n copies of a requested class (None: a conditional model's default class; refused for others)."""
        if not self.model.classes:
            if label is not None:
                raise RequestError("label: this run is not conditional (it was trained without --conditional)")
            return None
        c = self.view.surface_class if label is None else _int(label, "label", 0, self.model.classes - 1)
        return torch.full((n,), c, dtype=torch.long)

    def _decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Decode codes of the pictures' latent space; ``y``: a conditional model's labels (default:
        the surface's class)."""
        with self._lock, torch.no_grad():
            z = z.to(self.model.device, torch.float32)
            if y is not None:
                return self.model.mean(self.model.decode(z, y.to(self.model.device)))
            return self.surface.mean(self.surface.decode(z))

    def _payloads(self, x: torch.Tensor) -> list[dict[str, Any]]:
        """Each row as what the page shows: a PNG data URL for images, the values for vectors."""
        x = x.detach().float().cpu()
        if not self.is_image:
            return [{"values": [round(float(v), 5) for v in row.reshape(-1)]} for row in x]
        return [{"png": png_data_url(img)} for img in x]


def png_data_url(image: torch.Tensor) -> str:
    """A (C, H, W) image in [0, 1] as a ``data:image/png;base64,...`` URL."""
    from PIL import Image

    arr = (image.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
