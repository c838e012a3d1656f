"""Every plot function writes a non-empty PNG of the expected pixel size; run-level plotting,
the report, compare, probe and anomaly on real runs."""

from __future__ import annotations

import base64
import io
import json
import re
import warnings

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from vaekit import plots
from vaekit.checkpoint import load_run
from vaekit.cli import main
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.figures import PLOTS, plot_run
from vaekit.models import build_model
from vaekit.report import report_run
from vaekit.train import fit

QUIET = dict(progress=False, log=lambda s: None)


def _png_size(path):
    assert path.stat().st_size > 1000
    with Image.open(path) as im:
        return im.size


def _history(n=4, dims=3):
    return [{"epoch": e, "beta": min(1, e / 2), "train_loss": 10 - e, "train_recon": 8 - e, "train_kl": 2.0,
             "test_loss": 10.5 - e, "test_recon": 8.2 - e, "test_kl": 2.3, "test_kl_per_dim": [0.0, 1.0, 1.3][:dims],
             "seconds": 1.0} for e in range(1, n + 1)]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(ModelConfig(hidden=[16], latent_dim=3), (1, 8, 8)).eval()


def _cases(model):
    x = torch.rand(10, 1, 8, 8)
    vectors = build_model(ModelConfig(hidden=[16], latent_dim=3, likelihood="gaussian"), (300,)).eval()
    codes, labels = np.random.default_rng(0).normal(size=(300, 3)), np.arange(300) % 4
    return {
        "training_curves": (plots.training_curves(_history()), (1500, 800)),
        "kl_per_dimension": (plots.kl_per_dimension([0.0, 1.2, 3.4]), (800, 400)),
        "compare_curves": (plots.compare_curves({"a": _history(), "b": _history(6)}), (900, 550)),
        "latent_scatter_2d": (plots.latent_scatter(codes[:, :2], labels), (700, 650)),
        "latent_scatter_pca_tsne": (plots.latent_scatter(codes, labels, tsne_points=150), (1300, 650)),
        "latent_grid": (plots.latent_grid(model, 15), (900, 900)),
        "samples": (plots.image_grid_figure(model.sample(16), "s", ncol=8), (880, 270)),
        "real_vs_generated": (plots.real_vs_generated(x, model.sample(16)), (880, 500)),
        "reconstructions": (plots.reconstructions(x[:5], model.reconstruct(x[:5])), (700, 460)),
        "error_histogram": (plots.error_histogram(np.random.default_rng(0).gamma(2, 0.01, 500)), (800, 500)),
        "interpolation": (plots.interpolation(model, x[0], x[1], steps=6), (780, 340)),
        "traversals": (plots.traversals(model, torch.zeros(3), [0, 2], [-2, 0, 2]), (450, 290)),
        "compare": (plots.compare_latents([codes[:, :2], codes], [x[:4].numpy(), x[4:8].numpy()], ["a", "b"],
                                          labels), (1400, 840)),
        "vector_real_vs_generated": (plots.vector_real_vs_generated(codes, codes[::-1] * 0.5, "N(0, I)"), (1400, 550)),
        "vector_reconstructions": (plots.vector_reconstructions(codes, codes * 0.9, labels), (1500, 600)),
        "vector_interpolation": (plots.vector_interpolation(vectors, torch.rand(300), torch.rand(300)), (1200, 600)),
        "vector_traversals": (plots.vector_traversals(vectors, torch.zeros(3), [0, 2]), (1200, 360)),
        "scores": (plots.score_histograms(np.random.rand(100), np.random.rand(20) + 1, 0.9, "nelbo"), (800, 500)),
        "confusion": (plots.confusion_matrix(labels, (labels + (np.arange(300) % 7 == 0)) % 4), (700, 600)),
    }


def test_compare_latents_takes_a_one_dimensional_latent_and_non_finite_codes():
    """A run with --latent-dim 1 beside a 3-d one: compare failed inside PCA (an internal error)."""
    rng = np.random.default_rng(0)
    one, three = rng.normal(size=(50, 1)), rng.normal(size=(50, 3))
    three[4] = np.nan
    fig = plots.compare_latents([one, three], None, ["one", "three"], np.arange(50) % 3)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("one: range") and "(PCA)" in titles[1] and "1 not finite left out" in titles[1]
    assert plots.embed_2d(one, "pca").shape == (50, 2) and plots.embed_2d(three[:4], "tsne").shape == (4, 2)


def test_a_one_dimensional_latent_is_decoded_along_a_line_not_a_grid_of_repeated_rows():
    torch.manual_seed(0)
    line = build_model(ModelConfig(hidden=[16], latent_dim=1), (1, 8, 8)).eval()
    fig = plots.latent_grid(line, 15)
    shown = fig.axes[0].get_images()[0].get_array()
    assert shown.shape[0] < 12 and shown.shape[1] > 15 * 8 and "line, 15 points" in fig.axes[0].get_title()


def test_many_classes_get_a_colour_scale_and_thinned_names_not_a_legend_off_the_page():
    """150 classes (a class folder per identity, say): the scatter's legend collapsed the axes and its
    colours repeated; the confusion matrix wrote 150 overlapping names per axis."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(150), 4)
    fig = plots.latent_scatter(rng.normal(size=(600, 2)), labels)
    assert fig.axes[0].get_legend() is None and "150 classes" in fig.axes[1].get_ylabel()  # the colour bar
    few = plots.latent_scatter(rng.normal(size=(40, 2)), np.arange(40) % 4)
    assert len(few.axes[0].get_legend().get_texts()) == 4
    conf = plots.confusion_matrix(labels, labels).axes[0]
    assert len(conf.get_xticks()) <= 20 and not conf.texts
    y = rng.integers(0, 5000, 20000)
    wide = plots.confusion_matrix(y, np.where(rng.random(20000) < 0.7, y, 0)).axes[0]
    assert "200 most frequent classes" in wide.get_title() and wide.get_images()[0].get_array().shape == (200, 200)
    assert "accuracy 0.7" in wide.get_title()


def test_long_class_names_are_cut_where_figures_show_them():
    """Folder names of 200 characters collapsed the scatter's and the confusion matrix's axes."""
    names = ["a" * 200, "b" * 150 + " and more", "short"]
    labels = np.arange(30) % 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's 'constrained_layout not applied' was the symptom
        fig = plots.latent_scatter(np.random.default_rng(0).normal(size=(30, 2)), labels, names)
        fig.savefig(io.BytesIO())
        shown = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        conf = plots.confusion_matrix(labels, labels, names)
        conf.savefig(io.BytesIO())
    assert shown == ["a" * 23 + "…", "b" * 23 + "…", "short"]
    assert [t.get_text() for t in conf.axes[0].get_yticklabels()] == shown


def test_kl_per_dimension_names_bars_only_while_their_names_fit():
    fig = plots.kl_per_dimension([0.0, 1.2, 3.4])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["2", "1", "0"]
    kl = np.full(512, 1e-3)
    kl[[482, 7]] = [2.0, 1.0]
    ax = plots.kl_per_dimension(kl).axes[0]  # a spatial latent: 512 names under 512 bars would be a smear
    ax.figure.canvas.draw()
    assert len(ax.get_xticks()) < 12 and "512 latent dimensions" in ax.get_xlabel()
    assert "dims 482, 7," in ax.get_xlabel()


def test_compare_curves_puts_each_run_on_its_own_minutes():
    fast = [{**r, "train_seconds": 30.0} for r in _history(4)]
    slow = [{**r, "train_seconds": 120.0, "test_loss": r["test_loss"] - 1} for r in _history(3)]
    fig = plots.compare_curves({"fast": fast, "slow": slow})
    lines = fig.axes[0].get_lines()
    assert [list(line.get_xdata()) for line in lines] == [[0.5, 1.0, 1.5, 2.0], [2.0, 4.0, 6.0]]
    assert list(lines[1].get_ydata()) == [r["test_loss"] for r in slow]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "fast (6.50 after 4 epochs)", "slow (6.50 after 3 epochs)"]


def test_compare_curves_draws_no_two_runs_alike_past_the_colour_cycle():
    """Eleven runs and more (the NLL figure has them): past the colours, the line style changes."""
    fig = plots.compare_curves({f"run {i}": _history(3) for i in range(23)})
    looks = [(matplotlib.colors.to_hex(line.get_color()), line.get_linestyle()) for line in fig.axes[0].get_lines()]
    assert len(looks) == 23 and len(set(looks)) == 23


def test_each_plot_function_writes_a_png_of_the_expected_size(model, tmp_path):
    for name, (fig, size) in _cases(model).items():
        assert _png_size(plots.save_figure(fig, tmp_path / f"{name}.png")) == size, name


def test_slerp_keeps_endpoints_and_norm_path():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    path = plots.slerp(a, b, torch.linspace(0, 1, 5))
    assert torch.allclose(path[0], a) and torch.allclose(path[-1], b, atol=1e-6)
    same = plots.slerp(a, a, torch.linspace(0, 1, 3))
    assert torch.allclose(same, a.repeat(3, 1))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    cfg = RunConfig(seed=1, data=DataConfig(dataset="digits", test_fraction=0.2),
                    model=ModelConfig(hidden=[64], latent_dim=4), train=TrainConfig(epochs=4, lr=3e-3, batch_size=64))
    return fit(cfg, tmp_path_factory.mktemp("plots") / "vae", **QUIET).path


def test_plot_run_writes_every_plot(digits_run):
    written = plot_run(digits_run)
    assert set(written) == set(PLOTS)
    for path in written.values():
        assert path.parent == digits_run / "plots" and _png_size(path)[0] > 300
    only = plot_run(digits_run, out_dir=digits_run / "few", only=["samples", "curves"])
    assert set(only) == {"samples", "curves"}


def test_a_damaged_history_costs_only_the_curves_said_in_a_warning(digits_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("plots", "few"))
    (run / "history.jsonl").write_text('{"epoch": 1, "test_loss": "x"}\n')
    with pytest.warns(UserWarning, match='line 1: "test_loss": "x" is not a number; the training curves are left out'):
        written = plot_run(run)
    assert set(written) == set(PLOTS) - {"curves"}
    from vaekit.evaluate import evaluate_run

    (run / "metrics.json").unlink(missing_ok=True)
    with pytest.warns(UserWarning, match="the model card leaves out the training record"):
        m = evaluate_run(run, iwae_k=2, progress=False)  # was: 'metrics.json not written', though it was
    assert "not_saved" not in m and (run / "metrics.json").is_file() and "for ? of" in (run / "README.md").read_text()


def test_report_embeds_every_plot_and_metric(digits_run):
    page = report_run(digits_run, iwae_k=20).read_text()
    assert page.count("data:image/png;base64,") == len(PLOTS)
    for name in PLOTS:
        assert f'id="{name}"' in page
    for label in ("negative ELBO", "IWAE estimate", "bits per dimension", "active latent units",
                  "per-example MSE: median", "KL per latent dimension"):
        assert label in page
    assert f"vaekit train --config {digits_run}/config.json" in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "<script" not in page
    first = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page).group(1)
    assert base64.b64decode(first)[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_evaluate_plot_report(digits_run, capsys, tmp_path):
    assert main(["evaluate", str(digits_run), "--json", "--iwae-k", "30"]) == 0
    m = json.loads(capsys.readouterr().out)
    for key in ("loss", "recon", "kl", "n", "nll_iwae", "iwae_k", "bits_per_dim", "kl_per_dim", "active_units",
                "mse_mean", "mse_median", "mse_std", "mse_min", "mse_max"):
        assert key in m, key
    assert m["nll_iwae"] <= m["loss"] and m["iwae_k"] == 30
    assert main(["evaluate", str(digits_run), "--iwae-k", "10"]) == 0
    assert "IWAE estimate" in capsys.readouterr().out
    assert main(["plot", str(digits_run), "--only", "latent-grid", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "latent-grid.png").exists()
    assert main(["plot", str(digits_run), "--only", "latent-grid", "--grid-dims", "1", "3", "--out",
                 str(tmp_path / "dims")]) == 0
    assert _png_size(tmp_path / "dims" / "latent-grid.png") == (900, 900)
    first = (tmp_path / "dims" / "latent-grid.png").read_bytes()  # spelled as other lists are: 1,3
    assert main(["plot", str(digits_run), "--only", "latent-grid", "--grid-dims", "1,3", "--out",
                 str(tmp_path / "dims")]) == 0
    assert (tmp_path / "dims" / "latent-grid.png").read_bytes() == first
    assert main(["plot", str(digits_run), "--only", "curves,samples", "kl-per-dim", "--out", str(tmp_path / "some")]) == 0
    assert sorted(p.name for p in (tmp_path / "some").iterdir()) == ["curves.png", "kl-per-dim.png", "samples.png"]
    assert main(["plot", str(digits_run), "--only", "latent-grid", "--grid-dims", "1", "9"]) == 2
    assert "--grid-dims 1 9" in capsys.readouterr().err
    assert main(["plot", str(digits_run), "--only", "nope"]) == 2
    assert "unknown plot 'nope'" in capsys.readouterr().err


def test_compare_ae_and_vae(digits_run, tmp_path, capsys):
    cfg = json.loads((digits_run / "config.json").read_text())
    cfg["model"]["kind"] = "ae"
    (tmp_path / "ae.json").write_text(json.dumps(cfg))
    assert main(["train", "--config", str(tmp_path / "ae.json"), "--out", str(tmp_path / "ae"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "ae"), str(digits_run), "-o", str(tmp_path / "cmp.png")]) == 0
    out = capsys.readouterr().out
    assert "latent range" in out and "std" in out and out.count("latent range") == 2
    assert main(["compare", str(digits_run), str(digits_run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["negative_elbo"]["difference"] == 0 and result["plot"].endswith("compare.png")
    assert _png_size(tmp_path / "cmp.png")[0] == 1400


def test_probe_on_mnist_latents_beats_chance_by_far(mnist, tmp_path):
    from vaekit.downstream import probe

    cfg = RunConfig(seed=0, data=DataConfig(dataset="mnist"), model=ModelConfig(hidden=[256], latent_dim=8),
                    train=TrainConfig(epochs=1, batch_size=128))
    run = fit(cfg, tmp_path / "m", data=mnist, **QUIET)
    small = type(mnist)("mnist", mnist.train_x[:20000], mnist.train_y[:20000], mnist.test_x, mnist.test_y,
                        scale=mnist.scale)
    result = probe(run.model, small)
    assert result["linear_accuracy"] == (result["linear_predicted"] == result["y_test"]).mean()
    assert result["chance"] < 0.12
    assert result["linear_accuracy"] > 0.75 and result["knn_accuracy"] > 0.85, result


def test_probe_cli_writes_json_and_confusion_matrix(digits_run, capsys, tmp_path):
    assert main(["probe", str(digits_run), "--json", "-o", str(tmp_path / "cm.png")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["chance"] < result["linear_accuracy"] <= 1 and result["n_test"] == 359
    assert _png_size(tmp_path / "cm.png") == (700, 600)


def test_anomaly_cli_trains_with_a_held_out_class(tmp_path, capsys):
    out = tmp_path / "anom"
    assert main(["anomaly", "--preset", "digits-mlp", "--holdout-class", "0", "--epochs", "30", "--out", str(out),
                 "--no-progress", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["holdout_classes"] == [0] and result["n_anomalous"] > 20
    assert 0.5 < result["auroc"] <= 1.0
    assert _png_size(out / "plots" / "anomaly-scores.png") == (800, 500)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"]["holdout_classes"] == [0]
    assert main(["anomaly", str(out), "--iwae-k", "10", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["score"].startswith("IWAE")


def test_curves_show_the_learning_rate_when_recorded():
    without = plots.training_curves(_history())
    with_lr = plots.training_curves([{**r, "lr": 1e-3 / r["epoch"]} for r in _history()])
    assert len(with_lr.axes) == len(without.axes) + 1
    twin = with_lr.axes[-1]
    assert twin.get_ylabel() == "learning rate" and twin.lines[0].get_ydata()[0] == pytest.approx(1e-3)


def test_plots_of_arrays_with_non_finite_values_leave_them_out_and_say_so(tmp_path):
    """A model can meet inputs that overflow it: the histograms and the latent map draw the finite
    values and count the others in their title instead of failing."""
    errors = np.array([1.0, np.inf, 2.0, np.nan, 3.0] * 20)
    codes = np.random.default_rng(0).normal(size=(100, 5))
    codes[3, 1], codes[7, 0] = np.nan, -np.inf
    figs = {"hist": plots.error_histogram(errors), "none": plots.error_histogram(np.array([np.inf, np.nan])),
            "scatter": plots.latent_scatter(codes, np.arange(100) % 3, tsne_points=50),
            "scatter2": plots.latent_scatter(codes[:, :2], np.arange(100) % 3)}
    for name, fig in figs.items():
        assert _png_size(plots.save_figure(fig, tmp_path / f"{name}.png"))[0] > 300
    assert "40 of 100 not finite" in figs["hist"].axes[0].get_title()
    assert "2 of 2 not finite" in figs["none"].axes[0].get_title()
    assert "2 of 100 not finite" in figs["scatter"].axes[0].get_title()
    assert "2 of 100 not finite" in figs["scatter2"].axes[0].get_title()


def test_the_smallest_data_sets_go_through_every_command(tmp_path):
    """Two images (one of them the whole test split), two vectors, an AE of them, and a conditional run
    with one test example: every plot, the report, the explorer and the metrics work (PCA of one code,
    a principal plane from one code), and what cannot be measured is a one-line refusal."""
    import warnings

    import vaekit
    from vaekit.errors import VaekitError

    (tmp_path / "two").mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8), 60 * i, np.uint8)).save(tmp_path / "two" / f"{i}.png")
    for c in "ab":
        (tmp_path / "cls" / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((8, 8), 20 * i + (c == "b") * 100, np.uint8)).save(tmp_path / "cls" / c / f"{i}.png")
    np.save(tmp_path / "two.npy", np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0]], np.float32))
    small = {"train.epochs": 1, "train.batch_size": 1, "model.hidden": "8", "model.latent_dim": 3}
    runs = {name: vaekit.fit(vaekit.config_for_data(dataset, {**small, **extra}, progress=False, log=lambda s: None)[0],
                             tmp_path / name, progress=False, log=lambda s: None).path
            for name, dataset, extra in (("images", f"folder:{tmp_path / 'two'}", {}),
                                         ("vectors", f"vectors:{tmp_path / 'two.npy'}", {}),
                                         ("ae", f"vectors:{tmp_path / 'two.npy'}", {"model.kind": "ae"}),
                                         ("cvae", f"folder:{tmp_path / 'cls'}", {"model.conditional": True}))}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may warn either (the spread of one code is 0, not NaN)
        for path in runs.values():
            assert vaekit.evaluate_run(path, iwae_k=5, progress=False)["n"] >= 1
            assert report_run(path, iwae_k=0).is_file()  # which draws every plot that applies
            explorer = vaekit.Explorer(path, log=lambda s: None)
            assert explorer.info()["latent_dim"] == 3 and explorer.map_points()
            with pytest.raises(VaekitError, match="--generation compares at least 10 samples"):
                vaekit.evaluate_run(path, iwae_k=0, generation=True, generation_n=10, progress=False)


def test_file_names_that_are_not_utf8_are_shown_not_fatal(tmp_path):
    """Linux file names are bytes: a folder and a class named in Latin-1 (kept by Python as lone
    surrogates) train, plot, report, compare and are served; what is shown has U+FFFD in their place."""
    import os

    import vaekit
    from vaekit.errors import as_text

    root = tmp_path / os.fsdecode(b"caf\xe9")
    try:
        for c in (b"\xe9t\xe9", b"plain"):
            (root / os.fsdecode(c)).mkdir(parents=True)
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    for c in (b"\xe9t\xe9", b"plain"):
        for i in range(6):
            Image.fromarray(np.full((8, 8), 30 * i + 10 * len(c), np.uint8)).save(root / os.fsdecode(c) / f"{i}.png")
    cfg, data = vaekit.config_for_data(f"folder:{root}", {"train.epochs": 1, "model.hidden": "8", "model.latent_dim": 2,
                                                          "model.conditional": True}, progress=False, log=lambda s: None)
    run = vaekit.fit(cfg, tmp_path / os.fsdecode(b"run \xe9"), data=data, progress=False, log=lambda s: None).path
    assert data.class_names == ["plain", "\ufffdt\ufffd"]
    plot_run(run)
    vaekit.compare_runs(run, run, tmp_path / "c.png")
    assert "caf\ufffd" in report_run(run, iwae_k=0).read_text(encoding="utf-8")
    assert vaekit.evaluate_run(run, iwae_k=0, progress=False)["dataset"] == f"folder:{root}"  # the path still works
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from vaekit.server import create_app

    client = TestClient(create_app([vaekit.Explorer(run, log=lambda s: None)]), base_url="http://127.0.0.1")
    answer = client.get("/api/runs")
    assert answer.status_code == 200 and as_text(str(root)) in answer.json()[0]["dataset"]


@pytest.mark.parametrize("anomalous", [np.array([50.0]), np.array([-3.0, 40.0]), np.full(5, 0.5)])
def test_score_histograms_show_every_score_even_far_outside_the_rest(anomalous):
    """A lone held-out score beyond the common range (a test split of a few examples) is drawn in the
    edge bin: no empty histogram, no 0/0 density warning; equal scores everywhere still make bins."""
    normal = np.full(4, 0.5) if len(anomalous) == 5 else np.random.default_rng(0).normal(size=40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plots.score_histograms(normal, anomalous, 1.0, "nelbo")
    bars = fig.axes[0].containers
    assert len(bars) == 2 and all(np.isfinite([b.get_height() for b in c]).all() for c in bars)
    assert all(sum(b.get_height() for b in c) > 0 for c in bars)


def test_a_vector_traversal_names_the_features_each_dimension_moves():
    """A decoder that ignores z[1] and reads z[0] into feature 4 alone: z[1]'s map is blank, z[0]'s names feature 4."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=[], latent_dim=3, likelihood="gaussian"), (6,)).eval()
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.in_features == 3)
    with torch.no_grad():
        first.weight.zero_()
        first.weight[4, 0] = 2.0
    fig = plots.vector_traversals(model, torch.zeros(3), [0, 1])
    titles = [ax.get_title(loc="left") for ax in fig.axes[:2]]
    assert titles[0].startswith("z[0] moves features 4,") and "(up to 6)" in titles[0], titles
    assert titles[1].endswith("(up to 0)"), titles


@pytest.mark.parametrize("real,recon", [
    (np.arange(6.0).reshape(6, 1), np.arange(6.0).reshape(6, 1) + 0.1),  # one feature
    (np.ones((3, 5)), np.full((3, 5), np.nan)),  # no spread, reconstructions not finite
    (np.random.default_rng(1).normal(size=(2, 300)), np.zeros((2, 300))),  # two examples, many features
])
def test_vector_pictures_take_any_shape_of_vectors(real, recon, tmp_path):
    """One feature (no second principal direction), constant values (no R²), two examples."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name, fig in (("rvg", plots.vector_real_vs_generated(real, recon if np.isfinite(recon).all() else real)),
                          ("rec", plots.vector_reconstructions(real, recon))):
            assert _png_size(plots.save_figure(fig, tmp_path / f"{name}.png"))[0] > 1000
    r2 = plots.vector_reconstructions(real, recon).axes[-1].get_title()
    assert ("R² = nan" in r2) == (not np.isfinite(recon).all() or real.std() == 0), r2


def test_a_vector_run_gets_its_reconstructions_and_samples_against_the_real_data(tmp_path):
    """Vectors (embeddings, tables) had no reconstruction, sample, interpolation or traversal picture:
    now feature by feature, on the real data's principal plane (with the share of variance the
    reconstructions keep) and as heat maps of the decoded vectors."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "v.npy", (np.tanh(rng.normal(size=(400, 3)) @ rng.normal(size=(3, 12))) + 0.05 *
                                 rng.normal(size=(400, 12))).astype(np.float32))
    run = fit(RunConfig(data=DataConfig(dataset=f"vectors:{tmp_path / 'v.npy'}"),
                        model=ModelConfig(hidden=[32], latent_dim=3, likelihood="gaussian", learn_sigma=True),
                        train=TrainConfig(epochs=12, lr=3e-3, batch_size=32)), tmp_path / "run", **QUIET).path
    written = plot_run(run)
    assert set(written) == set(PLOTS) - {"latent-grid", "samples"}  # an image's pictures only
    assert _png_size(written["reconstructions"]) == (1500, 600)
    title = plots.vector_reconstructions(np.load(tmp_path / "v.npy")[:40], load_run(run).model.reconstruct(
        torch.from_numpy(np.load(tmp_path / "v.npy")[:40]))).axes[-1].get_title()
    assert float(title.rpartition("= ")[2]) > 0.5, title  # a trained model keeps most of the variance
