"""The run folder's README.md: a model card (what data, which model, its measured metrics and what
they mean, how to load it, intended use and limits), laid out so the folder can go to a model hub
as it is (YAML front matter first). Written after training and refreshed by ``vaekit evaluate``.
"""

from __future__ import annotations

import json
import shlex
import warnings
from pathlib import Path
from typing import Any

from . import __version__
from .checkpoint import METRICS, load_config, read_history
from .errors import RunFolderError, figure
from .files import atomic_write, read_json_if_there, user_path
from .likelihoods import NOT_NORMALISED
from .models.spatial import latent_channels, map_size

CARD = "README.md"
HUB_DATASETS = {"mnist": "mnist", "fashion-mnist": "fashion_mnist", "cifar10": "cifar10"}
DEFINITIONS = {
    "loss": "negative ELBO with beta = 1: reconstruction term + KL, nats per test example (lower is better)",
    "recon": "reconstruction term -E_q[log p(x|z)] (nats per example; summed squared error for the mse likelihood)",
    "kl": "KL(q(z|x) || p(z)), nats per example (Monte Carlo where the prior has no closed form)",
    "loss_se": "standard error of loss over the test examples (their std / sqrt(n)): the test set's own uncertainty",
    "nll_iwae": "-log p(x) estimated by importance sampling with K samples (the IWAE bound), nats per example",
    "nll_iwae_se": "standard error of nll_iwae over the test examples (their std / sqrt(n))",
    "bits_per_dim": "nll_iwae / (number of data dimensions x ln 2)",
    "elbo_bits_per_dim": "loss / (number of data dimensions x ln 2): a bound, above bits_per_dim",
    "active_units": "latent dimensions whose posterior mean varies across test examples (Cov > 0.01)",
    "mse_mean": "mean over test examples of each one's mean squared error per value, reconstructed from the posterior mean",
    "fid": "Frechet distance between feature Gaussians of generated and test examples (lower is better)",
    "precision": "share of generated examples inside the test examples' 3-NN balls in feature space",
    "recall": "share of test examples inside the generated examples' 3-NN balls in feature space",
}


ARCH_NAMES = {"mlp": "an MLP", "conv": "a convolutional", "resnet": "a residual convolutional"}
LIKELIHOOD_NAMES = {"bernoulli": "a Bernoulli", "gaussian": "a Gaussian", "mse": "a squared-error",
                    "dlogistic": "a discretised logistic mixture"}


def evaluation(run_dir: Path, history: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, bool]:
    """metrics.json (``vaekit evaluate``), and whether it measured the weights the run has now (the
    epoch ``history`` ends at); an evaluation of older weights is not the run's."""
    metrics = read_json_if_there(run_dir / METRICS, "metrics record")
    if not isinstance(metrics, dict):
        return None, False
    return metrics, metrics.get("epoch") == (history[-1]["epoch"] if history else None)


def _metric_rows(history: list[dict[str, Any]], metrics: dict[str, Any] | None,
                 current: bool) -> tuple[list[tuple[str, int | float, str]], str]:
    """(name, value, definition) rows and where they come from: metrics.json (evaluate, ``metrics``) when
    it measured the weights the run has now, else the last epoch (saying that the evaluation is older)."""
    if metrics is not None and current:
        k = f", K = {metrics['iwae_k']}" if "iwae_k" in metrics else ""
        rows = [(n, metrics[n], d) for n, d in DEFINITIONS.items() if isinstance(metrics.get(n), (int, float))]
        return rows, f"`vaekit evaluate` on the test split (epoch {metrics.get('epoch')}{k})"
    if not history:
        return [], "no epoch has finished yet"
    last = history[-1]
    rows = [(n, float(last[f"test_{n}"]), DEFINITIONS[n]) for n in ("loss", "recon", "kl")
            if isinstance(last.get(f"test_{n}"), (int, float))]
    older = (f"; `{METRICS}` is from epoch {metrics.get('epoch')}, before the run trained on: run `vaekit evaluate` "
             "to measure it again" if metrics is not None else "; run `vaekit evaluate` for the IWAE estimate")
    return rows, f"the training loop on the test split after epoch {last['epoch']}{older}"


def model_card(run_dir: str | Path) -> str:
    """The card's Markdown text for the run in ``run_dir``."""
    run_dir = user_path(run_dir, "run_dir")
    cfg = load_config(run_dir)
    data = read_json_if_there(run_dir / "data.json", "data record") or {}
    try:
        history = read_history(run_dir)
        trained = str(history[-1]["epoch"]) if history else "0"
    except RunFolderError as e:  # a damaged history costs the card its training record, not the card
        warnings.warn(f"{e}; the model card leaves out the training record", stacklevel=2)
        history, trained = [], "?"
    m, o, t = cfg.model, cfg.objective, cfg.train
    measured, current = evaluation(run_dir, history)
    rows, source = _metric_rows(history, measured, current)
    name = run_dir.resolve().name
    shell_name = shlex.quote(name)
    dataset = cfg.data.dataset.split(":")[0]
    layers = "+".join(map(str, m.latent_dims)) if m.latent_dims else str(m.latent_dim)
    if m.spatial_latent and len(data.get("shape", [])) == 3:
        h, w = map_size(m.hidden, *data["shape"][1:])
        layers += f" ({latent_channels(m, h, w)} maps of {h}x{w}: a spatial latent)"
    kind = {"vae": "variational autoencoder", "ae": "autoencoder (no prior: not a generative model)",
            "hvae": "hierarchical variational autoencoder"}.get(m.kind, m.kind)
    front = ["---", "library_name: vaekit", "tags:", "- vaekit", f"- {m.kind}", "- variational-autoencoder", "- pytorch",
             *(["- conditional"] if m.conditional else [])]
    if dataset in HUB_DATASETS:
        front += ["datasets:", f"- {HUB_DATASETS[dataset]}"]
    if rows:
        front += ["metrics:"] + [f"- {n}" for n, _, _ in rows]
    front.append("---")
    shape = "x".join(map(str, data.get("shape", []))) or "?"
    lines = front + [
        "", f"# {name}: a {kind} trained with vaekit", "",
        f"A {m.kind.upper()} with {ARCH_NAMES.get(m.arch, m.arch)} encoder and decoder (widths {','.join(map(str, m.hidden))}), "
        f"latent size {layers}, {LIKELIHOOD_NAMES.get(m.likelihood, m.likelihood)} likelihood p(x|z)"
        + ((" (of each value standardised with the training set's mean and std; "
            + ("squared error of the standardised values)" if m.likelihood == "mse" else "densities in the data's units)"))
           if m.standardize else "") + f" and a {m.prior} prior p(z), "
        + (f"conditional on the class label y ({m.classes} classes: p(x|z,y), q(z|x,y)), " if m.conditional else "")
        + "trained on "
        f"`{cfg.data.dataset}` for {trained} of {t.epochs} epochs"
        + (f" (preset `{cfg.preset}`)" if cfg.preset else "") + f" with vaekit {__version__}.", "",
        "## Data", "",
        f"- data set: `{cfg.data.dataset}`, examples of shape {shape}; {data.get('n_train', '?')} for training, "
        f"{data.get('n_test', '?')} for testing" + (f" (binarised: {cfg.data.binarize})" if cfg.data.binarize != "none" else ""),
        f"- data fingerprint: `{data.get('fingerprint', '?')}` (vaekit checks it when the run is resumed)", "",
        "## Metrics", "",
    ]
    if rows:
        lines += [f"Measured by {source}.", "", "| metric | value | definition |", "|---|---:|---|"]
        lines += [f"| {n} | {figure(v)} | {d} |" for n, v, d in rows]
        known = (measured or {}).get("normalised")
        if known is False or (known is None and m.likelihood == "bernoulli" and cfg.data.binarize == "none"):
            lines += ["", f"Note: {NOT_NORMALISED}" + ("" if known is False else " (if the data are not binary)") + "."]
    else:
        lines.append("No metrics yet.")
    lines += [
        "", "## Training", "",
        f"- objective: {o.kind}" + (f" with K = {o.iwae_samples}" if o.kind == "iwae" else "")
        + (f" ({o.iwae_gradient} gradient)" if o.iwae_gradient != "standard" else "")
        + f", beta {o.beta:g} ({o.schedule} schedule)" + (f", free bits {o.free_bits:g}" if o.free_bits else ""),
        f"- Adam, lr {t.lr:g} ({t.lr_schedule}), batch {t.batch_size}, seed {cfg.seed}, precision {t.precision}",
        "- everything else: `config.json` (the exact configuration), `history.jsonl` (one line per epoch)", "",
        "## How to use", "",
        "```python", *(["import torch"] if cfg.model.conditional else []), "import vaekit", "",
        *_commented([(f"run = vaekit.load_run({json.dumps(name)})", "this folder; no training data needed"),
                     ("x = run.model.sample(16)", "draws from the prior, decoded to their means"),
                     *([("y = torch.full((16,), 3)", "a conditional model: the classes to draw"),
                        ("x = run.model.sample(16, y=y)", "")] if cfg.model.conditional else [])]),
        "```", "",
        "```bash",
        *_commented([(f"vaekit sample {shell_name} -n 64 -o samples.png", ""),
                     *([(f"vaekit sample {shell_name} -n 16 --label 3 -o class3.png", "conditional: one class")]
                       if cfg.model.conditional else []),
                     (f"vaekit evaluate {shell_name} --iwae-k 5000", "needs the test data"),
                     (f"vaekit serve {shell_name}", "explore the latent space in the browser"),
                     (f"vaekit export {shell_name} --format onnx", "encoder and decoder as ONNX graphs")]),
        "```", "",
        "Files: `model.safetensors` (weights, no pickle), `config.json`, `history.jsonl`, `data.json`, "
        "`samples.png`, `reconstructions.png`; `training_state.safetensors` only to resume training.", "",
        "## Intended use and limits", "",
        "- For research, teaching and exploring what a VAE learns on this data set; not for decisions about people.",
        "- The likelihood figures hold for this preprocessing only (scaling, binarisation, image size); compare "
        "them only with figures computed the same way.",
        "- Samples are decoded means, so they look smoother than real data.",
        "- Scores such as the negative ELBO can rank unfamiliar data as *more* likely than the training data "
        "(Nalisnick et al., 2019): check before using them to detect anomalies.",
        "- It has seen only the data above; it knows nothing of other domains.", "",
    ]
    return "\n".join(lines)


def _commented(lines: list[tuple[str, str]]) -> list[str]:
    """Lines of code with their comments (if any) lined up after the longest."""
    width = max(len(code) for code, _ in lines)
    return [f"{code:<{width}}   # {note}" if note else code for code, note in lines]


def write_model_card(run_dir: str | Path) -> Path:
    """Write (or refresh) README.md in the run folder, atomically."""
    return atomic_write(user_path(run_dir, "run_dir") / CARD, model_card(run_dir))
