"""Uses of a trained latent space: how much label information the codes keep (linear and kNN
probes) and anomaly detection with a held-out class (AUROC of the negative ELBO or IWAE NLL).
``probe_run`` and ``anomaly_run`` are `vaekit probe` and `vaekit anomaly`: the same from a run
folder, with their figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import Dataset
from .errors import VaekitError, whole_number
from .evaluate import elbo_per_example, iwae_nll, latent_means
from .files import user_path
from .models import LatentModel


def probe(model: LatentModel, data: Dataset, knn_k: int = 5, seed: int = 0) -> dict[str, Any]:
    """Accuracy of logistic regression and kNN fitted on train-set codes, scored on test codes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if data.train_y is None or data.test_y is None:
        raise VaekitError(f"{data.name}: has no labels; a probe needs labelled data")
    z_train = latent_means(model, data, "train").cpu().numpy()
    z_test = latent_means(model, data, "test").cpu().numpy()
    y_train, y_test = data.train_y.cpu().numpy(), data.test_y.cpu().numpy()
    if min(y_train.min(), y_test.min()) < 0:
        raise VaekitError(f"{data.name}: labels must be class numbers >= 0, found {int(min(y_train.min(), y_test.min()))}")
    if len(np.unique(y_train)) < 2:
        raise VaekitError(f"{data.name}: the training labels hold a single class; a probe needs at least two")
    if knn_k > len(y_train):
        raise VaekitError(f"-k {knn_k}: more neighbours than the {len(y_train)} training examples")
    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    linear.fit(z_train, y_train)
    knn = KNeighborsClassifier(n_neighbors=knn_k).fit(z_train, y_train)
    counts = np.bincount(y_test)
    predicted = linear.predict(z_test)
    note = {"note": "a conditional model's encoder is given the label, so its codes can carry the label by "
                    "construction; a high accuracy here says nothing about what z learned"} if model.classes else {}
    return {
        **note,
        "linear_accuracy": float((predicted == y_test).mean()),
        "knn_accuracy": float((knn.predict(z_test) == y_test).mean()),
        "knn_k": knn_k,
        "chance": float(counts.max() / counts.sum()),
        "n_train": len(y_train), "n_test": len(y_test), "latent_dim": z_train.shape[1],
        "y_test": y_test, "linear_predicted": predicted,
    }


def anomaly_scores(
    model: LatentModel, data: Dataset, holdout: list[int], iwae_k: int = 0, seed: int = 0, progress: bool = True
) -> dict[str, Any]:
    """Score each test example (negative ELBO, IWAE NLL, or the AE's reconstruction NLL) and
    report the AUROC of held-out classes against the classes seen in training."""
    from sklearn.metrics import roc_auc_score

    if data.test_y is None:
        raise VaekitError(f"{data.name}: has no labels, so held-out classes cannot be found")
    if not holdout:
        raise VaekitError("this run held no class out of training; train with --holdout-class C")
    if iwae_k > 0 and model.variational:
        scores, name = iwae_nll(model, data, iwae_k, seed=seed, progress=progress), f"IWAE NLL (k={iwae_k})"
    else:
        recon, kl, _ = elbo_per_example(model, data, "test", seed=seed)
        scores = recon + kl
        name = "negative ELBO" if model.variational else "reconstruction NLL"
    scores = scores.cpu().numpy()
    is_anomaly = torch.isin(data.test_y, torch.tensor(holdout, device=data.test_y.device)).cpu().numpy()
    if is_anomaly.all() or not is_anomaly.any():
        raise VaekitError("the test split needs examples of both held-out and seen classes")
    note = {"note": "a conditional model scores each example given its own label, the held-out classes' too "
                    "(labels it never saw in training)"} if model.classes else {}
    return {
        **note,
        "auroc": float(roc_auc_score(is_anomaly, scores)),
        "score": name, "holdout_classes": list(holdout),
        **({"holdout_names": [data.class_names[c] for c in holdout]}  # where the data name their classes
           if data.class_names and all(c < len(data.class_names) and data.class_names[c] != str(c) for c in holdout)
           else {}),
        "n_anomalous": int(is_anomaly.sum()), "n_normal": int((~is_anomaly).sum()),
        "mean_score_anomalous": float(scores[is_anomaly].mean()),
        "mean_score_normal": float(scores[~is_anomaly].mean()),
        "scores": scores, "is_anomaly": is_anomaly,
    }


def _figure_path(run_dir: Path, out: str | Path | None, name: str) -> Path:
    from .files import output_file

    return output_file(out, (".png",), "-o") if out is not None else run_dir / "plots" / name


def probe_run(run_dir: str | Path, k: int = 5, out: str | Path | None = None,
              data_dir: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """`vaekit probe`: the probe's accuracies for a run, with its confusion matrix written to ``out``
    (default RUN_DIR/plots/probe-confusion.png, named in the result as "plot")."""
    from .figures import open_run
    from .plots import confusion_matrix, save_figure
    from .runlock import writing_into

    run_dir = user_path(run_dir, "run_dir")
    out = _figure_path(run_dir, out, "probe-confusion.png")
    k = whole_number(k, "-k")
    with writing_into(run_dir, [out], "probe", "-o FILE.png", data_dir):
        view = open_run(run_dir, data_dir=data_dir, device=device)
        full = probe(view.model, view.data, knn_k=k)
        save_figure(confusion_matrix(full["y_test"], full["linear_predicted"], view.data.class_names), out)
    return {**{key: v for key, v in full.items() if key not in ("y_test", "linear_predicted")}, "plot": str(out)}


def anomaly_run(run_dir: str | Path, iwae_k: int = 0, out: str | Path | None = None,
                data_dir: str | None = None, progress: bool = True, device: str = "cpu") -> dict[str, Any]:
    """`vaekit anomaly RUN_DIR`: the AUROC of the classes a run held out of training (``holdout_classes``
    in its config), with the score histograms written to ``out`` (default RUN_DIR/plots/anomaly-scores.png)."""
    from .figures import open_run
    from .plots import save_figure, score_histograms
    from .runlock import writing_into

    run_dir = user_path(run_dir, "run_dir")
    out = _figure_path(run_dir, out, "anomaly-scores.png")
    iwae_k = whole_number(iwae_k, "--iwae-k", lo=0)
    with writing_into(run_dir, [out], "anomaly", "-o FILE.png", data_dir):
        view = open_run(run_dir, data_dir=data_dir, device=device)
        result = anomaly_scores(view.model, view.data, view.run.config.data.holdout_classes, iwae_k,
                                view.seed, progress=progress)
        scores, is_anomaly = result.pop("scores"), result.pop("is_anomaly")
        save_figure(score_histograms(scores[~is_anomaly], scores[is_anomaly], result["auroc"], result["score"]), out)
    return {**result, "plot": str(out)}
