"""The real web UI in a real browser: ``python app.py`` in a subprocess, driven by Playwright's Chromium.

One server (tiny random-weight SD1 checkpoint, temporary models and outputs folders) serves every test; each test
opens its own page. Generation runs at 64x64 and 2 steps (under a second on CPU; 512x512 takes ~7 s even at
2 steps, mostly in the VAE), except the interrupt test, which wants a long job. There are no skips: if Chromium
(Debian's, at /usr/bin/chromium; Playwright cannot download its own here) or the server cannot start, the
tests fail.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
START_TIMEOUT = 90.0
SCREENSHOT = Path("/tmp/easel-txt2img.png")
DEMO_SCREENSHOT = Path("/tmp/easel-demo.png")
TITLE = re.compile(r"^tiny-sd1\.safetensors( \[[0-9a-f]{10}\])?$")  # the hash shows once it is known


class Server:
    def __init__(self, url: str, outputs: Path, log: Path) -> None:
        self.url = url
        self.outputs = outputs
        self.log = log

    def pngs(self, folder: str = "txt2img-images") -> set[Path]:
        return set((self.outputs / folder).rglob("*.png"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"app.py exited with {process.returncode} before serving:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.25)
    pytest.fail(f"app.py did not answer on {url} within {START_TIMEOUT:.0f} s:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def _serve(root: Path, *flags: str) -> Iterator[Server]:
    """``python app.py`` on ``root/models`` and ``root/outputs`` until the block ends."""
    models, outputs, log = root / "models", root / "outputs", root / "app.log"
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_TEMP_DIR": str(root / "gradio-tmp")}
    command = [sys.executable, "app.py", "--port", str(port), *flags]
    command += ["--models-dir", str(models), "--outputs-dir", str(outputs)]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_until_up(url, process, log)
        yield Server(url, outputs, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_sd1_ckpt: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("ui-browser")
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_sd1_ckpt, root / "models" / "Stable-diffusion" / "tiny-sd1.safetensors")
    with _serve(root, "--no-demo-model") as running:
        yield running


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def ui(server: Server, chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        page.goto(server.url)
        expect(page.locator("#txt2img_generate")).to_be_visible()
        yield page
    finally:
        context.close()


def _set_number(page: Page, label: str, value: int) -> None:
    """Type into a slider's number box (or a plain number field) and leave it, as a user would."""
    box = page.get_by_label(f"number input for {label}")
    if not box.count():
        box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Tab")
    expect(box).to_have_value(str(value))


def _small_job(page: Page, seed: int) -> None:
    page.locator("#txt2img_prompt textarea").fill("a red circle")
    for label, value in (("Width", 64), ("Height", 64), ("Sampling steps", 2), ("Seed (-1 = random)", seed)):
        _set_number(page, label, value)


def _expect_done(page: Page, server: Server, before: set[Path], seed: int) -> Path:
    """The gallery shows an image, the info names its steps and seed, and exactly one new PNG is on disk."""
    expect(page.locator("#txt2img_gallery img").first).to_be_visible()
    info = page.locator("#txt2img_info textarea")
    expect(info).to_have_value(re.compile(rf"Steps: 2,.*Seed: {seed},"))
    expect(page.locator("#txt2img_status")).to_contain_text("Done in")
    (new,) = server.pngs() - before
    assert new.name.endswith(f"-{seed}.png")
    return new


def _expect_error_toast(page: Page, *parts: str) -> None:
    toast = page.locator(".toast-body").filter(has_text=parts[0])
    for part in parts[1:]:
        toast = toast.filter(has_text=part)
    expect(toast.first).to_be_visible(timeout=15_000)


def test_txt2img_in_the_browser_shows_and_saves_the_image(ui: Page, server: Server) -> None:
    checkpoint = ui.get_by_label("Stable Diffusion checkpoint")
    checkpoint.click()
    options = ui.get_by_role("option")
    expect(options).to_have_count(1)
    # The page preselects the model a generation would use, so its option carries Gradio's check mark.
    assert TITLE.match(options.first.inner_text().removeprefix("✓").strip()), options.all_inner_texts()
    options.first.click()
    expect(checkpoint).to_have_value(TITLE)

    _small_job(ui, seed=5)
    before = server.pngs()
    started = time.monotonic()
    ui.locator("#txt2img_generate").click()
    path = _expect_done(ui, server, before, seed=5)
    elapsed = time.monotonic() - started
    info = ui.locator("#txt2img_info textarea").input_value()
    assert info.startswith("a red circle\n") and "Size: 64x64" in info and "Model: tiny-sd1," in info
    assert path.stat().st_size > 0
    ui.screenshot(path=str(SCREENSHOT), full_page=True)
    assert elapsed < 20, elapsed


def test_bad_values_reach_the_server_and_show_a_toast_naming_the_field(ui: Page, server: Server) -> None:
    _small_job(ui, seed=7)
    before = server.pngs()
    # Gradio keeps the typed 500 (the range thumb snaps to 504, the value sent does not): the server refuses it.
    _set_number(ui, "Width", 500)
    ui.locator("#txt2img_generate").click()
    _expect_error_toast(ui, "width", "multiple of 8 between 64 and 2048", "got 500")
    _set_number(ui, "Width", 64)
    # A plain number field has no bounds in the browser at all.
    _set_number(ui, "Seed (-1 = random)", -5)
    ui.locator("#txt2img_generate").click()
    _expect_error_toast(ui, "seed", "must be -1 (random) or between 0 and", "got -5")
    assert server.pngs() == before

    _set_number(ui, "Seed (-1 = random)", 7)
    ui.locator("#txt2img_generate").click()
    _expect_done(ui, server, before, seed=7)


def test_interrupt_stops_a_long_job_within_seconds(ui: Page, server: Server) -> None:
    ui.locator("#txt2img_prompt textarea").fill("a long job")
    _set_number(ui, "Sampling steps", 150)  # at the default 512x512: minutes on CPU if not stopped
    before = server.pngs()
    ui.locator("#txt2img_generate").click()
    status = ui.locator("#txt2img_status")
    expect(status).to_contain_text(re.compile(r"step \d+/150"), timeout=60_000)
    clicked = time.monotonic()
    ui.locator("#txt2img_interrupt").click()
    expect(status).to_have_text("Interrupted", timeout=15_000)
    assert time.monotonic() - clicked < 10
    assert server.pngs() == before

    _small_job(ui, seed=9)  # the worker is free again
    ui.locator("#txt2img_generate").click()
    _expect_done(ui, server, before, seed=9)


def test_refreshing_the_checkpoint_list_keeps_the_selected_checkpoint(ui: Page, server: Server) -> None:
    checkpoint = ui.get_by_label("Stable Diffusion checkpoint")
    checkpoint.click()
    ui.get_by_role("option").first.click()
    _small_job(ui, seed=12)
    before = server.pngs()
    ui.locator("#txt2img_generate").click()
    _expect_done(ui, server, before, seed=12)  # loads the model, so its hash is known from now on

    ui.locator("#refresh_checkpoints").click()
    expect(checkpoint).to_have_value(TITLE, timeout=3_000)
    _set_number(ui, "Seed (-1 = random)", 13)
    ui.locator("#txt2img_generate").click()
    _expect_done(ui, server, before | server.pngs(), seed=13)


def test_a_fresh_install_draws_the_prompt_with_the_demo_model(
    tmp_path_factory: pytest.TempPathFactory, chromium: Browser
) -> None:
    """An empty models folder: the page offers the demo model, sets its 64x64 size, and draws what is asked."""
    from PIL import Image

    from webui.demo import measure

    root = tmp_path_factory.mktemp("fresh-install")
    (root / "models").mkdir()
    with _serve(root) as fresh:
        context = chromium.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(30_000)
        try:
            page.goto(fresh.url)
            checkpoint = page.get_by_label("Stable Diffusion checkpoint")
            expect(checkpoint).to_have_value(re.compile(r"^easel-demo-shapes\.safetensors.* \(built-in demo\)$"))
            expect(page.get_by_label("number input for Width")).to_have_value("64")
            expect(page.get_by_label("number input for Height")).to_have_value("64")
            page.locator("#txt2img_prompt textarea").fill("a red circle on a blue background")
            _set_number(page, "Seed (-1 = random)", 1)
            page.locator("#txt2img_generate").click()
            expect(page.locator("#txt2img_gallery img").first).to_be_visible()
            expect(page.locator("#txt2img_status")).to_contain_text("Done in")
            page.screenshot(path=str(DEMO_SCREENSHOT), full_page=True)
        finally:
            context.close()
        (saved,) = fresh.pngs()
        image = Image.open(saved)
        assert image.size == (64, 64)
        reading = measure.read(image)
        assert (reading.shape, reading.background) == ("red", "blue")
