"""``vaekit sweep --beta 0.5,1,2,4``: the beta-VAE exercise as one command. One run per value
in OUT/beta-<value>/, trained one after another, or ``jobs`` at a time in child processes that share
the cores out (a run already complete is kept, a stopped one is resumed, so an interrupted sweep
continues where it stopped; a folder holding a run of another config is refused unless
``overwrite``), then one table of what beta trades:
the negative ELBO (beta = 1), its parts, active units, FID / precision / recall of prior samples and
the linear-probe accuracy of the codes; and one figure of samples per value.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

import torch

from .budget import usable_cpus
from .checkpoint import is_run_folder, load_config, load_run, read_history
from .children import child_environment
from .config import MAX_BETA, RESUME_MAY_CHANGE, RunConfig, as_run_config, flat
from .data import check_outside
from .errors import ConfigError, TrainingInterrupted, VaekitError, counted, line_sink, one_line, show, whole_number
from .files import atomic_write, output_folder, read_regular, strict_json

COLUMNS = [("beta", "β", "{:g}"), ("loss", "−ELBO (β=1)", "{:.2f}"), ("recon", "recon", "{:.2f}"),
           ("kl", "KL", "{:.2f}"), ("active_units", "active units", "{}"), ("nll_iwae", "IWAE NLL", "{:.2f}"),
           ("fid", "FID", "{:.2f}"), ("precision", "precision", "{:.3f}"), ("recall", "recall", "{:.3f}"),
           ("linear_accuracy", "probe acc.", "{:.3f}")]


def parse_values(text: str | Sequence[float]) -> list[float]:
    """'0.5,1,2,4' (or a list of numbers) -> [0.5, 1.0, 2.0, 4.0]; each in 0..MAX_BETA, no repeats."""
    shown = text if isinstance(text, str) else ",".join(map(str, text))
    if isinstance(text, str) and "" in [v.strip() for v in text.split(",")]:
        raise ConfigError(f"--beta {show(shown)}: an empty value between commas; e.g. 0.5,1,2,4")
    try:
        values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except (TypeError, ValueError):
        raise ConfigError(f"--beta {show(shown)}: expected numbers separated by commas, e.g. 0.5,1,2,4") from None
    if not values or any(not 0 <= v <= MAX_BETA for v in values) or len(set(values)) != len(values):
        raise ConfigError(f"--beta {show(shown)}: give distinct values in 0..{MAX_BETA:g}, e.g. 0.5,1,2,4")
    return values


def config_differences(saved: RunConfig, wanted: RunConfig) -> list[str]:
    """What a run folder's config says against the sweep's (paths made absolute as training makes
    them; the class count a run filled in from its data counts as asked)."""
    from .data import resolve_paths

    a = flat(saved.to_dict())
    b = flat(dataclasses.replace(wanted, data=resolve_paths(wanted.data)).to_dict())
    if not b.get("model.classes"):
        b["model.classes"] = a.get("model.classes")
    return [f"{k} {show(a.get(k), 40)} here, {show(b.get(k), 40)} asked" for k in sorted(set(a) | set(b))
            if k not in RESUME_MAY_CHANGE and a.get(k) != b.get(k)]


def run_sweep(base: RunConfig | Mapping[str, Any] | str | Path, betas: str | Sequence[float], out: str | Path,
              iwae_k: int = 100, generation_n: int = 2000,
              data_dir: str | None = None, progress: bool = True, log: Callable[[str], None] = print,
              jobs: int = 1, overwrite: bool = False) -> list[dict[str, Any]]:
    """Train (or finish) one run per beta and return one row of metrics per run; writes sweep.json,
    sweep.md and (for images) samples-by-beta.png into ``out``. ``jobs`` > 1 trains that many runs at
    once, each in its own process with its share of the cores (faster for small models: README,
    Generation). A run folder already there is kept or resumed only if it holds this config (up to
    its epochs); ``overwrite`` trains every run afresh. ``base`` is a config as ``fit`` takes it;
    ``betas`` a list of values or text such as "0.5,1,2,4"."""
    from .downstream import probe
    from .evaluate import evaluate_run, run_data

    base, betas, out = as_run_config(base), parse_values(betas), output_folder(out, "--out")
    log = line_sink(log)
    iwae_k = whole_number(iwae_k, "--iwae-k", lo=0)
    generation_n = whole_number(generation_n, "--generation-n", lo=10)
    jobs = whole_number(jobs, "--jobs", hi=64)
    check_outside(base.data, out, "--out")
    runs = [(b, out / f"beta-{b:g}", base.with_overrides({"objective.beta": b})) for b in betas]
    for beta, path, cfg in runs:  # refuse a foreign folder or another run's before any training starts
        if path.exists() and any(path.iterdir()) and not is_run_folder(path):
            raise ConfigError(f"{path}: exists and is not a vaekit run; choose another --out")
        if not overwrite and is_run_folder(path):
            differ = config_differences(load_config(path), cfg)
            if differ:
                more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
                raise ConfigError(f"{path}: holds a run of another config ({'; '.join(differ[:3])}{more}); "
                                  "pass --overwrite to train it afresh, or choose another --out")
    pending = []
    for i, (beta, path, cfg) in enumerate(runs, 1):
        history = read_history(path) if not overwrite and is_run_folder(path) else []
        done = history[-1]["epoch"] if history else 0
        if done >= cfg.train.epochs:
            log(f"sweep {i}/{len(runs)}: {path} has trained {'its 1 epoch' if done == 1 else f'all {done} epochs'}; kept")
        else:
            pending.append((beta, path, cfg))
    if jobs > 1 and len(pending) > 1:
        _train_in_processes(pending, out, min(jobs, len(pending)), log, overwrite)
    else:
        _train_here(pending, progress, log, overwrite)
    rows = []
    for beta, path, cfg in runs:
        run = load_run(path)
        data = run_data(run, data_dir, progress=False)
        generation = {"generation": True, "generation_n": generation_n} if run.model.variational else {}
        m = evaluate_run(path, data=data, iwae_k=iwae_k, progress=False, **generation)
        row = {"beta": beta, "run": path.name, **{k: m.get(k) for k, _, _ in COLUMNS[1:]}}
        if data.test_y is not None:
            row["linear_accuracy"] = probe(run.model, data, seed=run.config.seed)["linear_accuracy"]
        row["feature_space"] = m.get("feature_space")
        rows.append(row)
    atomic_write(out / "sweep.json", strict_json(rows, indent=2) + "\n")
    atomic_write(out / "sweep.md", table(rows) + "\n")
    _samples_figure(out, [(b, p) for b, p, _ in runs])
    return rows


def _train_here(pending: list[tuple[float, Path, RunConfig]], progress: bool, log: Callable[[str], None],
                overwrite: bool = False) -> None:
    from .train import fit

    for i, (beta, path, cfg) in enumerate(pending, 1):
        log(f"sweep: training {i}/{len(pending)}: beta = {beta:g} -> {path}")
        try:
            if is_run_folder(path) and not overwrite:
                fit(None, path, resume=True, epochs=cfg.train.epochs, progress=progress, log=log)
            else:
                fit(cfg, path, overwrite=overwrite, progress=progress, log=log)
        except TrainingInterrupted as e:  # the sweep, not this one run, is what to continue
            raise TrainingInterrupted(f"{e.signal_name}: the sweep was stopped; {path} saved a checkpoint; run "
                                      "the same sweep again to continue", e.signal_name) from None


def _train_in_processes(pending: list[tuple[float, Path, RunConfig]], out: Path, jobs: int,
                        log: Callable[[str], None], overwrite: bool = False) -> None:
    """``jobs`` runs at a time, each a ``vaekit train`` child process with cores // jobs threads (at
    least 1; the cores this process may use, within a container's quota); its output is kept in
    OUT/logs/beta-<value>.log when it ends. A child that fails stops the others (they checkpoint, as
    on SIGTERM) and its last line is the error. The children run in their own sessions, so a signal
    to the sweep reaches each of them exactly once, from here."""
    threads = max(1, usable_cpus() // jobs)
    env = child_environment({**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    queue, running = list(pending), []
    failed: str | None = None
    try:
        while (queue and failed is None) or running:
            while queue and failed is None and len(running) < jobs:
                beta, path, cfg = queue.pop(0)
                cmd = [sys.executable, "-m", "vaekit", "train", "--no-progress"]
                if is_run_folder(path) and not overwrite:
                    cmd += ["--resume", str(path), "--epochs", str(cfg.train.epochs)]
                else:
                    config = atomic_write(logs / f"beta-{beta:g}.config.json", cfg.to_json() + "\n")
                    cmd += ["--config", str(config), "--out", str(path), *(["--overwrite"] if overwrite else [])]
                log_path = logs / f"beta-{beta:g}.log"
                sink = tempfile.TemporaryFile()  # no name: the log appears whole, when the child ends
                child = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
                log(f"sweep: training beta = {beta:g} -> {path} (a child process, {counted(threads, 'thread')}; log {log_path})")
                running.append((beta, log_path, child, sink))
            time.sleep(0.2)
            for item in [r for r in running if r[2].poll() is not None]:
                running.remove(item)
                text = _keep_log(item)
                if item[2].returncode != 0 and failed is None:
                    lines = text.strip().splitlines() or ["(no output)"]
                    failed = f"sweep: training beta = {item[0]:g} failed: {one_line(lines[-1])} (log {item[1]})"
                    for _, _, other, _ in running:
                        other.send_signal(signal.SIGTERM)
    except BaseException as e:  # Ctrl-C, SIGTERM or an error here: each child checkpoints and stops
        _stop(running)
        if isinstance(e, KeyboardInterrupt):
            raise TrainingInterrupted(f"the sweep was stopped; each run in training saved a checkpoint (logs in "
                                      f"{logs}); run the same sweep again to continue them", "signal") from None
        raise
    if failed:
        raise VaekitError(failed)


def _keep_log(item: tuple[float, Path, subprocess.Popen, Any]) -> str:
    """Write a finished child's output to its log; returns the text."""
    _, log_path, _, sink = item
    sink.seek(0)
    text = sink.read().decode("utf-8", "replace")
    sink.close()
    atomic_write(log_path, text)
    return text


def _stop(running: list[tuple[float, Path, subprocess.Popen, Any]]) -> None:
    """SIGTERM to each child (not SIGINT, which a child started from a script's ``cmd &`` ignores): it
    checkpoints and stops. A second signal meanwhile is passed on (a child then stops at once) and the
    wait goes on, so that no child outlives the sweep; their logs are kept."""
    for _, _, child, _ in running:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    while any(child.poll() is None for _, _, child, _ in running):
        try:
            for _, _, child, _ in running:
                child.wait()
        except KeyboardInterrupt:
            for _, _, child, _ in running:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
    for item in running:
        _keep_log(item)


def table(rows: list[dict[str, Any]]) -> str:
    """The sweep as a Markdown table (a column appears only where some run has it)."""
    cols = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---:|" * len(cols)]
    for r in rows:
        cells = [fmt.format(r[k]) if r.get(k) is not None else "–" for k, _, fmt in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SAMPLES_FIGURE = "samples-by-beta.png"


def _samples_figure(out: Path, runs: list[tuple[float, Path]]) -> None:
    """Ten prior samples per beta, one row each; for vectors none (and an older sweep's is removed)."""
    from .grids import image_grid, label_rows, save_png

    rows, names = [], []
    for beta, path in runs:
        model = load_run(path).model
        if len(model.data_shape) != 3:
            (out / SAMPLES_FIGURE).unlink(missing_ok=True)
            return
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            rows.append(model.sample(10, generator=gen))
        names.append(f"beta {beta:g}")
    picture = image_grid(torch.cat(rows), ncol=10)
    h = rows[0].shape[-2]
    tile = h * max(1, -(-56 // max(rows[0].shape[-2:])))
    save_png(label_rows(picture, names, tile), out / SAMPLES_FIGURE)


def read_sweep(out: str | Path) -> list[dict[str, Any]]:
    return json.loads(read_regular(Path(out) / "sweep.json", "sweep table"))
