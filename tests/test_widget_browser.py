"""The click-to-prompt widget in a real browser: JupyterLab headless, Chromium driven by Playwright.

The test starts JupyterLab on 127.0.0.1 (a free port, a random token, settings and workspaces in a
temp dir, the widget JavaScript from the venv's own lab extensions), opens a generated notebook that
shows :meth:`samlib.widgets.ClickPrompter.widget` on a 256 x 256 image holding one orange ellipse,
runs it, clicks inside the ellipse with a real mouse event in Debian's Chromium (no browser download,
every host but 127.0.0.1 unresolvable, so a widget that needs a CDN fails), and checks:

* the mask appears: in a screenshot of the widget's image, most pixels of the ellipse take the
  overlay colour (the ellipse's colour blended with the widget's blue, see ``ClickPrompter.render``);
* the "export" button writes the masks, and the exported mask's IoU with the ellipse is above
  ``MIN_IOU``;
* no request left 127.0.0.1.

Screenshots (before the click, with the mask, after export) go to ``_build/screenshots/``. The server
and the kernel it started are always stopped. Skips, saying what is missing, without Chromium
(``$CHROMIUM`` or /usr/bin/chromium), Playwright, JupyterLab or ipyevents.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
OFFLINE_RULES = "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"

SIZE = 256
CENTRE, AXES, ANGLE = (128, 128), (60, 40), 20
OBJECT_RGB = np.array([235, 150, 40])
BACKGROUND_RGB = np.array([70, 110, 80])
OVERLAY_BLUE = np.array([30, 144, 255])  # ClickPrompter.render's colour of the current mask
CLICK = (140, 130)  # (x, y) image pixel inside the ellipse, off its centre
# Measured: the teaching SAM's mask for a click at CLICK has IoU 0.979 with the ellipse (the same in the
# browser and in plain Python; 0.964-0.980 for clicks anywhere in the ellipse's inner half). The
# threshold leaves a margin for a click landing a pixel or two off through the page's scaling.
MIN_IOU = 0.90
MIN_OVERLAY_FRACTION = 0.8  # of the ellipse's pixels shown in the overlay colour after the click

SERVER_START_S = 120
KERNEL_S = 180
WIDGET_SHOW_S = 240  # the kernel imports torch and loads the model on a loaded 2-core machine
MASK_SHOW_S = 120
EXPORT_S = 60

NOTEBOOK_CODE = """\
import numpy as np
import samlib
from samlib.models import load_sam
from samlib.predict import PromptPredictor
from samlib.widgets import ClickPrompter

image = np.load("object.npy")
prompter = ClickPrompter(PromptPredictor(load_sam("teaching", device="cpu")), image)
prompter.widget(export_path="exported.npy")
"""


def _missing() -> str | None:
    """Why the browser test cannot run here (None when it can)."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set $CHROMIUM)"
    for module, pip_name in [
        ("playwright", "playwright"),
        ("jupyterlab", "jupyterlab"),
        ("ipyevents", "ipyevents"),
    ]:
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install {pip_name}; it is in samlib's dev extra)"
    labext = Path(sys.prefix) / "share" / "jupyter" / "labextensions"
    for ext in ("ipyevents", "@jupyter-widgets/jupyterlab-manager"):
        if not (labext / ext).is_dir():
            return f"the lab extension {ext} is not in {labext}"
    return None


pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(_missing() is not None, reason=f"browser test: {_missing()}"),
]


def object_image() -> tuple[np.ndarray, np.ndarray]:
    """(256, 256, 3) uint8 image with one orange ellipse on a noisy green background, and its mask."""
    import cv2

    rng = np.random.default_rng(0)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.ellipse(mask, CENTRE, AXES, ANGLE, 0, 360, 1, -1)
    obj = mask.astype(bool)
    image = BACKGROUND_RGB + rng.integers(-15, 16, (SIZE, SIZE, 3))
    image[obj] = OBJECT_RGB
    return np.clip(image, 0, 255).astype(np.uint8), obj


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Lab:
    url: str
    token: str
    folder: Path
    log: Path
    process: subprocess.Popen

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def _get(url: str, timeout: float = 5.0) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - 127.0.0.1 only
        return int(r.status)


def _stop(lab: Lab) -> None:
    """Shut the server down (it stops its kernels), then end whatever it started that is left."""
    import psutil

    try:
        started = psutil.Process(lab.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        started = []
    if lab.process.poll() is None:
        try:
            req = urllib.request.Request(f"{lab.url}/api/shutdown?token={lab.token}", method="POST")
            urllib.request.urlopen(req, timeout=10).close()  # noqa: S310
        except Exception:
            pass
        try:
            lab.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            lab.process.terminate()
            try:
                lab.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                lab.process.kill()
                lab.process.wait(timeout=10)
    for child in started:  # the kernel runs in its own session: end it by its pid if still there
        try:
            child.terminate()
            child.wait(timeout=10)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            child.kill()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    port, token = _free_port(), secrets.token_hex(16)
    share = Path(sys.prefix) / "share" / "jupyter"
    env = dict(
        os.environ,
        JUPYTER_PATH=str(share),  # the venv's kernel spec and lab extensions first
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        "--port-retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--ServerApp.terminals_enabled=False",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI and containers run as root
        cmd.append("--allow-root")
    log = tmp_path / "jupyterlab.log"
    with log.open("w") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
    lab = Lab(f"http://127.0.0.1:{port}", token, folder, log, process)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with {process.returncode} at start:\n{lab.log_tail()}")
            try:
                if _get(f"{lab.url}/api/status?token={token}") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within {SERVER_START_S} s:\n{lab.log_tail()}")
            time.sleep(0.5)
        yield lab
    finally:
        _stop(lab)


def _write_notebook(folder: Path, image: np.ndarray) -> Path:
    import nbformat

    np.save(folder / "object.npy", image)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(NOTEBOOK_CODE)]
    path = folder / "widget.ipynb"
    nbformat.write(nb, path)
    return path


def _image_pixels(img_locator, shot: Path) -> np.ndarray:
    """Screenshot of the widget's image element, as (SIZE, SIZE, 3) RGB at the image's own size."""
    import cv2

    img_locator.screenshot(path=str(shot), timeout=30_000)
    bgr = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    if bgr.shape[:2] != (SIZE, SIZE):
        bgr = cv2.resize(bgr, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return bgr[..., ::-1].astype(np.int16)


def _overlay_fraction(pixels: np.ndarray, obj: np.ndarray, tolerance: int = 14) -> float:
    """Fraction of the object's pixels within ``tolerance`` (each channel) of the overlay colour."""
    expected = (0.45 * OBJECT_RGB + 0.55 * OVERLAY_BLUE).astype(np.int16)
    inside = pixels[obj]
    return float((np.abs(inside - expected) <= tolerance).all(axis=1).mean())


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_click_in_jupyterlab_shows_and_exports_the_mask(lab: Lab) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    image, obj = object_image()
    _write_notebook(lab.folder, image)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shots = {
        k: SCREENSHOTS / f"widget_click_{k}.png"
        for k in ("page_before", "image_before", "page_mask", "image_mask", "page_exported")
    }
    external: list[str] = []
    js_errors: list[str] = []
    host = lab.url.removeprefix("http://")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[f"--host-resolver-rules={OFFLINE_RULES}", "--no-sandbox", "--disable-gpu"],
        )
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 900})
            context.on(
                "request",
                lambda r: (
                    None
                    if r.url.startswith(("data:", "about:")) or r.url.split("//", 1)[-1].startswith(host)
                    else external.append(r.url)
                ),
            )
            page = context.new_page()
            page.on("pageerror", lambda e: js_errors.append(str(e)))
            page.goto(f"{lab.url}/lab/tree/widget.ipynb?token={lab.token}", timeout=120_000)

            def fail(what: str) -> None:
                page.screenshot(path=str(SCREENSHOTS / "widget_click_failure.png"))
                outputs = page.locator(".jp-OutputArea").all_inner_texts()
                pytest.fail(
                    f"{what}\ncell outputs: {outputs}\nJavaScript errors: {js_errors[:5]}\n"
                    f"blocked requests: {external[:5]}\nserver log:\n{lab.log_tail()}"
                )

            try:
                editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
                editor.wait_for(state="visible", timeout=120_000)
                # the kernel must be up before the cell runs (else JupyterLab asks for a kernel)
                page.locator(".jp-StatusBar-TextItem", has_text="Idle").first.wait_for(
                    timeout=KERNEL_S * 1000
                )
            except PlaywrightTimeout:
                fail(f"the notebook or its kernel did not start in JupyterLab within {KERNEL_S} s")
            prompt = page.locator(".jp-Notebook .jp-Cell .jp-InputPrompt").first
            for _attempt in range(3):  # run the cell; a "Select Kernel" dialog drops the run: accept, retry
                dialog = page.locator(".jp-Dialog").get_by_role("button", name="Select")
                if dialog.count():
                    dialog.first.click()
                editor.click()
                page.keyboard.press("Shift+Enter")
                try:
                    page.wait_for_function(
                        "(el) => /\\[[*0-9]+\\]/.test(el.textContent)",
                        arg=prompt.element_handle(),
                        timeout=15_000,
                    )
                    break
                except PlaywrightTimeout:
                    continue
            else:
                fail("the cell did not start running after three tries")
            image_el = page.locator(".jp-OutputArea .widget-image, .jp-OutputArea img.jupyter-widgets").first
            try:
                image_el.wait_for(state="visible", timeout=WIDGET_SHOW_S * 1000)
                page.wait_for_function(
                    "(el) => el.complete && el.naturalWidth > 0",
                    arg=image_el.element_handle(),
                    timeout=30_000,
                )
            except PlaywrightTimeout:
                fail(f"the widget's image did not appear within {WIDGET_SHOW_S} s")
            page.screenshot(path=str(shots["page_before"]))
            before = _overlay_fraction(_image_pixels(image_el, shots["image_before"]), obj)

            natural = image_el.evaluate("(el) => [el.naturalWidth, el.naturalHeight]")
            assert natural == [SIZE, SIZE], f"the widget shows a {natural} image, expected {SIZE} x {SIZE}"
            box = image_el.bounding_box()
            assert box is not None, "the widget's image has no bounding box (not rendered?)"
            x = box["x"] + (CLICK[0] + 0.5) * box["width"] / SIZE
            y = box["y"] + (CLICK[1] + 0.5) * box["height"] / SIZE
            page.mouse.click(x, y)  # mousedown + mouseup, left button: a positive point

            deadline, shown = time.monotonic() + MASK_SHOW_S, 0.0
            while time.monotonic() < deadline:
                page.wait_for_timeout(1000)
                shown = _overlay_fraction(_image_pixels(image_el, shots["image_mask"]), obj)
                if shown >= MIN_OVERLAY_FRACTION:
                    break
            page.screenshot(path=str(shots["page_mask"]))
            if shown < MIN_OVERLAY_FRACTION:
                fail(
                    f"after the click only {shown:.3f} of the object's pixels show the overlay colour "
                    f"(need {MIN_OVERLAY_FRACTION}; before the click: {before:.3f}) within {MASK_SHOW_S} s"
                )

            page.get_by_role("button", name="export").click()
            exported = lab.folder / "exported.npy"
            label = page.locator(".jp-OutputArea .widget-label", has_text="exported")
            try:  # the status line changes once np.save has returned
                label.first.wait_for(timeout=EXPORT_S * 1000)
            except PlaywrightTimeout:
                fail(f"the export button did not report an export within {EXPORT_S} s")
            status = label.first.inner_text()
            page.screenshot(path=str(shots["page_exported"]))
            if not exported.exists():
                fail(f"the status line says {status!r} but {exported.name} does not exist")
        finally:
            browser.close()

    masks = np.load(exported)
    assert masks.shape == (1, SIZE, SIZE), f"exported masks have shape {masks.shape}, expected one mask"
    iou = _iou(masks[0], obj)
    print(json.dumps({"overlay_before": before, "overlay_after": shown, "iou": iou, "status": status}))
    assert before < 0.05, f"{before:.3f} of the object already had the overlay colour before the click"
    assert iou > MIN_IOU, f"exported mask IoU {iou:.3f} with the object <= {MIN_IOU}"
    assert "exported 1 mask " in status, f"status line after export: {status!r}"
    assert not external, f"requests outside 127.0.0.1 (a CDN?): {sorted(set(external))[:5]}"
