"""The ``vaekit`` command: parses flags into a RunConfig or a run folder and calls the library.

Every user error ends as one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import re
import signal
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn, Sequence

from . import __version__
from .children import follow_parent
from .config import PRECISIONS
from .errors import (MAX_MINUTES, RANGES, PeerStopped, TrainingInterrupted, VaekitError, brief, did_you_mean,
                     figure, one_line, show)
from .errors import counted as count_of  # cli's own counted() is an argparse converter
from .files import expand_home, strict_json
from .signals import stop_signals_to


def class_arg(text: str) -> str:
    """A class name or number: resolved against the run when it is loaded (``checkpoint.class_label``),
    or against the data (``--holdout-class``)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("give a class number or name")
    return text


class _Joined(argparse.Action):
    """A list flag given more than once means all its values (``--holdout-class 3 --holdout-class 5`` is
    ``3,5``), where argparse keeps the last alone."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        before = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, values if not before else f"{before},{values}")


# flag -> (config key, or a function from the value to overrides), argparse options
TRAIN_FLAGS: list[tuple[str, Any, dict[str, Any]]] = [
    ("--dataset", "data.dataset", dict(metavar="D", help="mnist, fashion-mnist, cifar10, digits, blobs[:D], "
                                       "folder:PATH or vectors:PATH (.npy, .npz, .safetensors, .csv, .tsv, .txt)")),
    ("--data-dir", "data.data_dir", dict(metavar="DIR", help="folder with the IDX files (else $VAEKIT_DATA)")),
    ("--binarize", "data.binarize", dict(choices=["none", "static", "dynamic"],
                                         help="binarise pixels: once with a fixed seed, or afresh every batch")),
    ("--channels", "data.channels", dict(type=int, metavar="C", help="folder images: 1 gray, 3 RGB")),
    ("--image-size", "data.image_size", dict(type=int, metavar="N", help="folder images: resize to NxN")),
    ("--resize", "data.resize", dict(choices=["crop", "squash"], help="folder images resized to NxN: crop the centred "
                                     "square first (default; no distortion), or squash (scale both sides)")),
    ("--labels", "data.labels", dict(metavar="FILE", help="vectors: labels, one per row (.npy of class numbers, "
                                                         "or a .txt/.csv of class numbers or names)")),
    ("--test-fraction", "data.test_fraction", dict(type=float, metavar="F",
                                                   help="held-out share where a data set has no test split")),
    ("--model", "model.kind", dict(choices=["vae", "ae", "hvae"],
                                   help="VAE, plain autoencoder, or hierarchical VAE (--latent-dims)")),
    ("--latent-dims", "model.latent_dims", dict(metavar="D,D", help="hvae: latent layer sizes, bottom first, e.g. 64,32")),
    ("--block-width", "model.block_width", dict(type=int, metavar="W", help="hvae: width of each layer's blocks")),
    ("--arch", "model.arch", dict(choices=["mlp", "conv", "resnet"],
                                  help="fully connected, convolutional, or residual convolutional")),
    ("--hidden", "model.hidden", dict(metavar="W,W", help="MLP widths, or conv/resnet channels per stage, e.g. 400,400")),
    ("--res-blocks", "model.res_blocks", dict(type=int, metavar="N", help="resnet: residual blocks per stage")),
    ("--latent-dim", "model.latent_dim", dict(type=int, metavar="N", help="size of the latent code z")),
    ("--spatial-latent", lambda v: {"model.spatial_latent": True},
     dict(action="store_true", default=None, help="conv/resnet: z as C x h x w maps at the deepest resolution "
                                                   "(--latent-dim a multiple of h*w)")),
    ("--likelihood", "model.likelihood", dict(choices=["bernoulli", "gaussian", "mse", "dlogistic"],
                                              help="p(x|z): Bernoulli (data in [0, 1]), Gaussian, summed MSE, or "
                                                   "discretised logistic mixture (8-bit images)")),
    ("--mixtures", "model.mixtures", dict(type=int, metavar="N", help="dlogistic: logistic components per pixel")),
    ("--output", "model.output", dict(choices=["auto", "logits", "identity", "sigmoid"],
                                      help="decoder's last activation (auto: what the likelihood needs)")),
    ("--sigma", "model.sigma", dict(type=float, metavar="S", help="gaussian: fixed (or initial) sigma")),
    ("--learn-sigma", lambda v: {"model.learn_sigma": True},
     dict(action="store_true", default=None, help="gaussian: learn one shared sigma")),
    ("--standardize", lambda v: {"model.standardize": True},
     dict(action="store_true", default=None, help="gaussian/mse: the model standardises each value with the training "
                                                   "set's mean and std (figures stay in the data's units)")),
    ("--precision", "train.precision", dict(choices=list(PRECISIONS),
                                            help="arithmetic of the networks (autocast; fp16 with loss scaling)")),
    ("--compile", lambda v: {"train.compile": True},
     dict(action="store_true", default=None, help="compile the training step with torch.compile")),
    ("--tensorboard", lambda v: {"train.log": "tensorboard"},
     dict(action="store_true", default=None, help="also log to TensorBoard in RUN_DIR/tensorboard (= --log tensorboard)")),
    ("--log", "train.log", dict(metavar="NAME,NAME", action=_Joined, help="loggers besides history.jsonl: tensorboard")),
    ("--beta", "objective.beta", dict(type=float, metavar="B", help="KL weight (1 = the true ELBO)")),
    ("--conditional", lambda v: {"model.conditional": True},
     dict(action="store_true", default=None, help="a conditional VAE/AE: encoder and decoder see the class label "
                                                   "(labelled data; sample a class with `vaekit sample --label C`)")),
    ("--prior", "model.prior", dict(choices=["normal", "vamp"],
                                    help="p(z): standard normal, or the VampPrior (a mixture over learned pseudo-inputs)")),
    ("--pseudo-inputs", "model.pseudo_inputs", dict(type=int, metavar="N", help="vamp: number of pseudo-inputs")),
    ("--objective", "objective.kind", dict(choices=["elbo", "iwae"],
                                           help="what training optimises: the ELBO or the importance-weighted bound")),
    ("--iwae-samples", "objective.iwae_samples", dict(type=int, metavar="K",
                                                      help="iwae: importance samples per example in training")),
    ("--iwae-gradient", "objective.iwae_gradient", dict(choices=["standard", "dreg"],
                                                        help="iwae: the encoder's gradient estimator "
                                                             "(dreg: doubly reparameterised, lower variance)")),
    ("--free-bits", "objective.free_bits", dict(type=float, metavar="NATS",
                                                help="elbo: floor on each latent dimension's batch-mean KL")),
    ("--schedule", "objective.schedule", dict(choices=["constant", "linear", "cyclical"],
                                              help="beta over the epochs")),
    ("--warmup", lambda v: {"objective.schedule": "linear", "objective.warmup_epochs": v},
     dict(type=int, metavar="N", help="linear beta warm-up over N epochs")),
    ("--cycle-epochs", "objective.cycle_epochs", dict(type=int, metavar="N", help="cyclical: epochs per cycle")),
    ("--epochs", "train.epochs", dict(type=int, metavar="N", help="epochs to train")),
    ("--batch-size", "train.batch_size", dict(type=int, metavar="N", help="examples per step")),
    ("--lr", "train.lr", dict(type=float, help="Adam's learning rate")),
    ("--lr-schedule", "train.lr_schedule", dict(choices=["constant", "cosine", "linear"], help="decay from --lr to --lr-min")),
    ("--lr-warmup", "train.lr_warmup_epochs", dict(type=float, metavar="EPOCHS", help="linear lr warm-up")),
    ("--lr-min", "train.lr_min", dict(type=float, metavar="LR", help="where a cosine/linear decay ends")),
    ("--weight-decay", "train.weight_decay", dict(type=float, help="Adam's L2 penalty")),
    ("--grad-clip", "train.grad_clip", dict(type=float, metavar="NORM", help="clip the gradient norm (0: off)")),
    ("--device", "train.device", dict(metavar="DEV", help="auto, cpu, cuda or cuda:N")),
    ("--seed", "seed", dict(type=int, help="seeds weights, batches and sampling")),
    ("--image-shape", "data.image_shape", dict(metavar="C,H,W",
                                               help="vectors: read each row as an image of this shape: H,W (grey), "
                                                    "C,H,W or H,W,C (C 1 or 3), e.g. 28,28 for a table of MNIST pixels")),
    ("--holdout-class", lambda v: {"data.holdout_classes": str(v)},
     dict(type=class_arg, metavar="C", action=_Joined,
          help="leave class C (a number, or a name such as a class folder's; C,C or the flag again for more) out of "
               "training (for `vaekit anomaly`)")),
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        """A mistyped choice (a command, --likelihood bernouli) names the one it probably meant."""
        try:
            super()._check_value(action, value)  # type: ignore[misc]
        except argparse.ArgumentError as e:
            hint = did_you_mean(str(value), action.choices or [])
            if hint:
                e.message = e.message.replace(f"{value!r}", f"{value!r}{hint}", 1)
            raise


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config overrides the train flags ask for (only flags actually given)."""
    out: dict[str, Any] = {}
    by: dict[str, str] = {}  # which flag set each key

    def same(a: Any, b: Any) -> bool:
        try:
            return float(a) == float(b)
        except (TypeError, ValueError):
            return str(a).lower() == str(b).lower()

    def put(key: str, value: Any, flag: str) -> None:
        if key in out and not same(out[key], value):
            raise VaekitError(f"{flag} sets {key}={show(str(value))} but {by[key]} sets it to "
                              f"{show(str(out[key]))}; give one of them")
        out[key], by[key] = value, flag

    for flag, target, _ in TRAIN_FLAGS:
        value = getattr(args, _dest(flag))
        if value is None:
            continue
        if callable(target):
            for key, v in target(value).items():
                put(key, v, f"{flag} {value}" if value is not True else flag)
        else:
            put(target, str(value) if target in ("model.hidden", "model.latent_dims", "train.log") else value,
                f"{flag} {value}")
    if args.no_download:
        out["data.download"] = False
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise VaekitError(f"--set {item}: expected KEY=VALUE, e.g. --set model.latent_dim=8")
        put(key, value, f"--set {item}")
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed

    group = distributed.from_environment()
    if args.resume:
        _check_resume_flags(args, train_overrides(args))
    if args.nproc is not None and not group.active:
        from .launch import launch

        if args.resume:
            return launch(args.argv, args.nproc, None)
        return _into_new_folder(args.out, _start_preset(args), lambda out: launch(args.argv, args.nproc, out))
    if group.active and not args.resume and not args.out:
        raise VaekitError("under torchrun every process must write to the same folder: give --out RUN_DIR")
    run = _train(args)
    if group.writer:
        files = sorted(p.name for p in run.path.iterdir() if not p.name.startswith("."))
        print(f"done: {run.epoch} epoch{'s' if run.epoch != 1 else ''}. Results in {run.path}/ ({', '.join(files)})")
    return 0


def _into_new_folder(out: str | None, preset: str | None, work: Callable[[str], Any]) -> Any:
    """``work(out)``; without ``--out``, into a new folder under runs/ named after the preset and the
    time, claimed by making it, so that runs started in the same second (by a script's loop, say) get
    -2, -3, ... rather than one folder. It is removed again if the command leaves it empty (a refused
    run makes no folder)."""
    from .checkpoint import remove_if_unused

    if out:
        return work(out)
    base, made_runs = f"runs/{preset or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}", not os.path.isdir("runs")
    for n in range(1, 10_000):
        name = base if n == 1 else f"{base}-{n}"
        try:
            os.makedirs(name)  # fails if the name is taken, also by a process that took it just now
            break
        except FileExistsError:
            continue
        except OSError:  # cannot be made here: the run's own checks say why, naming the folder
            name = base
            break
    try:
        return work(name)
    finally:
        remove_if_unused(Path(name))
        if made_runs:
            with contextlib.suppress(OSError):
                os.rmdir("runs")  # only while empty


def _start_preset(args: argparse.Namespace) -> str | None:
    """The preset a new run starts from, as `_train` picks it: the flag, --config's, or the default."""
    from .config import RunConfig
    from .presets import DEFAULT_PRESET

    if args.preset or args.config:
        return args.preset or RunConfig.load(args.config).preset
    return None if "data.dataset" in train_overrides(args) else DEFAULT_PRESET


def _train(args: argparse.Namespace):
    from .train import fit

    overrides = train_overrides(args)
    if args.resume:  # its flags were checked by cmd_train
        run = fit(None, args.resume, resume=True, overrides=overrides, progress=not args.no_progress,
                  max_minutes=args.max_minutes)
    else:
        cfg, data = _new_config(args, overrides)
        run = _into_new_folder(args.out, cfg.preset, lambda out: fit(
            cfg, out, overwrite=args.overwrite, data=data, progress=not args.no_progress, max_minutes=args.max_minutes))
    return run


def _check_resume_flags(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    """A resumed run keeps its config and its folder: flags that would change either are refused."""
    extra = sorted(set(overrides) - {"train.epochs", "train.device", "data.data_dir"})
    if extra or args.preset or args.config:
        raise VaekitError(
            "--resume continues a run with its saved config; only --epochs, --device and --data-dir "
            f"may be given with it (got {', '.join(extra) or '--preset/--config'})"
        )
    if args.overwrite:
        raise VaekitError("--overwrite starts a run afresh and --resume continues one; give one of them")
    if args.out and os.path.realpath(expand_home(args.out)) != os.path.realpath(expand_home(args.resume)):
        raise VaekitError(f"--resume {show(args.resume)} continues in that folder, but --out {show(args.out)} names "
                          "another; drop --out (or copy the run folder there and resume the copy)")


def _new_config(args: argparse.Namespace, overrides: dict[str, Any]):
    """A new run's config from --config, --preset or (with only --dataset) the data, with the flags
    applied; and the data when they had to be loaded to choose the model."""
    from .config import RunConfig
    from .presets import DEFAULT_PRESET, get_preset

    if args.config and args.preset:
        raise VaekitError("--config and --preset both say where to start; give one of them")
    chosen = not (args.config or args.preset) and "data.dataset" in overrides  # a model chosen from the data
    base = RunConfig() if chosen else RunConfig.load(args.config) if args.config else get_preset(
        args.preset or DEFAULT_PRESET)
    overrides = _holdout_number(base, overrides, not args.no_progress)
    if not chosen:
        return base.with_overrides(overrides), None
    from .autoconfig import config_for_data

    return config_for_data(overrides["data.dataset"], overrides, progress=not args.no_progress)


def _holdout_number(base: Any, overrides: dict[str, Any], progress: bool) -> dict[str, Any]:
    """``--holdout-class`` given as a class's name (a class folder's, a label column's): the data are
    read once to find its number, which the config keeps."""
    name = overrides.get("data.holdout_classes")
    if name is None or re.fullmatch(r"\s*\[?[\d,\s]*\]?\s*", str(name)):
        return overrides
    from .checkpoint import class_index, known_classes
    from .data import load_dataset

    rest = {k: v for k, v in overrides.items() if k != "data.holdout_classes"}
    data = load_dataset(base.with_overrides(rest).data, progress=progress)
    number = class_index(data.class_names, str(name))
    if number is None:
        raise VaekitError(f"--holdout-class {show(name)}: not a class of {data.name}; "
                          f"{known_classes(data.class_names)} (or give a number)")
    return {**overrides, "data.holdout_classes": str(number)}


def _per_dim(kl: list[float], shown: int = 32) -> str:
    """Each dimension's KL, or for a wide latent (a spatial one has hundreds) the largest few and
    where the rest are: a line of 512 numbers is read by nobody."""
    if len(kl) <= shown:
        return " ".join(f"{v:.2f}" for v in kl)
    top = sorted(range(len(kl)), key=lambda i: -kl[i])[:8]
    return (f"{len(kl)} dims, median {statistics.median(kl):.2f}; largest " + ", ".join(f"{kl[i]:.2f} (dim {i})" for i in top)
            + "; every value: --json, or vaekit plot RUN_DIR --only kl-per-dim")


def format_metrics(m: dict[str, Any]) -> str:
    """The evaluate metrics as an aligned, labelled table."""
    unit = "nats/example" if m.get("units", "nats") == "nats" else "per example (squared error, not nats)"
    given = " | y" if m.get("conditional_classes") else ""  # a conditional model's bounds are on log p(x | y)
    rows = [
        ("negative ELBO (beta = 1)", "loss", unit),
        ("  reconstruction", "recon", unit),
        (f"  KL(q(z|x{given.replace(' | ', ',')}) || p(z))", "kl", "nats/example"),
        (f"IWAE estimate of -log p(x{given})", "nll_iwae", f"{unit}, k = {m.get('iwae_k')}"),
        ("bits per dimension", "bits_per_dim", "from the IWAE NLL"),
        ("active units", "active_units", f"of {m.get('latent_dim', len(m.get('kl_per_dim') or []))} latent dims"),
        ("per-example MSE: mean", "mse_mean", ""),
        ("  median", "mse_median", ""), ("  std", "mse_std", ""), ("  min", "mse_min", ""),
        ("  max", "mse_max", ""),
        (f"FID ({m.get('generation_sampler')} samples)", "fid", f"n = {m.get('generation_n')}, lower is better"),
        ("  precision", "precision", "share of samples near real examples"),
        ("  recall", "recall", "share of real examples near samples"),
        ("  class accuracy", "class_accuracy", "share of samples the feature net calls the class asked for"),
    ]
    lines = [f"{m.get('model', '').upper()} on {m.get('dataset', '')}, test split, n = {m['n']}, "
             f"epoch {m.get('epoch', '?')}"]
    for label, key, unit in rows:
        if key in m:
            v, se = m[key], m.get(f"{key}_se")
            spread = f" ± {figure(se)}" if isinstance(se, float) else ""  # the standard error over the test examples
            shown = figure(v) if isinstance(v, float) else "unknown" if v is None else v  # None: one example
            lines.append(f"  {label:<28} {shown:>12}{spread}  {unit}".rstrip())
    if isinstance(m.get("loss_se"), float):
        lines.append("  (± : standard error of the mean over the test examples, std / sqrt(n))")
    if "kl_per_layer" in m:
        lines.append("  KL per latent layer (bottom first) " + " ".join(f"{v:.2f}" for v in m["kl_per_layer"])
                     + f"; active units {m['active_units_per_layer']}")
    if "kl_per_dim" in m:
        lines.append("  KL per latent dim            " + _per_dim(m["kl_per_dim"]))
    if "feature_space" in m:
        lines.append(f"  generation metrics measured in the features of {m['feature_space']}")
    if m.get("normalised") is False:
        from .likelihoods import NOT_NORMALISED

        lines.append(f"  note: {NOT_NORMALISED}")
    if m.get("conditional_classes"):
        lines.append(f"  conditional model ({m['conditional_classes']} classes): each example's label is given, so the "
                     "bounds are on log p(x | y)")
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_run

    m = evaluate_run(args.run_dir, data_dir=args.data_dir, device=args.device, iwae_k=args.iwae_k,
                     generation=args.generation, generation_n=args.generation_n, sampler=args.sampler,
                     components=args.components, progress=not args.no_progress)
    print(strict_json(m) if args.json else format_metrics(m))
    if "not_saved" in m:
        print(f"vaekit: note: metrics.json not written ({one_line(m['not_saved'])})", file=sys.stderr)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from .grids import sample_run

    done = sample_run(args.run_dir, args.o, args.n, seed=args.seed, sampler=args.sampler,
                      components=args.components, refit=args.refit, label=args.label, data_dir=args.data_dir,
                      device=args.device)
    print(f"wrote {count_of(done['n'], 'sample')} ({done['codes']}) to {done['file']}")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from .grids import reconstruct_run

    done = reconstruct_run(args.run_dir, args.o, args.n, data_dir=args.data_dir, device=args.device)
    print(f"wrote {done['n']} test examples and their reconstructions to {done['file']}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .figures import plot_run

    written = plot_run(args.run_dir, args.out, args.only, data_dir=args.data_dir, log=print, grid_dims=args.grid_dims,
                       device=args.device)
    out = args.out or Path(args.run_dir) / "plots"
    print(f"wrote {len(written)} plot{'s' if len(written) != 1 else ''} to {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import report_run

    path = report_run(args.run_dir, iwae_k=args.iwae_k, data_dir=args.data_dir, log=print, progress=not args.no_progress,
                      device=args.device, out=args.o)
    print(f"report: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .figures import compare_runs

    result = compare_runs(args.run_a, args.run_b, args.o, data_dir=args.data_dir, device=args.device)
    if args.json:
        print(strict_json(result))
        return 0
    for name, st in result["latents"].items():
        print(f"{name:>24}: latent range [{st['min']:.2f}, {st['max']:.2f}], std {st['std']:.3f}")
    if "negative_elbo" in result:
        e = result["negative_elbo"]
        print(f"negative ELBO (beta = 1) on RUN_A's {count_of(e['n'], 'test example')}: A {figure(e['a'])}, B {figure(e['b'])}; "
              f"A - B = {figure(e['difference'])}" + (f" ± {figure(e['difference_se'])} (paired standard error)"
                                                       if isinstance(e["difference_se"], float) else
                                                       " (one example: no standard error)"))
    print(f"wrote {result['plot']}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import SAMPLES_FIGURE, parse_values, run_sweep, table

    betas = parse_values(args.beta)
    if args.max_minutes is not None:
        raise VaekitError("--max-minutes applies to `vaekit train`; a sweep trains each run for its --epochs")
    args.beta = None  # the list is the sweep's; every other train flag applies to each run
    cfg, _ = _new_config(args, train_overrides(args))
    out, rows = _into_new_folder(args.out, f"sweep-{cfg.preset or 'run'}", lambda folder: (folder, run_sweep(
        cfg, betas, folder, iwae_k=args.iwae_k, generation_n=args.generation_n, progress=not args.no_progress,
        jobs=args.jobs, overwrite=args.overwrite)))
    print(table(rows))
    picture = f" and {SAMPLES_FIGURE}" if (Path(out) / SAMPLES_FIGURE).is_file() else ""
    print(f"wrote {out}/sweep.json, sweep.md{picture}; one run folder per value in {out}/")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_run

    written = export_run(args.run_dir, args.format, args.out)
    print(f"wrote {', '.join(p.name for p in written)} to {args.out or Path(args.run_dir) / args.format}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    try:
        serve(args.run_dirs, host=args.host, port=args.port, data_dir=args.data_dir,
              log=lambda line: print(line, flush=True), sampler=args.sampler, components=args.components,
              device=args.device)
    except KeyboardInterrupt:
        print("vaekit serve: stopped", flush=True)
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from .downstream import probe_run

    result = probe_run(args.run_dir, args.k, args.o, data_dir=args.data_dir, device=args.device)
    if args.json:
        print(strict_json(result))
    else:
        print(f"linear probe (logistic regression) accuracy {result['linear_accuracy']:.4f}, "
              f"{args.k}-NN accuracy {result['knn_accuracy']:.4f} (chance {result['chance']:.4f}); "
              f"fitted on {result['n_train']} train codes, scored on {result['n_test']} test codes; "
              f"confusion matrix in {result['plot']}")
        if "note" in result:
            print(f"note: {result['note']}")
    return 0


def cmd_anomaly(args: argparse.Namespace) -> int:
    from .downstream import anomaly_run

    run_dir = args.run_dir
    given = [flag for flag, _, _ in TRAIN_FLAGS
             if getattr(args, _dest(flag), None) is not None and flag not in ("--data-dir", "--device")]
    given += [f"--{name}" for name in ("set", "preset", "config", "out", "overwrite") if getattr(args, name, None)]
    if run_dir is not None and given:
        raise VaekitError(f"anomaly {show(run_dir)} scores that run as it was trained; the training flags "
                          f"({', '.join(given)}) apply only without RUN_DIR, to train a new one")
    if run_dir is None:
        if args.holdout_class is None:
            raise VaekitError("give a RUN_DIR trained with --holdout-class, or --holdout-class C to train one")
        args.resume = None
        run_dir = _train(args).path
    summary = anomaly_run(run_dir, args.iwae_k, args.o, data_dir=args.data_dir, progress=not args.no_progress,
                          device=args.device or "cpu")
    if args.json:
        print(strict_json(summary))
    else:
        named = f" ({', '.join(map(show, summary['holdout_names']))})" if "holdout_names" in summary else ""
        print(f"held-out class {summary['holdout_classes']}{named} vs the rest, scored by {summary['score']}: "
              f"AUROC {summary['auroc']:.4f} ({summary['n_anomalous']} held-out, {summary['n_normal']} seen); "
              f"histograms in {summary['plot']}")
        if "note" in summary:
            print(f"note: {summary['note']}")
    return 0


def cmd_walkthrough(args: argparse.Namespace) -> int:
    from .walkthrough import format_walkthrough, walkthrough

    w = walkthrough()
    print(strict_json(w) if args.json else format_walkthrough(w))
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from .presets import DEFAULT_PRESET, PRESETS

    width = max(map(len, PRESETS))
    for name, p in PRESETS.items():
        mark = "*" if name == DEFAULT_PRESET else " "
        print(f"{mark} {name:<{width}}  {p.summary}")
    return 0


# Every flag that is not a config field gets its range here, as an argparse type: a value out of
# range is refused before any work, as one line naming the flag. (Config fields are checked by
# RunConfig.validate, the one place for them.)
def int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{show(text)} is not a whole number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{show(text)} is out of range {lo}..{hi}")
        return value

    parse.__name__ = "integer"
    parse.lo, parse.hi = lo, hi  # type: ignore[attr-defined]  # the API's checks are tested against them
    return parse


def counted(name: str) -> Callable[[str], int]:
    """The converter of a counted flag, over its range in RANGES (which the Python functions check too)."""
    return int_in(*RANGES[name])


def names(text: str) -> list[str]:
    """One word of a flag taking names as words (``curves samples``) or as other lists are spelled (``curves,samples``)."""
    return [t.strip() for t in text.split(",") if t.strip()] or [text]


def counted_list(name: str) -> Callable[[str], list[int]]:
    """The converter of one word of a flag taking counts as words (``0 5``) or as other lists are
    spelled (``0,5``): each count within the flag's range in RANGES."""
    one = counted(name)

    def parse(text: str) -> list[int]:
        return [one(t) for t in names(text)]

    parse.__name__ = "integers"
    parse.lo, parse.hi = one.lo, one.hi  # type: ignore[attr-defined]
    return parse


class _Words(argparse.Action):
    """A flag of several words, each of which may hold a comma-separated list: one flat list."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, [v for part in values for v in part])


class _Pair(_Words):
    """Two counts, given as ``I J`` or ``I,J``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        super().__call__(parser, namespace, values, option_string)
        if len(getattr(namespace, self.dest)) != 2:
            parser.error(f"argument {option_string}: expected two numbers, I J or I,J")


def _device_flag(parser: argparse.ArgumentParser) -> None:
    """``--device``, the same on every command that runs a model on a run folder's weights."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")


def _sampler_flags(parser: argparse.ArgumentParser, sampler_help: str) -> None:
    """``--sampler prior|gmm`` and ``--components K``, the same on every command that draws codes."""
    parser.add_argument("--sampler", choices=["prior", "gmm"], help=f"{sampler_help} (default prior)")
    parser.add_argument("--components", type=counted("--components"), metavar="K", help="gmm: mixture components (default 10)")


# flags that mean something only beside others: (command, dest, flag, does it apply?, where, default)
DEPENDENT_FLAGS: list[tuple[str, str, str, Callable[[argparse.Namespace], bool], str, Any]] = [
    ("evaluate", "generation_n", "--generation-n", lambda a: a.generation, "--generation", 10_000),
    ("evaluate", "sampler", "--sampler", lambda a: a.generation, "--generation", "prior"),
    ("evaluate", "components", "--components", lambda a: a.generation and a.sampler == "gmm",
     "--generation --sampler gmm", 10),
    ("sample", "sampler", "--sampler", lambda a: True, "", "prior"),
    ("sample", "components", "--components", lambda a: a.sampler == "gmm", "--sampler gmm", 10),
    ("sample", "refit", "--refit", lambda a: a.sampler == "gmm", "--sampler gmm", False),
    ("sample", "data_dir", "--data-dir", lambda a: a.sampler == "gmm", "--sampler gmm", None),
    ("serve", "sampler", "--sampler", lambda a: True, "", "prior"),
    ("serve", "components", "--components", lambda a: a.sampler == "gmm", "--sampler gmm", 10),
    ("plot", "grid_dims", "--grid-dims", lambda a: a.only is None or "latent-grid" in a.only,
     "the latent grid (no --only, or --only latent-grid)", None),
]


def _dependent_flags(args: argparse.Namespace) -> str | None:
    """Fill in the defaults of the flags above that were not given; return the error for one that was
    given where it does nothing (rather than ignore it)."""
    rows = [row for row in DEPENDENT_FLAGS if row[0] == getattr(args, "command", None)]
    given = {dest for _, dest, *_ in rows if getattr(args, dest) is not None}
    for _, dest, _, _, _, default in rows:
        if dest not in given:
            setattr(args, dest, default)
    for _, dest, flag, applies, where, _ in rows:
        if dest in given and not applies(args):
            return f"{flag} applies only with {where}; add it, or leave {flag} out"
    return None


def float_in(lo: float, hi: float, lo_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{show(text)} is not a number") from None
        if not ((lo < value) if lo_open else (lo <= value)) or not value <= hi:
            want = f"a positive number up to {hi:g}" if lo_open and lo == 0 else f"in [{lo:g}, {hi:g}]"
            raise argparse.ArgumentTypeError(f"{show(text)} is out of range: must be {want}")
        return value

    parse.__name__ = "number"
    parse.lo, parse.hi = lo, hi  # type: ignore[attr-defined]
    return parse


def output_file(*suffixes: str) -> Callable[[str], Path]:
    from .files import output_file as check

    def parse(text: str) -> Path:
        try:
            return check(text, suffixes)
        except VaekitError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = "file name"
    return parse


def size_flag(text: str) -> int:
    from .budget import parse_size

    try:
        return parse_size(text)
    except VaekitError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def ratio_flag(text: str) -> float:
    from .budget import parse_ratio

    try:
        return parse_ratio(text)
    except VaekitError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


DATA_DIR_HELP = ("where the run's data are on this machine, if they moved: the IDX files' folder, or the folder "
                 "holding the run's image folder or vectors file")
SEED = int_in(*RANGES["--seed"])
MINUTES = float_in(0, MAX_MINUTES, lo_open=True)


def _add_train_arguments(t: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    t.add_argument("--preset", metavar="P", help="start from a preset (see `vaekit presets`; default: digits-mlp, "
                   "or a model chosen from the data when --dataset is given)")
    t.add_argument("--config", metavar="FILE", help="start from a saved config.json (reproduces that run)")
    t.add_argument("--out", metavar="RUN_DIR", help="run folder to create (default runs/<preset>-<time>)")
    t.add_argument("--overwrite", action="store_true", help="replace the run in a non-empty --out folder")
    from .presets import DEFAULT_PRESET, get_preset

    defaults = get_preset(DEFAULT_PRESET)
    for flag, target, kw in TRAIN_FLAGS:
        if flag in skip:
            continue
        text = kw.get("help", "")
        if isinstance(target, str):
            value = _config_value(defaults, target)
            shown = (",".join(map(str, value)) or "none") if isinstance(value, list) else ("none" if value is None else value)
            text += f" (default: the preset's; {DEFAULT_PRESET}: {shown})"
        t.add_argument(flag, **{"default": None, **kw, "help": text.strip()})
    t.add_argument("--no-download", action="store_true", help="never download; read local files only")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="set any config field, e.g. --set data.split_seed=1 (repeatable)")
    t.add_argument("--max-minutes", type=MINUTES, metavar="M",
                   help="stop after the last epoch that fits in M minutes (resume later with --resume)")


def _config_value(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


class _Help(argparse.HelpFormatter):
    """Shows each option's default where it has one (train's come from the preset, said in the text)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += f" (default: {action.default})"
        return text


COMMON = ("max_memory", "no_progress", "max_ratio")
BEFORE = "before_command_"  # where the common flags go when given before the command (vaekit --no-progress train)


def _common(c: argparse.ArgumentParser | None = None, prefix: str = "") -> argparse.ArgumentParser:
    """The flags every command takes; with ``prefix``, as the top-level parser takes them (not set
    unless given, so that the command's own parse decides the defaults)."""
    c = c or argparse.ArgumentParser(add_help=False)
    given = {"default": argparse.SUPPRESS} if prefix else {}
    c.add_argument("--max-memory", type=size_flag, metavar="SIZE", dest=prefix + "max_memory", **given,
                   help="memory budget for what files and flags ask for, e.g. 16G "
                        "(default: half the machine's or container's memory, or $VAEKIT_MAX_MEMORY)")
    c.add_argument("--no-progress", action="store_true", dest=prefix + "no_progress", **given,
                   help="no progress bars (every command takes it)")
    c.add_argument("--max-ratio", type=ratio_flag, metavar="R", dest=prefix + "max_ratio", **given,
                   help="largest compression ratio accepted in .gz/.npz input (default 200, or $VAEKIT_MAX_RATIO)")
    return c


def _common_before_command(args: argparse.Namespace) -> None:
    """A common flag given before the command counts as given after it (there, it wins)."""
    for name in COMMON:
        before = getattr(args, BEFORE + name, None)
        if before is not None and getattr(args, name, None) in (None, False):
            setattr(args, name, before)


def _sub(sub: Any, name: str, **kw: Any) -> argparse.ArgumentParser:
    return sub.add_parser(name, formatter_class=_Help, description=kw.get("help"), **kw)


def commands_text() -> str:
    """What `vaekit` alone prints: the commands, one line each."""
    rows = [(a.dest, a.help or "") for a in build_parser()._commands._choices_actions]  # type: ignore[attr-defined]
    width = max(len(n) for n, _ in rows)
    lines = ["usage: vaekit COMMAND [options]   (vaekit COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {n:<{width}}  {h}" for n, h in rows]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vaekit", description="Train, evaluate, explore and generate with VAEs.", formatter_class=_Help)
    p.add_argument("--version", action="version", version=f"vaekit {__version__}")
    _common(p, BEFORE)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    p._commands = sub  # type: ignore[attr-defined]
    common = [_common()]

    t = _sub(sub, "train", help="train a VAE or AE into a run folder", parents=common)
    _add_train_arguments(t)
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run (use --epochs to extend)")
    t.add_argument("--nproc", type=counted("--nproc"), metavar="N",
                   help="train with N data-parallel processes on this machine (runs torchrun; see README, Scaling out)")
    t.set_defaults(func=cmd_train)

    e = _sub(sub, "evaluate", help="test-split negative ELBO per example (beta = 1), IWAE NLL; FID etc. with --generation", parents=common)
    e.add_argument("run_dir", metavar="RUN_DIR", help="a run folder made by `vaekit train`")
    e.add_argument("--json", action="store_true", help="print one JSON object (strict JSON)")
    e.add_argument("--iwae-k", type=counted("--iwae-k"), default=100, metavar="K",
                   help="importance samples for the NLL estimate (literature: 5000; 0 skips it)")
    e.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
    _device_flag(e)
    e.add_argument("--generation", action="store_true",
                   help="also FID, precision and recall of generated examples against the test set")
    e.add_argument("--generation-n", type=counted("--generation-n"), metavar="N",
                   help="generated examples for --generation (default 10000, at most the test set's size)")
    _sampler_flags(e, "--generation draws codes from the prior or from the fitted Gaussian mixture "
                      "(a conditional run's: each class's own)")
    e.set_defaults(func=cmd_evaluate)

    s = _sub(sub, "sample", help="decode draws from the prior (or a fitted mixture) into a PNG grid (or .npy)", parents=common)
    s.add_argument("run_dir", metavar="RUN_DIR", help="a run folder made by `vaekit train`")
    s.add_argument("-n", type=counted("-n"), default=64, help="number of samples (default 64)")
    s.add_argument("-o", required=True, type=output_file(".png", ".npy"), metavar="FILE",
                   help="output .png (or .npy for raw values)")
    s.add_argument("--seed", type=SEED, default=0, help="seed for the draws (same seed, same samples)")
    _sampler_flags(s, "codes from the prior, or from a Gaussian mixture fitted to the training codes (for a "
                      "conditional run one per class; fitted once and kept in RUN_DIR/sampler_gmm.safetensors; "
                      "needs the training data the first time)")
    s.add_argument("--refit", action="store_true", default=None, help="gmm: fit the mixture again")
    s.add_argument("--label", type=class_arg, metavar="C",
                   help="a conditional model (--conditional): draw class C, a number or a class name such as "
                        "a class folder's (default: one row per class)")
    s.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
    _device_flag(s)
    s.set_defaults(func=cmd_sample)

    r = _sub(sub, "reconstruct", help="test examples above their reconstructions, as a PNG (or .npy)",
                       parents=common)
    r.add_argument("run_dir", metavar="RUN_DIR", help="a run folder made by `vaekit train`")
    r.add_argument("-o", required=True, type=output_file(".png", ".npy"), metavar="FILE",
                   help="output .png grid, or .npy of shape (2, n, ...): inputs, then reconstructions")
    r.add_argument("-n", type=counted("reconstruct -n"), default=32, help="number of test examples (default 32)")
    r.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
    _device_flag(r)
    r.set_defaults(func=cmd_reconstruct)

    pl = _sub(sub, "plot", help="write every plot of a run as PNG files", parents=common)
    pl.add_argument("run_dir", metavar="RUN_DIR", help="a run folder made by `vaekit train`")
    pl.add_argument("--only", nargs="+", type=names, action=_Words, metavar="NAME",
                    help="only these plots (names as in RUN_DIR/plots/; NAME NAME or NAME,NAME)")
    pl.add_argument("--out", metavar="DIR", help="folder for the PNGs (default RUN_DIR/plots)")
    pl.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
    pl.add_argument("--grid-dims", nargs="+", type=counted_list("--grid-dims"), action=_Pair, metavar=("I", "J"),
                    help="latent grid over dimensions I and J, as I J or I,J (default: top two principal directions)")
    _device_flag(pl)
    pl.set_defaults(func=cmd_plot)

    rp = _sub(sub, "report", help="one self-contained HTML page: config, metrics, every plot", parents=common)
    rp.add_argument("run_dir", metavar="RUN_DIR", help="a run folder made by `vaekit train`")
    rp.add_argument("--iwae-k", type=counted("--iwae-k"), default=100, metavar="K",
                    help="importance samples for the NLL estimate (0 skips it)")
    rp.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
    rp.add_argument("-o", type=output_file(".html"), metavar="FILE.html",
                    help="write the page there instead, leaving the run folder untouched (default: RUN_DIR/report.html)")
    _device_flag(rp)
    rp.set_defaults(func=cmd_report)

    cp = _sub(sub, "compare", help="two runs' latent spaces side by side, decoding the same z; two VAEs' paired "
                                   "test loss", parents=common)
    cp.add_argument("run_a", metavar="RUN_A", help="first run (its test data are used for both)")
    cp.add_argument("run_b", metavar="RUN_B", help="second run, trained on data of the same shape")
    cp.add_argument("-o", type=output_file(".png"), metavar="FILE.png",
                    help="the figure to write (default: RUN_A/plots/compare.png)")
    cp.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
    cp.add_argument("--json", action="store_true", help="print one JSON object (strict JSON)")
    _device_flag(cp)
    cp.set_defaults(func=cmd_compare)

    sw = _sub(sub, "sweep", help="one run per beta, then a table and a figure comparing them (beta-VAE)",
              parents=common)
    _add_train_arguments(sw, skip=("--beta",))
    sw.add_argument("--beta", required=True, metavar="B,B,...",
                    help="the values to train, e.g. 0.5,1,2,4 (replaces the train flag --beta)")
    sw.add_argument("--iwae-k", type=counted("--iwae-k"), default=100, metavar="K", help="importance samples (0 skips)")
    sw.add_argument("--jobs", type=counted("--jobs"), default=1, metavar="N",
                    help="train N runs at once, each in its own process with its share of the cores (default 1)")
    sw.add_argument("--generation-n", type=counted("--generation-n"), default=2000, metavar="N",
                    help="samples for FID / precision / recall (default 2000)")
    sw.set_defaults(func=cmd_sweep)

    ex = _sub(sub, "export", help="the encoder and decoder as ONNX graphs (dynamic batch)", parents=common)
    ex.add_argument("run_dir", metavar="RUN_DIR", help="a run folder made by `vaekit train`")
    ex.add_argument("--format", default="onnx", choices=["onnx"], help="the format (default onnx)")
    ex.add_argument("--out", metavar="DIR", help="folder for the files (default RUN_DIR/onnx)")
    ex.set_defaults(func=cmd_export)

    sv = _sub(sub, "serve", help="explore a run's latent space live in the browser (two runs: side by side)",
              parents=common)
    sv.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run folder, or two to compare (e.g. AE and VAE)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=counted("--port"), default=8000, help="port (default 8000; 0 picks a free one)")
    sv.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
    _sampler_flags(sv, "gmm: fit each run's Gaussian mixture to its training codes first (as `sample --sampler "
                       "gmm`; kept in the run folder) and offer its samples beside the prior's; a run that "
                       "already has one offers it anyway")
    _device_flag(sv)
    sv.set_defaults(func=cmd_serve)

    pr = _sub(sub, "probe", help="linear and kNN accuracy of labels from the latent means", parents=common)
    pr.add_argument("run_dir", metavar="RUN_DIR", help="a run folder made by `vaekit train`")
    pr.add_argument("-k", type=counted("-k"), default=5, help="neighbours for kNN (default 5)")
    pr.add_argument("--json", action="store_true", help="print one JSON object")
    pr.add_argument("-o", type=output_file(".png"), metavar="FILE.png",
                    help="confusion matrix (default RUN_DIR/plots/probe-confusion.png)")
    pr.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
    _device_flag(pr)
    pr.set_defaults(func=cmd_probe)

    an = _sub(sub, "anomaly", help="AUROC of a held-out class scored by negative ELBO (or IWAE)", parents=common)
    an.add_argument("run_dir", metavar="RUN_DIR", nargs="?",
                    help="a run trained with --holdout-class; without it, train one from the flags")
    _add_train_arguments(an)
    an.add_argument("--iwae-k", type=counted("--iwae-k"), default=0, metavar="K", help="score by IWAE NLL with K samples")
    an.add_argument("--json", action="store_true", help="print one JSON object")
    an.add_argument("-o", type=output_file(".png"), metavar="FILE.png",
                    help="score histograms (default RUN_DIR/plots/anomaly-scores.png)")
    an.set_defaults(func=cmd_anomaly)

    w = _sub(sub, "walkthrough", help="a 4-8-2-8-4 VAE worked through number by number (forward pass, loss, gradients)", parents=common)
    w.add_argument("--json", action="store_true", help="print one JSON object")
    w.set_defaults(func=cmd_walkthrough)

    ps = _sub(sub, "presets", help="list the presets", parents=common)
    ps.set_defaults(func=cmd_presets)
    return p


_DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning)
_PACKAGE_DIR = str(Path(__file__).resolve().parent) + os.sep


@contextlib.contextmanager
def _dependency_warnings(show_them: list[bool]) -> Iterator[None]:
    """Warnings (numpy, Pillow, scikit-learn, ...) are collected, not printed as they come: after a
    successful command each distinct one becomes one line; after an error the error is the line.
    A dependency's deprecation notice about its own code (torch.compile's use of torch.jit) is
    nothing a user can act on, so, as in Python's defaults, it is not shown."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            yield
        finally:
            from .launch import leave_warnings

            lines = _warning_lines(caught) if show_them[0] else []
            if lines and not leave_warnings(lines):  # in a --nproc job, the launcher says each once
                for text in lines:
                    print(f"{_ERROR_PREFIX}: warning: {text}", file=sys.stderr)


def _warning_lines(caught: list[warnings.WarningMessage]) -> list[str]:
    """One line per place in the code that warned: the first message from there, and how many more
    it gave (matplotlib warns once per character a font lacks: one line, not one per glyph)."""
    sites: dict[tuple[str, int, type], list[str]] = {}
    seen: set[str] = set()  # the same text from two places is one line too
    for w in caught:
        if issubclass(w.category, _DEPRECATIONS) and not os.path.realpath(w.filename).startswith(_PACKAGE_DIR):
            continue
        text = one_line(str(w.message), 300)
        if text not in seen:
            seen.add(text)
            sites.setdefault((w.filename, w.lineno, w.category), []).append(text)
    return [texts[0] + (f" (and {len(texts) - 1} more like it)" if len(texts) > 1 else "") for texts in sites.values()]


_SIGNALLED: list[int] = []  # the last signal _terminate turned into KeyboardInterrupt


def _terminate(signum: int, frame: Any) -> None:
    _SIGNALLED[:] = [signum]
    raise KeyboardInterrupt  # so SIGTERM and SIGHUP, like Ctrl-C, unwind: temporary files are removed, locks released


def _interrupt_again(unraisable: Any) -> None:
    """sys.unraisablehook while a command runs: a KeyboardInterrupt raised where Python cannot pass it on
    (a weakref callback or __del__ of matplotlib's, say, when the signal arrived during garbage
    collection) would be printed as a traceback and lost; the signal is sent again instead, to land
    in the command's own code and unwind it."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _SIGNALLED:
        import threading

        # from another thread, a moment later: a signal sent from here would be handled inside this hook
        again = threading.Timer(0.01, os.kill, (os.getpid(), _SIGNALLED[0]))
        again.daemon = True
        again.start()
        return
    sys.__unraisablehook__(unraisable)


_ERROR_PREFIX = "vaekit"


class _Discard(io.TextIOBase):
    """Standard output of ranks other than 0 under torchrun."""

    def write(self, text: str) -> int:
        return len(text)


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but tab and newline: no terminal tricks


class _Stream(io.TextIOBase):
    """stdout or stderr as the commands see them: a write that fails (a reader that went away,
    ``| head``; ``> /dev/full``; a full disk) never stops the work. The stream becomes a sink and
    ``failed`` keeps the error, which the command reports once its work is done."""

    def __init__(self, stream: Any, escape: bool = False) -> None:
        self.stream = stream
        self.escape = escape  # control characters (a file name's escape codes) written as visible escapes
        self.failed: OSError | None = None

    def _guard(self, call: Callable[[], Any], default: Any) -> Any:
        if self.failed is not None:
            return default
        try:
            return call()
        except OSError as e:
            self.failed = e
            with contextlib.suppress(OSError, ValueError):  # the interpreter's last flush finds a sink too
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
            return default

    def write(self, text: str) -> int:
        shown = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text) if self.escape else text
        self._guard(lambda: self.stream.write(shown), None)
        return len(text)

    def flush(self) -> None:
        self._guard(self.stream.flush, None)

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.failed is None and self.stream.isatty()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding


def _threads_within_the_container(args: argparse.Namespace) -> None:
    """In a container whose CPU quota is below the machine's cores, torch would start a thread per
    core and the threads would wait on each other: a command uses as many as its quota allows, unless
    OMP_NUM_THREADS says otherwise (torchrun sets it for the processes it starts)."""
    if "OMP_NUM_THREADS" in os.environ or "WORLD_SIZE" in os.environ or getattr(args, "nproc", None):
        return
    from .budget import usable_cpus

    cpus = usable_cpus()
    if cpus < (os.cpu_count() or cpus):
        os.environ["OMP_NUM_THREADS"] = str(cpus)
        if "torch" in sys.modules:  # already imported (main called from Python): the setting alone is too late
            sys.modules["torch"].set_num_threads(cpus)


@contextlib.contextmanager
def _standard_streams() -> Iterator[None]:
    """Printing never stops a command: an encoding that lacks a character (``PYTHONIOENCODING=ascii``,
    say) gets it escaped, a closed stdout or stderr (``>&-``) is a sink, and a stream that fails
    is one (see ``_Stream``)."""
    saved = sys.stdout, sys.stderr
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            stream = _Discard()
        elif isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            with contextlib.suppress(Exception):
                stream.reconfigure(errors="backslashreplace")
        setattr(sys, name, _Stream(stream, escape=name == "stdout"))  # stderr: the progress bars' own codes
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        sys.stdout, sys.stderr = saved


def _output_lost() -> str | None:
    """Why standard output is incomplete (a full device, say), or None: a reader that went away
    (``| head``) had all it wanted."""
    failed = getattr(sys.stdout, "failed", None)
    if failed is None or isinstance(failed, BrokenPipeError):
        return None
    return f"standard output: {failed.strerror or failed}; what was printed is incomplete"


def _error(text: str, e: BaseException | None = None) -> None:
    """The one line of a failure; in a process of a ``--nproc`` job, left for its launcher to say once."""
    from .launch import leave_error

    if leave_error(one_line(text), isinstance(e, PeerStopped), getattr(e, "then", "")):
        return
    print(f"{_ERROR_PREFIX}: error: {one_line(text)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr with exit code 2 (130 when interrupted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    with _standard_streams():
        try:
            return _main(argv)
        except KeyboardInterrupt:  # a signal before the command's own handling began (a sweep gone at the start)
            return _interrupted()


def _interrupted() -> int:
    """The line and exit code of a command stopped by a signal where no checkpoint was to be saved."""
    from .launch import INTERRUPTED

    _say_stopped(INTERRUPTED)
    return 130


def _say_stopped(line: str) -> None:
    """The line of a command stopped by a signal. Under torchrun the other processes were stopped with
    the job and rank 0 speaks; in a process of a ``--nproc`` job it is left for the launcher."""
    from .launch import leave_stop

    if _ERROR_PREFIX == "vaekit" and not leave_stop(one_line(line)):
        print(f"vaekit: {one_line(line)}", file=sys.stderr)


def _main(argv: list[str]) -> int:
    if not argv:
        print(commands_text())
        return 0
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    _common_before_command(args)
    try:
        os.getcwd()
    except OSError:  # torch's MKL, loading, would end the process with a FATAL line and exit code 2
        _error("the current folder no longer exists (deleted or moved away); cd into a folder that does and run "
               "the command again")
        return 2
    try:
        empty = _expand_home(args)
    except VaekitError as e:
        _error(str(e))
        return 2
    if empty:
        _error(f"{empty}: an empty path; give a file or folder name")
        return 2
    misplaced = _dependent_flags(args)
    if misplaced:
        _error(misplaced)
        return 2
    func: Callable[[argparse.Namespace], int] = args.func
    args.argv = argv
    _threads_within_the_container(args)
    rank = os.environ.get("RANK", "0") if "WORLD_SIZE" in os.environ else "0"
    if rank != "0":  # under torchrun, rank 0 speaks for the job; the others only report their own errors
        sys.stdout = _Discard()
        global _ERROR_PREFIX
        _ERROR_PREFIX = f"vaekit (rank {show(rank)})"
    hook = sys.unraisablehook
    try:
        with stop_signals_to(_terminate):
            sys.unraisablehook = _interrupt_again
            follow_parent()  # a sweep's child: stops (as on SIGTERM) when the sweep dies, at once if it has
            return _run(func, args)
    finally:
        sys.unraisablehook = hook


PATH_ARGS = ("run_dir", "run_dirs", "run_a", "run_b", "resume", "out", "o", "config", "data_dir", "labels")


def _expand_home(args: argparse.Namespace) -> str | None:
    """A leading ``~`` in any path argument is the home folder, also where the shell left it alone
    (quoted, or passed by a script): never a folder named ``~`` in the current one. Returns the
    argument given as an empty string (an unset shell variable, say), which no command accepts."""
    expand = lambda v: type(v)(expand_home(os.fspath(v))) if isinstance(v, (str, Path)) else v  # noqa: E731
    for name in PATH_ARGS:
        value = getattr(args, name, None)
        if value is None:
            continue
        if any(isinstance(v, str) and not v.strip() for v in (value if isinstance(value, list) else [value])):
            return name.upper() if name.startswith("run") else f"--{name.replace('_', '-')}"
        setattr(args, name, [expand(v) for v in value] if isinstance(value, list) else expand(value))
    return None


def _run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """The one error path: whatever goes wrong becomes one line on stderr and an exit code."""
    from . import budget

    ok = [False]
    try:
        if func is not cmd_presets:
            _import_whole()
        with _dependency_warnings(ok), budget.limits(args.max_memory, args.max_ratio):
            code = func(args)
            ok[0] = True
        sys.stdout.flush()
        lost = _output_lost()
        if lost:
            _error(lost + ("; the command's work is done" if code == 0 else ""))
            return 2
        return code
    except VaekitError as e:
        _error(str(e), e)
        return 2
    except OSError as e:  # a path the user gave that cannot be read or written
        where = f"{e.filename}: " if e.filename else ""
        _error(f"{where}{e.strerror or e}; check the path and its permissions")
        return 2
    except TrainingInterrupted as e:
        _say_stopped(str(e))
        return 130
    except KeyboardInterrupt as e:
        if isinstance(e.__context__, VaekitError):  # the signal landed while an error unwound: the error is the news
            _error(str(e.__context__), e.__context__)
            return 2
        return _interrupted()
    except Exception as e:  # a bug in vaekit: still one line, with a way to see the traceback
        short = _out_of_memory(e)
        if short:
            _error(short)
            return 2
        if os.environ.get("VAEKIT_DEBUG"):
            raise
        _error(f"internal error {type(e).__name__}: {e} (a bug in vaekit; rerun with VAEKIT_DEBUG=1 for the "
               "traceback and please report it)")
        return 1


def _out_of_memory(e: Exception) -> str | None:
    """The line for an allocation that failed, or None: Python's MemoryError, and torch's own errors
    for the CPU's allocator and a GPU's (RuntimeErrors, which were reported as bugs in vaekit)."""
    text = str(e)
    if not isinstance(e, MemoryError) and not (
            isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)):
        return None
    if "CUDA" in text or "MPS" in text:
        return (f"out of GPU memory ({brief(e)}); the training data and the model live on the GPU: use a smaller "
                "--batch-size or --eval-batch-size, fewer or smaller examples (--image-size), a smaller model, "
                "or --device cpu")
    from .budget import human

    asked = re.search(r"allocate (\d+) bytes", text)
    size = f" (an allocation of {human(int(asked.group(1)))} failed)" if asked else ""
    return (f"out of memory{size}; lower --max-memory so vaekit refuses such inputs up front, or use a smaller "
            "model, batch or data set")


# The compiled modules every command but `presets` loads at its start, and loads whole.
WHOLE_IMPORTS = ("torch", "safetensors.torch")


def _import_whole() -> None:
    """Import WHOLE_IMPORTS with the stop signals noted, not raised, until they are done, then send
    the first again. A KeyboardInterrupt inside a compiled module's initialisation (numpy's C core
    under torch's, safetensors' Rust core) was swallowed, so the command went on as if never stopped,
    or left the module half made: an ImportError later, reported as an internal error."""
    if all(name in sys.modules for name in WHOLE_IMPORTS):
        return
    came: list[int] = []
    with stop_signals_to(lambda signum, frame: came.append(signum)):
        for name in WHOLE_IMPORTS:
            importlib.import_module(name)
    if came:
        signal.raise_signal(came[0])


if __name__ == "__main__":
    sys.exit(main())
