"""The explorer page driven in a real headless Chromium (Debian's package, through Playwright): load,
hover and click the map, move a slider with the keyboard, interpolate, ask for more samples; each
view's screenshot must show something.

Runs on small digits models by default. ``VAEKIT_SERVE_RUNS=RUN_A[,RUN_B]`` explores given runs
instead and ``VAEKIT_SCREENSHOTS=DIR`` keeps the screenshots (README's pictures come from here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (test extra)")
pytest.importorskip("starlette", reason="the serve extra (pip install -e '.[serve]') is not installed")

from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from vaekit.train import fit  # noqa: E402

CHROMIUM = os.environ.get("VAEKIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    pytest.skip("no Chromium executable (Debian: apt-get install chromium; or set VAEKIT_CHROMIUM); .ci/run "
                "installs it", allow_module_level=True)
# As the machine's notes advise: no sandbox as root, and no background connections to the closed network.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
VIEWS = ["map-panel", "slider-panel", "interp-panel", "samples-panel", "curves-panel"]


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory) -> list[str]:
    given = os.environ.get("VAEKIT_SERVE_RUNS")
    if given:
        return given.split(",")
    root = tmp_path_factory.mktemp("browser")
    dirs = []
    for name, kind, dim, conditional in [("vae", "vae", 4, False), ("ae", "ae", 2, True)]:  # a conditional AE
        cfg = RunConfig(seed=2, data=DataConfig(dataset="digits", test_fraction=0.2),
                        model=ModelConfig(kind=kind, hidden=[64], latent_dim=dim, conditional=conditional),
                        train=TrainConfig(epochs=4, batch_size=64, lr=3e-3))
        dirs.append(str(fit(cfg, root / name, progress=False, log=lambda s: None).path))
    return dirs


@contextlib.contextmanager
def serving(run_dirs: list[str], *flags: str) -> Iterator[str]:
    """A real `vaekit serve` process over the runs; yields its address, stops it with SIGINT."""
    proc = subprocess.Popen([sys.executable, "-m", "vaekit", "serve", *run_dirs, "--port", "0", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    while line.startswith("fitted a "):  # --sampler gmm: one line per mixture fitted, then the address
        line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise AssertionError(f"serve did not start: {line}{proc.stderr.read()}")
    try:
        yield line.split()[2]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


@contextlib.contextmanager
def browsing(browser: Any, address: str) -> Iterator[Any]:
    """A page of the headless Chromium on the explorer, loaded; ``page.errors`` gathers its script errors."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    try:
        page.goto(address)
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        page.errors = errors  # type: ignore[attr-defined]
        yield page
    finally:
        page.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(run_dirs):
    with serving(run_dirs, "--sampler", "gmm", "--components", "3") as address:
        yield address


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    keep = os.environ.get("VAEKIT_SCREENSHOTS")
    path = Path(keep) if keep else tmp_path_factory.mktemp("shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def page(browser, server):
    with browsing(browser, server) as page:
        yield page


def not_blank(path: Path) -> None:
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert pixels.std() > 10 and len(np.unique(pixels)) > 20, f"{path.name} looks blank"


def _src(page, selector: str) -> str:
    return page.locator(selector).first.get_attribute("src") or ""


def _changes(page, selector: str, before: str) -> None:
    page.wait_for_function("([sel, old]) => { const i = document.querySelector(sel); return i && i.src !== old; }",
                           arg=[selector, before], timeout=20_000)


def test_the_page_loads_with_every_view(page, shots):
    assert page.locator("section.run").count() >= 1 and not page.errors
    assert page.locator("#status").inner_text() in ("ready", "2 runs side by side")
    page.screenshot(path=shots / "explorer.png", full_page=True)
    not_blank(shots / "explorer.png")


def test_clicking_the_map_decodes_the_point(page, shots):
    run = page.locator("section.run").first
    canvas = run.locator("canvas.map")
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.2)
    sel = "section.run .decoded img"
    page.wait_for_selector(sel, timeout=20_000)
    before = _src(page, sel)
    page.mouse.click(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.75)
    _changes(page, sel, before)
    page.wait_for_timeout(300)
    run.locator(".map-panel").screenshot(path=shots / "map-panel.png")
    not_blank(shots / "map-panel.png")


def test_a_slider_moves_one_dimension(page, shots):
    run = page.locator("section.run").first
    sel = "section.run .slider-out img"
    page.wait_for_selector(sel, timeout=20_000)
    before = _src(page, sel)
    slider = run.locator(".sliders input[type=range]").first
    slider.focus()
    page.keyboard.press("End")  # the dimension with the most KL, to the end of its range
    _changes(page, sel, before)
    run.locator(".slider-panel").screenshot(path=shots / "slider-panel.png")
    not_blank(shots / "slider-panel.png")


def test_interpolation_and_more_samples(page, shots):
    run = page.locator("section.run").first
    run.locator(".interp-a").fill("3")
    run.locator(".interp-b").fill("11")
    run.locator(".interp-mode").select_option("slerp")
    run.locator(".interp-go").click()
    page.wait_for_function("document.querySelectorAll('section.run .interp-out img').length === 8", timeout=20_000)
    run.locator(".interp-panel").screenshot(path=shots / "interp-panel.png")
    not_blank(shots / "interp-panel.png")
    first = "section.run .samples-out img"
    before = _src(page, first)
    run.locator(".more").click()
    _changes(page, first, before)
    assert run.locator(".samples-out img").count() == 16
    run.locator(".samples-panel").screenshot(path=shots / "samples-panel.png")
    run.locator(".curves-panel").screenshot(path=shots / "curves-panel.png")
    for name in ("samples-panel.png", "curves-panel.png"):
        not_blank(shots / name)
    assert not page.errors, page.errors


def test_samples_switch_between_the_prior_and_the_fitted_mixture(page, shots):
    run = page.locator("section.run").first
    assert run.locator(".sampler-choice").is_visible() and run.locator(".sampler").input_value() == "prior"
    first = "section.run .samples-out img"
    page.wait_for_selector(first, timeout=20_000)
    before = _src(page, first)
    run.locator(".sampler").select_option("gmm")
    _changes(page, first, before)
    assert "3-component Gaussian mixture" in run.locator(".samples-panel h3").inner_text()
    run.locator(".samples-panel").screenshot(path=shots / "samples-gmm.png")
    not_blank(shots / "samples-gmm.png")
    ae = page.locator("section.run").nth(1)  # an autoencoder starts on the mixture: its prior means nothing
    assert ae.locator(".sampler").input_value() == "gmm"
    assert not page.errors, page.errors


def test_a_bad_request_from_the_page_shows_its_reason(page):
    run = page.locator("section.run").first
    run.locator(".interp-a").fill("999999")
    run.locator(".interp-go").click()
    page.wait_for_function("document.getElementById('status').className === 'error'", timeout=20_000)
    assert "a: 999999 is outside" in page.locator("#status").inner_text()


def test_a_conditional_run_decodes_the_class_picked(page, run_dirs):
    if os.environ.get("VAEKIT_SERVE_RUNS"):
        pytest.skip("the given runs are not the default conditional pair")
    plain, conditional = page.locator("section.run").nth(0), page.locator("section.run").nth(1)
    assert plain.locator(".class-row").is_hidden() and conditional.locator(".class-row").is_visible()
    assert conditional.locator(".class-pick option").count() == 10
    first = "section.run:nth-of-type(2) .samples-out img"
    page.wait_for_selector(first, timeout=20_000)
    before = _src(page, first)
    current = conditional.locator(".class-pick").input_value()
    conditional.locator(".class-pick").select_option(str((int(current) + 5) % 10))
    _changes(page, first, before)
    assert not page.errors, page.errors


def test_many_classes_get_distinct_colours_and_a_short_legend(browser, tmp_path, shots):
    """A conditional run on 30 classes: the map's colours repeated every ten classes (palette % 10) and
    the legend listed every class; now the hues spread over the classes and the legend names the ends."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(30):
        (tmp_path / "img" / f"c{c:02d}").mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / "img" / f"c{c:02d}" / f"{i}.png")
    cfg = RunConfig(seed=0, data=DataConfig(dataset=f"folder:{tmp_path / 'img'}", test_fraction=0.5),
                    model=ModelConfig(hidden=[16], latent_dim=2, conditional=True),
                    train=TrainConfig(epochs=1, batch_size=32))
    run = fit(cfg, tmp_path / "run", progress=False, log=lambda s: None).path
    with serving([str(run)]) as address, browsing(browser, address) as page:
        legend = page.locator("section.run .legend span")
        assert legend.count() == 3 and "30 classes" in legend.nth(1).inner_text()
        assert legend.nth(0).inner_text() == "c00" and legend.nth(2).inner_text() == "c29"
        colours = page.evaluate("[...document.querySelectorAll('section.run .legend i')].map(i => i.style.background)")
        assert len(set(colours)) == 2, colours
        page.locator("section.run .map").screenshot(path=shots / "many-classes-map.png")
        assert not page.errors, page.errors
