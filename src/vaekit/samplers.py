"""Where generated codes come from: the model's prior, or a Gaussian mixture fitted to the training
codes after training ("ex-post density estimation", Ghosh et al. 2020). The mixture follows the
codes the decoder was trained on, so its samples are more typical than the prior's where the
aggregate posterior does not fill N(0, I), and it is the only way an AE generates at all.

The fitted mixture lives in the run folder as ``sampler_gmm.safetensors``: its weights, means and
Cholesky factors as tensors, its settings as JSON metadata (no pickle), checked when read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from .errors import RunFolderError, VaekitError, show, whole_number
from .files import OutputError, user_path

GMM_FILE = "sampler_gmm.safetensors"
DEFAULT_COMPONENTS = 10


@dataclass
class GaussianMixture:
    """A full-covariance Gaussian mixture over latent codes (float64)."""

    weights: Tensor  # (K,)
    means: Tensor  # (K, d)
    chol: Tensor  # (K, d, d), lower-triangular factors of the covariances
    info: dict[str, Any] = field(default_factory=dict)
    by_class: dict[int, GaussianMixture] = field(default_factory=dict)  # a conditional run's mixture per class

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def sample(self, n: int, generator: torch.Generator | None = None, y: Tensor | None = None) -> Tensor:
        """n codes, float32, on the generator's device (the CPU by default); with class labels ``y`` (n,)
        each row comes from its class's own mixture (the pooled one for a class that has none)."""
        if y is None or not self.by_class:
            return self._draw(n, generator)
        device = generator.device if generator is not None else torch.device("cpu")
        y = y.to(device)
        z = torch.empty(n, self.dim, device=device)
        for c in torch.unique(y).tolist():  # classes in order: the same draws for the same seed
            rows = y == c
            z[rows] = self.by_class.get(int(c), self)._draw(int(rows.sum()), generator)
        return z

    def _draw(self, n: int, generator: torch.Generator | None) -> Tensor:
        device = generator.device if generator is not None else torch.device("cpu")
        k = torch.multinomial(self.weights.to(device), n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, 1, generator=generator, device=device, dtype=torch.float64)
        z = self.means.to(device)[k] + (self.chol.to(device)[k] @ eps).squeeze(-1)
        return z.float()

    def log_prob(self, z: Tensor) -> Tensor:
        """log density of each row of z under the mixture."""
        z = z.double()
        diff = z[:, None, :] - self.means[None]  # (n, K, d)
        sol = torch.linalg.solve_triangular(self.chol[None].expand(len(z), -1, -1, -1), diff[..., None],
                                            upper=False).squeeze(-1)
        logdet = torch.log(torch.diagonal(self.chol, dim1=-2, dim2=-1)).sum(-1)  # (K,)
        per = -0.5 * (sol ** 2).sum(-1) - logdet - 0.5 * self.dim * math.log(2 * math.pi)
        return torch.logsumexp(per + torch.log(self.weights), dim=-1)

    def write(self, path: Path) -> None:
        from .checkpoint import _save_tensors

        tensors = {"weights": self.weights, "means": self.means, "chol": self.chol}
        for c, mix in self.by_class.items():
            tensors.update({f"class{c}.weights": mix.weights, f"class{c}.means": mix.means, f"class{c}.chol": mix.chol})
        info = {**self.info, "classes": {str(c): mix.info for c, mix in self.by_class.items()}} if self.by_class \
            else self.info
        _save_tensors(path, tensors, {"kind": "vaekit-gmm-sampler", "info": json.dumps(info)})

    @classmethod
    def load(cls, path: Path, dim: int) -> GaussianMixture:
        """Read and check a written mixture for codes of ``dim`` dimensions."""
        from .checkpoint import _read_tensors, untrusted

        tensors, meta = _read_tensors(path)
        with untrusted(path, "GMM sampler file"):
            classes = sorted({k.split(".", 1)[0] for k in tensors if k.startswith("class")})
            expected = {f"{prefix}{k}" for prefix in ["", *(f"{c}." for c in classes)] for k in ("weights", "means", "chol")}
            if meta.get("kind") != "vaekit-gmm-sampler" or set(tensors) != expected:
                raise RunFolderError(f"{path}: not a vaekit GMM sampler file")
            info = json.loads(meta.get("info", "{}"))
            info = info if isinstance(info, dict) else {}
            pooled = cls._checked(path, dim, *(tensors[k] for k in ("weights", "means", "chol")), info)
            for c in classes:
                number = c[len("class"):]
                if not number.isdigit() or len(number) > 6:
                    raise RunFolderError(f"{path}: not a vaekit GMM sampler file")
                per = info.get("classes", {}).get(number, {}) if isinstance(info.get("classes"), dict) else {}
                pooled.by_class[int(number)] = cls._checked(
                    path, dim, *(tensors[f"{c}.{k}"] for k in ("weights", "means", "chol")), per if isinstance(per, dict) else {})
        return pooled

    @classmethod
    def _checked(cls, path: Path, dim: int, w: Tensor, mu: Tensor, chol: Tensor, info: dict[str, Any]) -> GaussianMixture:
        w, mu, chol = w.double(), mu.double(), chol.double()
        k = len(w)
        ok = (w.ndim == 1 and mu.shape == (k, dim) and chol.shape == (k, dim, dim) and k >= 1
              and all(bool(t.isfinite().all()) for t in (w, mu, chol)) and bool((w > 0).all())
              and abs(float(w.sum()) - 1) < 1e-6 and bool((torch.diagonal(chol, dim1=-2, dim2=-1) > 0).all()))
        if not ok:
            raise RunFolderError(f"{path}: its mixture does not fit this model's {dim}-d codes or is damaged; "
                                 "delete it and sample again to refit")
        return cls(w, mu, torch.tril(chol), info)


def check_sampler(sampler: str, components: int = DEFAULT_COMPONENTS, refit: bool = False,
                  data_dir: str | None = None) -> None:
    """Refuse an unknown sampler, a mixture of no components, and the mixture's settings given
    without the mixture (they would do nothing: ``data_dir`` only says where the mixture's codes come
    from when sampling), before anything is loaded or fitted."""
    if sampler not in SAMPLER_FUNCTIONS:
        raise VaekitError(f"--sampler {show(str(sampler))}: unknown; choose from {', '.join(SAMPLER_FUNCTIONS)}")
    components = whole_number(components, "--components")
    for flag, given in (("--components", components != DEFAULT_COMPONENTS), ("--refit", refit),
                        ("--data-dir", data_dir is not None)):
        if given and sampler != "gmm":
            raise VaekitError(f"{flag} applies only with --sampler gmm (Python: sampler='gmm'); add it, or leave "
                              f"{flag} out")


def fit_gmm(codes: Tensor, components: int = DEFAULT_COMPONENTS, seed: int = 0) -> GaussianMixture:
    """Fit a full-covariance mixture to codes (rows) by EM (scikit-learn), reproducibly."""
    from sklearn.mixture import GaussianMixture as SkGMM

    components = whole_number(components, "--components")
    x = codes.detach().double().cpu().numpy()
    if len(x) < 2 * components:
        raise VaekitError(f"--components {components}: a mixture of {components} needs at least {2 * components} "
                          f"training codes, and there {'is' if len(x) == 1 else 'are'} {len(x)}")
    gm = SkGMM(n_components=components, covariance_type="full", reg_covar=1e-6, max_iter=300, random_state=seed)
    gm.fit(x)
    cov = torch.from_numpy(gm.covariances_)
    chol = torch.linalg.cholesky(cov)
    return GaussianMixture(torch.from_numpy(gm.weights_) / float(gm.weights_.sum()), torch.from_numpy(gm.means_),
                           chol, {"components": components, "codes": len(x), "seed": seed,
                                  "train_mean_log_likelihood": float(gm.score(x)), "converged": bool(gm.converged_)})


def fit_gmm_by_class(codes: Tensor, labels: Tensor, components: int = DEFAULT_COMPONENTS,
                     seed: int = 0, progress: bool = True) -> GaussianMixture:
    """The pooled mixture, with one mixture per class fitted to that class's codes alone (up to
    ``components``, at most one per two codes; a class with fewer than 4 codes keeps the pooled one).
    ``progress``: a bar on a terminal, one step per mixture (MNIST's eleven take about a minute)."""
    from tqdm import tqdm

    classes = torch.unique(labels).tolist()
    with tqdm(total=1 + len(classes), desc="fitting Gaussian mixtures", unit="mixture", leave=False,
              disable=None if progress else True) as bar:
        pooled = fit_gmm(codes, components, seed)
        bar.update()
        for c in classes:
            mine = codes[labels == c]
            if len(mine) >= 4:
                pooled.by_class[int(c)] = fit_gmm(mine, min(components, len(mine) // 2), seed)
            bar.update()
    return pooled


def gmm_for_run(run_dir: str | Path, components: int = DEFAULT_COMPONENTS, data_dir: str | None = None,
                refit: bool = False, log: Any = print) -> GaussianMixture:
    """The run's fitted mixture: read from the run folder, or fitted on the training codes (posterior
    means) and saved there when absent, when ``refit``, when it has another number of components, or
    when it was fitted at another epoch (the run trained on since)."""
    from .checkpoint import load_run
    from .evaluate import latent_means, run_data
    from .runlock import run_lock

    run_dir = user_path(run_dir, "run_dir")
    run = load_run(run_dir)
    path = run_dir / GMM_FILE
    per_class = bool(run.model.classes)
    if path.exists() and not refit:
        gmm = GaussianMixture.load(path, run.model.latent_dim)
        current = _current(gmm, run)
        if len(gmm.weights) == components and bool(gmm.by_class) == per_class and current:
            return gmm
        if not current:
            log(f"{path}: fitted to the codes of epoch {gmm.info.get('epoch', '?')}, the run is at epoch {run.epoch}; "
                "fitting it again")
    data = run_data(run, data_dir, progress=False)
    run.model.train(False)
    with torch.no_grad():
        codes = latent_means(run.model, data, "train")
    if per_class:
        gmm = fit_gmm_by_class(codes, data.train_y.to(codes.device), components, run.config.seed)
    else:
        gmm = fit_gmm(codes, components, run.config.seed)
    gmm.info["epoch"] = run.epoch  # the weights the codes came from: training on makes the mixture stale
    try:
        with run_lock(run_dir, "sample"):
            gmm.write(path)  # atomically, through checkpoint._save_tensors
        kept = f"saved as {path}"
    except (RunFolderError, OutputError) as e:  # a read-only, full or busy folder: sample all the same
        kept = f"not kept ({e}); it is fitted again next time"
    what = f" and one per class ({len(gmm.by_class)} classes)" if per_class else ""
    log(f"fitted a {components}-component Gaussian mixture{what} to {len(codes):,} training codes; {kept}")
    return gmm


def _current(gmm: GaussianMixture, run: Any) -> bool:
    """Whether the mixture was fitted to the codes of the run's present weights (same epoch)."""
    return gmm.info.get("epoch") == run.epoch


def saved_gmm(run_dir: str | Path, run: Any) -> GaussianMixture | None:
    """The mixture a run folder already holds (fitted by ``sample --sampler gmm``), if it fits the
    model as it is now; None when there is none, it is stale or it cannot be used (nothing is fitted here)."""
    path = Path(run_dir) / GMM_FILE
    if not path.is_file():
        return None
    try:
        gmm = GaussianMixture.load(path, run.model.latent_dim)
    except VaekitError:
        return None
    return gmm if bool(gmm.by_class) == bool(run.model.classes) and _current(gmm, run) else None


def _from_prior(model: Any, n: int, generator: torch.Generator | None, gmm: GaussianMixture | None,
                y: Tensor | None = None) -> Tensor:
    return model.prior.sample(n, model, generator)


def _from_mixture(model: Any, n: int, generator: torch.Generator | None, gmm: GaussianMixture | None,
                  y: Tensor | None = None) -> Tensor:
    if gmm is None:
        raise VaekitError("--sampler gmm: no fitted mixture given")
    cpu = None  # the mixture draws on the CPU, seeded from the caller's generator
    if generator is not None:
        cpu = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator,
                                                              device=generator.device).item()))
    return gmm.sample(n, cpu, None if y is None else y.cpu()).to(model.device)


SAMPLER_FUNCTIONS: dict[str, Callable[..., Tensor]] = {"prior": _from_prior, "gmm": _from_mixture}


def sample_codes(model: Any, n: int, sampler: str = "prior", generator: torch.Generator | None = None,
                 gmm: GaussianMixture | None = None, y: Tensor | None = None) -> Tensor:
    """n latent codes from the named sampler (``SAMPLER_FUNCTIONS``), on the model's device; ``y``: the
    classes the codes will be decoded as (a mixture fitted per class draws each from its own)."""
    check_sampler(sampler)
    return SAMPLER_FUNCTIONS[sampler](model, n, generator, gmm, y)
