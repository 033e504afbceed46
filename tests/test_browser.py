"""The chapter's widgets in a real JupyterLab, in a real (headless) browser, driven as a learner would.

The test writes its own small notebook (:func:`write_widgets_notebook`) that calls the widget builders of
``course_lib.teaching.widgets``, so it does not depend on the chapter's notebooks' cells. It starts JupyterLab on
loopback with a random token (``browser_driver.JupyterLabServer``), opens that notebook in headless Chromium
(Debian's ``chromium``, through Playwright), runs all cells, and asserts that every code cell ran and none shows
an error (or writes to stderr). Then it moves sliders with the keyboard and asserts that each slider's readout,
the widget's text readout and its plot all change. Screenshots (PNG) go to ``artifacts/browser/``.

The server is stopped, kernels included, whatever happens (a fixture's ``finally``). Chromium missing: skipped
with the reason (``apt-get install chromium``), unless the environment variable ``CI`` is set, where it fails.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from browser_driver import CHROMIUM, CHROMIUM_FLAGS, JupyterLabServer, LabPage

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts" / "browser"
RUN_TIMEOUT_S = 600  # per notebook; a learner's machine under load can be slow

pytestmark = pytest.mark.browser


WIDGET_CELLS = [
    "from course_lib.teaching.widgets.margin_loss import build_margin_widget\nbuild_margin_widget()",
    "from course_lib.teaching.widgets.rank_loss import build_rank_loss_widget\nbuild_rank_loss_widget()",
    "from course_lib.teaching.widgets.bandit_tau import build_bandit_widget\n"
    "from course_lib.toyworld.bandit import load_d1_sweep\nbuild_bandit_widget(load_d1_sweep(), beta=0.5)",
]
PROBE_CELLS = [
    "import sys\nprint('a warning', file=sys.stderr)",
    "raise ValueError('probe error')",
    "print('never reached')",
]


def write_notebook(path: Path, sources: list[str]) -> None:
    """A notebook of code cells with a Python 3 kernel."""
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium), as .ci/run does"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so the browser test must run: {message}")
    pytest.skip(message)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server over a temporary root holding the widgets notebook and the detector's probe."""
    _require_chromium()
    pytest.importorskip("playwright.sync_api")
    root = tmp_path_factory.mktemp("lab_root")
    write_notebook(root / "widgets.ipynb", WIDGET_CELLS)
    write_notebook(root / "probe" / "errors.ipynb", PROBE_CELLS)
    server = JupyterLabServer(root, tmp_path_factory.mktemp("lab_state"), extra_env={"OMP_NUM_THREADS": "1"})
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def lab_page(lab, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        yield LabPage(page, lab)
    finally:
        context.close()


def run_notebook_and_check(lab_page: LabPage, path: str, shot: str) -> None:
    """Open, run all, screenshot; assert every code cell ran without error or stderr output."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    lab_page.open_notebook(path)
    state = lab_page.run_all_cells(timeout=RUN_TIMEOUT_S)
    print(f"{path}: {len(state['cells'])} code cells ran in {time.monotonic() - start:.0f} s")
    lab_page.page.screenshot(path=str(ARTIFACTS / f"{shot}_after_run_all.png"))
    errors = [(c["index"], c["source"], c["errors"]) for c in state["cells"] if c["errors"]]
    assert not errors, f"cells with errors in {path}: {errors}"
    stderr = [(c["index"], c["source"], c["stderr"]) for c in state["cells"] if c["stderr"]]
    assert not stderr, f"cells writing to stderr in {path}: {stderr}"
    not_run = [c["source"] for c in state["cells"] if c["count"] is None]
    assert not not_run, f"cells that did not run in {path}: {not_run}"
    # and nothing in the page renders a traceback either
    assert lab_page.page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() == 0


def move_slider_and_check(lab_page: LabPage, description: str, readout_selector: str, shot: str) -> dict:
    """Press ArrowRight on the slider; assert its readout, the widget's text and its plot change."""
    slider = lab_page.slider(description)
    widget = LabPage.widget_output(slider)
    widget.scroll_into_view_if_needed()
    image = widget.locator("img").first
    text = widget.locator(readout_selector).first
    image.wait_for(state="visible")
    before = {
        "readout": (slider.locator(".widget-readout").text_content() or "").strip(),
        "text": text.inner_text(),
        "image": lab_page.image_digest(image),
    }
    widget.screenshot(path=str(ARTIFACTS / f"{shot}_before.png"))
    lab_page.press_arrow(slider, "ArrowRight", times=3)
    after = dict(before)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the kernel redraws asynchronously
        after = {
            "readout": (slider.locator(".widget-readout").text_content() or "").strip(),
            "text": text.inner_text(),
            "image": lab_page.image_digest(image),
        }
        if all(after[k] != before[k] for k in before) and after["readout"]:  # (mid-redraw the readout is empty)
            break
        time.sleep(0.25)
    time.sleep(0.5)
    widget.screenshot(path=str(ARTIFACTS / f"{shot}_after.png"))
    for key in ("readout", "text", "image"):
        assert after[key] != before[key], f"{description}: the {key} did not change ({before[key]!r:.80})"
    return {"before": before["readout"], "after": after["readout"]}


def test_the_detector_sees_errors_stderr_and_cells_that_did_not_run(lab_page):
    """Control: the checks below would fail on a broken notebook (they read the notebook model, not pixels)."""
    lab_page.open_notebook("probe/errors.ipynb")
    state = lab_page.run_all_cells(timeout=120)
    cells = state["cells"]
    assert cells[0]["stderr"] == ["a warning\n"] and not cells[0]["errors"]
    assert cells[1]["errors"] == ["ValueError: probe error"]
    assert cells[2]["count"] is None


def test_missing_chromium_fails_under_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    import browser_driver
    import test_browser

    monkeypatch.setattr(test_browser, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        _require_chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        _require_chromium()
    assert Path("/usr/bin/chromium") == browser_driver.CHROMIUM


def readout_value(text: str) -> float:
    """A slider readout as a float (ipywidgets formats negatives with the Unicode minus sign)."""
    return float(text.replace("\u2212", "-"))


SLIDERS = ["beta (averaged)", "h (summed)", "offset m", "p_1", "|y_1|", "lambda (sft_weight)", "tau"]


def test_the_widgets_run_and_every_slider_redraws_its_widget(lab_page):
    run_notebook_and_check(lab_page, "widgets.ipynb", "widgets")
    for description in SLIDERS:
        shot = "".join(c if c.isalnum() else "_" for c in description)
        moved = move_slider_and_check(lab_page, description, ".widget-html-content", f"widgets_{shot}")
        assert readout_value(moved["after"]) > readout_value(moved["before"]), description  # ArrowRight raises it
