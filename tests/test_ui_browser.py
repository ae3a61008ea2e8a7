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
import urllib.error
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
expect.set_options(timeout=30_000)  # a 2-core CI machine loading a model is slower than Playwright's 5 s
# Screenshots of each tab, to look at (docs/screenshots/ holds the ones chosen for the docs).
SCREENSHOTS = Path(os.environ.get("EASEL_SCREENSHOTS", "/tmp/easel-screenshots"))
DEMO_SCREENSHOT = SCREENSHOTS / "demo-model.png"
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
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code == 401:  # up, behind --auth
                return
        except OSError:
            pass
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
def ui(request: pytest.FixtureRequest, server: Server, chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    start = server.log.stat().st_size
    try:
        _open(page, server.url)
        yield page
    finally:
        context.close()
        if (
            "call_failed",
            True,
        ) in request.node.user_properties:  # the server's side of the story, in the failure report
            with server.log.open("rb") as log:
                log.seek(start)
                print(f"--- app.py log during this test ---\n{log.read().decode(errors='replace')[-6000:]}")


def _open(page: Page, url: str) -> None:
    """Load the page and wait for its load event to fill the form (model, defaults), as a user would see it."""
    page.goto(url)
    expect(page.locator("#txt2img_generate")).to_be_visible()
    expect(page.get_by_label("Stable Diffusion checkpoint")).to_have_value(TITLE)


def _set_number(page: Page, elem_id: str, value: int | float) -> None:
    """Type into a slider's number box (or a plain number field) and leave it, as a user would."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")
    expect(box).to_have_value(str(value))


def _small_job(page: Page, seed: int, tab: str = "txt2img", prompt: str = "a red circle") -> None:
    page.locator(f"#{tab}_prompt textarea").fill(prompt)
    for name, value in (("width", 64), ("height", 64), ("steps", 2), ("seed", seed)):
        _set_number(page, f"{tab}_{name}", value)


def _expect_done(page: Page, server: Server, before: set[Path], seed: int, tab: str = "txt2img") -> Path:
    """The gallery shows an image, the info names its steps and seed, and exactly one new PNG is on disk."""
    folder = "txt2img-images" if tab == "txt2img" else "img2img-images"
    expect(page.locator(f"#{tab}_progress")).to_contain_text("Done in")
    expect(page.locator(f"#{tab}_gallery img").first).to_be_visible()
    info = page.locator(f"#{tab}_info textarea")
    expect(info).to_have_value(re.compile(rf"Steps: 2,.*Seed: {seed},"))
    (new,) = server.pngs(folder) - before
    assert new.name.endswith(f"-{seed}.png")
    expect(page.locator(f"#{tab}_file_link a")).to_have_text(re.compile(re.escape(new.name)))
    return new


def _expect_error_toast(page: Page, *parts: str) -> None:
    toast = page.locator(".toast-body").filter(has_text=parts[0])
    for part in parts[1:]:
        toast = toast.filter(has_text=part)
    expect(toast.first).to_be_visible(timeout=15_000)


def _open_tab(page: Page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def _shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> Path:
    from PIL import Image

    Image.new("RGB", size, colour).save(path)
    return path


def test_txt2img_in_the_browser_shows_and_saves_the_image_and_history_lists_it(ui: Page, server: Server) -> None:
    checkpoint = ui.get_by_label("Stable Diffusion checkpoint")
    checkpoint.click()
    options = ui.get_by_role("option")
    expect(options).to_have_count(1)
    # The page preselects the model a generation would use, so its option carries Gradio's check mark.
    assert TITLE.match(options.first.inner_text().removeprefix("✓").strip()), options.all_inner_texts()
    options.first.click()
    expect(checkpoint).to_have_value(TITLE)

    _small_job(ui, seed=5, prompt="a red circle by the lighthouse")
    expect(ui.locator("#txt2img_token_counter")).to_have_text("6/75")
    before = server.pngs()
    started = time.monotonic()
    ui.locator("#txt2img_generate").click()
    path = _expect_done(ui, server, before, seed=5)
    elapsed = time.monotonic() - started
    info = ui.locator("#txt2img_info textarea").input_value()
    assert info.startswith("a red circle by the lighthouse\n") and "Size: 64x64" in info and "Model: tiny-sd1," in info
    assert path.stat().st_size > 0
    _shot(ui, "txt2img")
    assert elapsed < 20, elapsed

    # The file link serves the very file (with its infotext), not a re-encoded copy.
    href = ui.locator("#txt2img_file_link a").get_attribute("href")
    assert href is not None
    with urllib.request.urlopen(server.url.rstrip("/") + href, timeout=10) as response:
        assert response.read() == path.read_bytes()

    ui.locator("#txt2img_prompt textarea").fill("something else")
    _set_number(ui, "txt2img_seed", 99)
    _open_tab(ui, "History")
    expect(ui.locator("#history_status")).to_contain_text(re.compile(r"\d+ image\(s\)"))
    ui.locator("#history_search textarea, #history_search input").first.fill("lighthouse")
    ui.locator("#history_search textarea, #history_search input").first.press("Enter")
    expect(ui.locator("#history_status")).to_contain_text("1 image(s)")
    ui.locator("#history_gallery .thumbnail-item, #history_gallery button img").first.click()
    expect(ui.locator("#history_info textarea")).to_have_value(re.compile(r"^a red circle by the lighthouse\n"))
    expect(ui.locator("#history_file textarea, #history_file input").first).to_have_value(str(path))
    _shot(ui, "history")

    # Reuse parameters fills txt2img and goes there.
    ui.locator("#history_reuse").click()
    expect(ui.locator("#txt2img_prompt textarea")).to_have_value("a red circle by the lighthouse")
    expect(ui.locator("#txt2img_seed input")).to_have_value("5")


def test_bad_values_reach_the_server_and_show_a_message_naming_the_field(ui: Page, server: Server) -> None:
    _small_job(ui, seed=7)
    before = server.pngs()
    # Gradio keeps the typed 500 (the range thumb snaps to 504, the value sent does not): the server refuses it.
    _set_number(ui, "txt2img_width", 500)
    ui.locator("#txt2img_generate").click()
    _expect_error_toast(ui, "width", "multiple of 8 between 64 and 2048", "got 500")
    expect(ui.locator("#txt2img_progress .easel-error")).to_contain_text("width")
    _set_number(ui, "txt2img_width", 64)
    # A plain number field has no bounds in the browser at all.
    _set_number(ui, "txt2img_seed", -5)
    ui.locator("#txt2img_generate").click()
    _expect_error_toast(ui, "seed", "must be -1 (random) or between 0 and", "got -5")
    assert server.pngs() == before

    _set_number(ui, "txt2img_seed", 7)
    ui.locator("#txt2img_generate").click()
    _expect_done(ui, server, before, seed=7)
    ui.locator("#txt2img_random_seed").click()
    expect(ui.locator("#txt2img_seed input")).to_have_value("-1")
    ui.locator("#txt2img_reuse_seed").click()
    expect(ui.locator("#txt2img_seed input")).to_have_value("7")


def test_interrupt_stops_a_long_job_within_seconds(ui: Page, server: Server) -> None:
    ui.locator("#txt2img_prompt textarea").fill("a long job")
    _set_number(ui, "txt2img_steps", 150)  # at the default 512x512: minutes on CPU if not stopped
    before = server.pngs()
    ui.locator("#txt2img_generate").click()
    progress = ui.locator("#txt2img_progress")
    expect(progress).to_contain_text(re.compile(r"step \d+/150"), timeout=60_000)
    clicked = time.monotonic()
    ui.locator("#txt2img_interrupt").click()
    expect(progress).to_contain_text("Interrupted", timeout=15_000)
    assert time.monotonic() - clicked < 10
    assert server.pngs() == before

    _small_job(ui, seed=9)  # the worker is free again
    ui.locator("#txt2img_generate").click()
    _expect_done(ui, server, before, seed=9)


def test_interrupting_a_batch_keeps_and_shows_the_images_already_finished(ui: Page, server: Server) -> None:
    _small_job(ui, seed=31)
    _set_number(ui, "txt2img_steps", 150)
    _set_number(ui, "txt2img_batch_count", 3)
    before = server.pngs()
    ui.locator("#txt2img_generate").click()
    progress = ui.locator("#txt2img_progress")
    expect(progress).to_contain_text(re.compile(r"image 2/3, step \d+/150"), timeout=60_000)
    ui.locator("#txt2img_interrupt").click()
    expect(progress).to_contain_text("Interrupted", timeout=15_000)
    expect(progress).to_contain_text("The 1 image(s) finished before it are saved and shown.")
    (saved,) = server.pngs() - before
    assert saved.name.endswith("-31.png")
    expect(ui.locator("#txt2img_gallery img")).to_have_count(1)
    expect(ui.locator("#txt2img_info textarea")).to_have_value(re.compile(r"Steps: 150,.*Seed: 31,"))
    expect(ui.locator("#txt2img_file_link a")).to_have_text(re.compile(re.escape(saved.name)))


def test_a_long_job_shows_live_previews_while_it_runs(ui: Page, server: Server) -> None:
    ui.locator("#txt2img_prompt textarea").fill("a previewed job")
    _set_number(ui, "txt2img_steps", 150)  # long enough to watch; previews every 4 steps by default
    _set_number(ui, "txt2img_width", 128)
    _set_number(ui, "txt2img_height", 192)
    before = server.pngs()
    preview = ui.locator("#txt2img_preview img")
    expect(ui.locator("#txt2img_preview")).to_be_hidden()
    ui.locator("#txt2img_generate").click()
    progress = ui.locator("#txt2img_progress")
    expect(progress).to_contain_text(re.compile(r"step ([4-9]|\d\d+)/150"), timeout=60_000)
    expect(preview).to_be_visible(timeout=15_000)
    expect(preview).to_have_js_property("complete", True)
    # A decoded picture at the image's size (the latent upscaled by the VAE's factor), not a broken tile.
    assert preview.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [128, 192]
    _shot(ui, "txt2img-preview")
    ui.locator("#txt2img_interrupt").click()
    expect(progress).to_contain_text("Interrupted", timeout=15_000)
    expect(ui.locator("#txt2img_preview")).to_be_hidden()  # hidden again once the job ends
    assert server.pngs() == before


def test_skip_drops_the_image_being_made_and_the_batch_goes_on(ui: Page, server: Server) -> None:
    _small_job(ui, seed=61, prompt="a skipped batch")
    _set_number(ui, "txt2img_steps", 100)  # long enough for the click to land in image 2 on a fast machine
    _set_number(ui, "txt2img_batch_count", 3)
    before = server.pngs()
    ui.locator("#txt2img_generate").click()
    progress = ui.locator("#txt2img_progress")
    expect(progress).to_contain_text(re.compile(r"image 2/3, step \d+/100"), timeout=60_000)
    ui.locator("#txt2img_skip").click()
    expect(progress).to_contain_text("Done in", timeout=120_000)
    expect(progress).to_contain_text(": 2 image(s)")
    # Batch item i has seed 61 + i: the second (62) was dropped, the first and third are saved and shown.
    assert sorted(p.name.rsplit("-", 1)[1] for p in server.pngs() - before) == ["61.png", "63.png"]
    expect(ui.locator("#txt2img_gallery img")).to_have_count(2)


def test_the_swap_button_exchanges_width_and_height_and_the_image_has_the_swapped_size(
    ui: Page, server: Server
) -> None:
    _small_job(ui, seed=71)
    _set_number(ui, "txt2img_height", 128)
    ui.locator("#txt2img_swap_size").click()
    expect(ui.locator("#txt2img_width input[type=number]")).to_have_value("128")
    expect(ui.locator("#txt2img_height input[type=number]")).to_have_value("64")
    before = server.pngs()
    ui.locator("#txt2img_generate").click()
    path = _expect_done(ui, server, before, seed=71)
    assert "Size: 128x64," in ui.locator("#txt2img_info textarea").input_value()
    from PIL import Image

    assert Image.open(path).size == (128, 64)


def test_the_negative_prompt_has_its_own_token_counter(ui: Page) -> None:
    counter = ui.locator("#txt2img_negative_token_counter")
    expect(counter).to_have_text("0/75")
    ui.locator("#txt2img_prompt textarea").fill("a red circle")
    ui.locator("#txt2img_neg_prompt textarea").fill("a blue square on a white background")
    expect(counter).to_have_text("7/75")
    expect(ui.locator("#txt2img_token_counter")).to_have_text("3/75")
    ui.locator("#txt2img_neg_prompt textarea").fill("red " * 80)  # over one chunk: the next 75 is shown
    expect(counter).to_have_text("80/150")
    expect(counter.locator(".easel-tokens-over")).to_have_count(1)
    expect(ui.locator("#txt2img_token_counter")).to_have_text("3/75")


def test_send_to_buttons_carry_the_selected_image_to_img2img_inpaint_and_controlnet(ui: Page, server: Server) -> None:
    _small_job(ui, seed=41)
    before = server.pngs()
    ui.locator("#txt2img_generate").click()
    _expect_done(ui, server, before, seed=41)
    tab = ui.get_by_role("tab", name="ControlNet", exact=True)
    ui.locator("#txt2img_send_to_controlnet").click()
    expect(tab).to_have_attribute("aria-selected", "true")
    expect(ui.locator("#controlnet_image img")).to_be_visible()
    _shot(ui, "controlnet")
    _open_tab(ui, "txt2img")
    ui.locator("#txt2img_send_to_img2img").click()
    expect(ui.get_by_role("tab", name="img2img", exact=True)).to_have_attribute("aria-selected", "true")
    expect(ui.locator("#img2img_image img")).to_be_visible()
    _open_tab(ui, "txt2img")
    ui.locator("#txt2img_send_to_inpaint").click()
    expect(ui.get_by_role("tab", name="Inpaint", exact=True)).to_have_attribute("aria-selected", "true")
    expect(ui.locator("#inpaint_editor canvas").first).to_be_visible()
    # The image arrived: the editor's upload prompt is gone.
    expect(ui.locator("#inpaint_editor").get_by_text("Upload an image")).to_have_count(0)


def test_two_users_each_see_their_own_job_and_cannot_stop_the_other(
    ui: Page, server: Server, chromium: Browser
) -> None:
    other_context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    other = other_context.new_page()
    other.set_default_timeout(30_000)
    try:
        _open(other, server.url)
        ui.locator("#txt2img_prompt textarea").fill("the first user's long job")
        _set_number(ui, "txt2img_steps", 150)
        ui.locator("#txt2img_generate").click()
        expect(ui.locator("#txt2img_progress")).to_contain_text(re.compile(r"step \d+/150"), timeout=60_000)

        _small_job(other, seed=31, prompt="the second user's job")
        other.locator("#txt2img_generate").click()
        expect(other.locator("#txt2img_progress")).to_contain_text("Waiting in queue (position 1)")
        other.locator("#txt2img_interrupt").click()  # stops the second user's own (queued) job only
        expect(other.locator("#txt2img_progress")).to_contain_text("Cancelled before it started")
        time.sleep(1.0)
        expect(ui.locator("#txt2img_progress")).to_contain_text(re.compile(r"step \d+/150"))
        ui.locator("#txt2img_interrupt").click()
        expect(ui.locator("#txt2img_progress")).to_contain_text("Interrupted", timeout=15_000)
    finally:
        other_context.close()


def test_img2img_with_an_uploaded_image(ui: Page, server: Server, tmp_path: Path) -> None:
    _open_tab(ui, "img2img")
    ui.locator("#img2img_image input[type=file]").set_input_files(str(_png(tmp_path / "in.png", (0, 0, 255))))
    expect(ui.locator("#img2img_image img").first).to_be_visible()
    _small_job(ui, seed=21, tab="img2img", prompt="a blue square")
    _set_number(ui, "img2img_denoising_strength", 0.5)
    before = server.pngs("img2img-images")
    ui.locator("#img2img_generate").click()
    path = _expect_done(ui, server, before, seed=21, tab="img2img")
    info = ui.locator("#img2img_info textarea").input_value()
    assert "Denoising strength: 0.5" in info, info
    assert path.parent.parent.name == "img2img-images"
    _shot(ui, "img2img")


def test_inpaint_with_a_painted_mask_and_with_an_uploaded_mask(ui: Page, server: Server, tmp_path: Path) -> None:
    from PIL import Image

    green = (0, 160, 0)
    _open_tab(ui, "Inpaint")
    editor = ui.locator("#inpaint_editor")
    with ui.expect_file_chooser() as chooser:
        editor.get_by_text("Upload an image").click()
    chooser.value.set_files(str(_png(tmp_path / "photo.png", green)))
    canvas = editor.locator("canvas").first
    expect(canvas).to_be_visible()
    time.sleep(0.5)  # the editor fits the image to the canvas after it loads
    # Paint a horizontal stroke across the middle with the brush (the active tool after an upload).
    box = canvas.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    ui.mouse.move(box["x"] + box["width"] * 0.3, y)
    ui.mouse.down()
    for fraction in (0.4, 0.5, 0.6, 0.7):
        ui.mouse.move(box["x"] + box["width"] * fraction, y, steps=4)
    ui.mouse.up()
    _small_job(ui, seed=22, tab="inpaint", prompt="a red square")
    _set_number(ui, "inpaint_mask_blur", 0)
    before = server.pngs("img2img-images")
    ui.locator("#inpaint_generate").click()
    path = _expect_done(ui, server, before, seed=22, tab="inpaint")
    assert "Mask blur: 0" in ui.locator("#inpaint_info textarea").input_value()
    painted = Image.open(path).convert("RGB")
    # The stroke's row changed; the corners (unpainted) are the photo, pasted back unchanged.
    assert painted.getpixel((32, 32)) != green
    assert all(painted.getpixel(xy) == green for xy in ((1, 1), (62, 1), (1, 62), (62, 62)))
    _shot(ui, "inpaint")

    # An uploaded mask adds to the painted one: its square in the bottom-left corner changes too.
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 48, 16, 64))
    mask.save(tmp_path / "mask.png")
    ui.locator("#inpaint_mask input[type=file]").set_input_files(str(tmp_path / "mask.png"))
    expect(ui.locator("#inpaint_mask img").first).to_be_visible()
    _set_number(ui, "inpaint_seed", 23)
    ui.locator("#inpaint_generate").click()
    both = Image.open(_expect_done(ui, server, before | {path}, seed=23, tab="inpaint")).convert("RGB")
    assert both.getpixel((32, 32)) != green and both.getpixel((4, 60)) != green
    assert both.getpixel((62, 1)) == green and both.getpixel((62, 62)) == green


def test_png_info_reads_a_saved_image_and_sends_it_to_txt2img(ui: Page, server: Server) -> None:
    _small_job(ui, seed=41, prompt="a png info check")
    before = server.pngs()
    ui.locator("#txt2img_generate").click()
    path = _expect_done(ui, server, before, seed=41)
    ui.locator("#txt2img_prompt textarea").fill("something else")
    _open_tab(ui, "PNG Info")
    ui.locator("#pnginfo_image input[type=file]").set_input_files(str(path))
    text = ui.locator("#pnginfo_text textarea")
    expect(text).to_have_value(re.compile(r"^a png info check\n.*Seed: 41,", re.S))
    expect(ui.locator("#pnginfo_fields")).to_contain_text("DPM++ 2M")
    expect(ui.locator("#pnginfo_fields")).not_to_contain_text("Mask mode")  # only what the text says
    _shot(ui, "pnginfo")
    ui.locator("#pnginfo_send_to_txt2img").click()
    expect(ui.locator("#txt2img_prompt textarea")).to_have_value("a png info check")
    expect(ui.locator("#txt2img_seed input")).to_have_value("41")


def test_settings_are_validated_saved_and_used_for_the_next_image(ui: Page, server: Server) -> None:
    _open_tab(ui, "Settings")
    folder = ui.locator("#setting_txt2img_folder textarea, #setting_txt2img_folder input").first
    folder.fill("../outside")
    ui.locator("#settings_apply").click()
    expect(ui.locator("#settings_status .easel-error")).to_contain_text("txt2img_folder")
    expect(ui.locator("#settings_status")).to_contain_text("inside the data folder")
    assert not (server.outputs / "easel-settings.json").exists()  # nothing saved from a bad form

    folder.fill("settings-check")
    ui.locator("#setting_output_format").get_by_label("jpg").check()
    ui.locator("#settings_apply").click()
    expect(ui.locator("#settings_status")).to_contain_text("Settings saved.")
    _shot(ui, "settings")
    try:
        _open_tab(ui, "txt2img")
        _small_job(ui, seed=51)
        ui.locator("#txt2img_generate").click()
        expect(ui.locator("#txt2img_progress")).to_contain_text("Done in")
        (saved,) = (server.outputs / "settings-check").rglob("*-51.jpg")
        from PIL import Image

        from webui.outputs.infotext import read_infotext

        assert "Seed: 51," in (read_infotext(Image.open(saved)) or "")
        # A reloaded page shows the saved values.
        _open(ui, server.url)
        _open_tab(ui, "Settings")
        expect(ui.locator("#setting_txt2img_folder textarea, #setting_txt2img_folder input").first).to_have_value(
            "settings-check"
        )
    finally:  # back to the defaults (png in txt2img-images) for the tests that follow
        _open_tab(ui, "Settings")
        ui.locator("#setting_txt2img_folder textarea, #setting_txt2img_folder input").first.fill("txt2img-images")
        ui.locator("#setting_output_format").get_by_label("png").check()
        ui.locator("#settings_apply").click()
        expect(ui.locator("#settings_status")).to_contain_text("Settings saved.")


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
    _set_number(ui, "txt2img_seed", 13)
    ui.locator("#txt2img_generate").click()
    _expect_done(ui, server, before | server.pngs(), seed=13)


def test_a_vae_added_to_the_folder_is_listed_on_refresh_and_used_by_the_next_image(ui: Page, server: Server) -> None:
    from tests.fixtures.tiny_models import make_vae

    vae = ui.get_by_label("SD VAE")
    expect(vae).to_have_value("Automatic")
    make_vae(server.outputs.parent / "models" / "VAE" / "browser-redder.safetensors", red=1.5)
    ui.locator("#refresh_checkpoints").click()
    vae.click()
    ui.get_by_role("option", name="browser-redder.safetensors").click()
    expect(vae).to_have_value("browser-redder.safetensors")
    _small_job(ui, seed=21)
    before = server.pngs()
    ui.locator("#txt2img_generate").click()
    path = _expect_done(ui, server, before, seed=21)
    expect(ui.locator("#txt2img_info textarea")).to_have_value(
        re.compile(r"VAE hash: [0-9a-f]{10}, VAE: browser-redder\.safetensors,")
    )
    _shot(ui, "vae")
    vae.click()
    ui.get_by_role("option", name="None", exact=True).click()
    _set_number(ui, "txt2img_seed", 22)
    ui.locator("#txt2img_generate").click()
    _expect_done(ui, server, before | {path}, seed=22)
    assert "VAE" not in ui.locator("#txt2img_info textarea").input_value()


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
            expect(page.locator("#txt2img_width input[type=number]")).to_have_value("64")
            expect(page.locator("#txt2img_height input[type=number]")).to_have_value("64")
            page.locator("#txt2img_prompt textarea").fill("a red circle on a blue background")
            _set_number(page, "txt2img_seed", 1)
            page.locator("#txt2img_generate").click()
            expect(page.locator("#txt2img_progress")).to_contain_text("Done in")
            expect(page.locator("#txt2img_gallery img").first).to_be_visible()
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(DEMO_SCREENSHOT), full_page=True)
        finally:
            context.close()
        (saved,) = fresh.pngs()
        image = Image.open(saved)
        assert image.size == (64, 64)
        reading = measure.read(image)
        assert (reading.shape, reading.background) == ("red", "blue")
