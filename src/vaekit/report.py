"""One self-contained HTML page per run: config, metrics, every plot (embedded), and the command
that reproduces the run. Opens offline: no scripts, no external files."""

from __future__ import annotations

import base64
import html
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .errors import figure, line_sink, whole_number
from .files import atomic_write, read_regular, user_path
from .evaluate import DEFAULT_IWAE_K, evaluate_model
from .figures import PLOTS, open_run, plot_run
from .likelihoods import NOT_NORMALISED

REPORT = "report.html"

METRIC_LABELS = {
    "loss": "negative ELBO (β = 1), nats/example",
    "recon": "reconstruction, nats/example",
    "kl": "KL(q(z|x) ‖ p(z)), nats/example",
    "loss_se": "standard error of the negative ELBO (over the test examples)",
    "nll_iwae": "IWAE estimate of −log p(x), nats/example",
    "nll_iwae_se": "standard error of the IWAE estimate (over the test examples)",
    "iwae_k": "importance samples k",
    "bits_per_dim": "bits per dimension (IWAE)",
    "elbo_bits_per_dim": "bits per dimension (ELBO)",
    "active_units": "active latent units",
    "latent_dims": "latent layers (bottom first)",
    "kl_per_layer": "KL per latent layer (bottom first), nats/example",
    "active_units_per_layer": "active units per latent layer",
    "mse_mean": "per-example MSE: mean",
    "mse_median": "per-example MSE: median",
    "mse_std": "per-example MSE: std",
    "mse_min": "per-example MSE: min",
    "mse_max": "per-example MSE: max",
    "n": "test examples",
    "epoch": "epochs trained",
}

CAPTIONS = {
    "curves": "Training curves. Train loss is what was optimised (recon + β·KL); test loss uses β = 1.",
    "kl-per-dim": "KL per latent dimension on the test set; grey bars (below 0.01 nats) are collapsed.",
    "latent-scatter": "Posterior means of the test set, coloured by label.",
    "latent-grid": "Decoded 15 × 15 grid over [−3, 3]² of the latent plane.",
    "samples": "Samples: z drawn from the prior (named above the grid) and decoded.",
    "real-vs-generated": "Real test examples and generated ones: images one above the other; vectors on the real "
                         "data's principal plane and feature by feature (mean ± standard deviation).",
    "reconstructions": "Test examples and their reconstructions: images with the absolute error; vectors feature "
                       "by feature, and every test value against its reconstruction (R²: the variance kept).",
    "error-histogram": "Distribution of per-example reconstruction error.",
    "interpolation": "Decoding the path between two test examples' codes: linear and spherical.",
    "traversals": "Sweeping one latent coordinate at a time, highest-KL dimensions first.",
}

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse} td,th{padding:.25em .8em;border-bottom:1px solid #eee;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums} pre{background:#f6f8fa;padding:1em;overflow:auto}
code{background:#f6f8fa;padding:.1em .3em} figure{margin:1.5em 0} img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.92em}
"""


def _fmt(v: Any) -> str:
    if v is None:  # a figure one example cannot give (a spread), or a non-finite one
        return "unknown"
    if isinstance(v, float):
        return figure(v)
    if isinstance(v, list):
        return " ".join(str(x) if isinstance(x, int) else "–" if x is None else f"{x:.2f}" for x in v)
    return html.escape(str(v))


def reproduce_command(run_dir: Path) -> str:
    return f"vaekit train --config {run_dir}/config.json --out {run_dir}-again"


def report_run(
    run_dir: str | Path,
    iwae_k: int = DEFAULT_IWAE_K,
    data_dir: str | None = None,
    log: Callable[[str], None] = lambda s: None,
    progress: bool = True,
    device: str = "cpu",
    out: str | Path | None = None,
) -> Path:
    """`vaekit report`: evaluate, plot, and write RUN_DIR/report.html (its plots in RUN_DIR/plots);
    returns its path. ``out``: the page's file instead, the run folder left untouched (so that a run
    on read-only storage, or someone else's, gets a report too)."""
    from .files import output_file
    from .runlock import writing_into

    run_dir, log = user_path(run_dir, "run_dir"), line_sink(log)
    iwae_k = whole_number(iwae_k, "--iwae-k", lo=0)
    if out is not None:
        page = output_file(out, (".html",), "-o")
        with writing_into(run_dir, [page], "report", data_dir=data_dir), tempfile.TemporaryDirectory(prefix="vaekit-report-") as tmp:
            return _report(run_dir, page, Path(tmp), iwae_k, data_dir, log, progress, device)
    with writing_into(run_dir, [run_dir], "report", "-o FILE.html"):
        return _report(run_dir, run_dir / REPORT, None, iwae_k, data_dir, log, progress, device)


def _report(run_dir: Path, out: Path, plots_dir: Path | None, iwae_k: int, data_dir: str | None,
            log: Callable[[str], None], progress: bool, device: str) -> Path:
    view = open_run(run_dir, data_dir=data_dir, device=device)
    log(f"evaluating {run_dir} (IWAE k = {iwae_k}) ...")
    metrics = evaluate_model(view.model, view.data, iwae_k, seed=view.seed, progress=progress)
    metrics["epoch"] = view.run.epoch
    log("plotting ...")
    figures = plot_run(run_dir, plots_dir, view=view, log=log if plots_dir is None else lambda s: None)
    cfg = view.run.config
    title = f"vaekit run: {cfg.preset or 'custom'} ({cfg.model.kind.upper()}) on {cfg.data.dataset}"
    nats = metrics.get("units", "nats") == "nats"
    unit = lambda label: label if nats else label.replace("nats/example", "squared error per example")  # noqa: E731
    rows = "".join(
        f"<tr><th>{html.escape(unit(label) if key != 'kl' else label)}</th><td class=num>{_fmt(metrics[key])}</td></tr>"
        for key, label in METRIC_LABELS.items() if key in metrics
    )
    if "kl_per_dim" in metrics:
        rows += f"<tr><th>KL per latent dimension</th><td>{_fmt(metrics['kl_per_dim'])}</td></tr>"
    note = f"<p><b>Note:</b> {html.escape(NOT_NORMALISED)}.</p>" if metrics.get("normalised") is False else ""
    figs = ""
    for name in PLOTS:
        if name in figures:
            data = base64.b64encode(read_regular(figures[name], "plot")).decode()
            figs += (f'<figure id="{name}"><img alt="{name}" src="data:image/png;base64,{data}">'
                     f"<figcaption><b>{name}</b>: {html.escape(CAPTIONS.get(name, ''))}</figcaption></figure>\n")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>Run folder <code>{html.escape(str(run_dir))}</code>. Made on {time.strftime("%Y-%m-%d %H:%M")} from the
weights of epoch {view.run.epoch}: if the run was trained further since, run <code>vaekit report</code> again.
Metrics on the test split ({metrics['n']} examples), per example, {"in nats" if nats else
"as summed squared error (the mse likelihood is not a density, so no bits per dimension)"}.</p>
<h2>Metrics</h2>
<table>{rows}</table>{note}
<h2>Reproduce</h2>
<pre>{html.escape(reproduce_command(run_dir))}</pre>
<p>The config below is all a run needs: the same seed gives the same numbers.</p>
<h2>Plots</h2>
{figs}
<h2>Config</h2>
<pre>{html.escape(json.dumps(cfg.to_dict(), indent=2))}</pre>
</body></html>
"""
    return atomic_write(out, page)
