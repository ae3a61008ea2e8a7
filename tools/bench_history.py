"""How fast History is with many images: rebuild of the index from the files, first page, search, and the
History tab's own first-page handler (what the browser waits for), on generated fixture images.

The first page is measured with its thumbnails twice: the first open, when none exist yet and all 36 are made
(``--cold-runs`` times, deleting ``.thumbnails`` before each), and a warm open, when they are cached. Both also time
Gradio's side of the hand-off (it hashes and copies every gallery file into its cache) and count the bytes a
browser then downloads. Most fixture images are 64x64 (cheap to write 10,000 of); the newest ``--page-images``
are ``--page-size`` squared textured PNGs like real outputs, because only the pages shown need real sizes.

    python tools/bench_history.py                 # 10,000 images in a temporary folder, newest 108 at 512x512
    python tools/bench_history.py --page-size 1024 --keep /tmp/history-fixture-1024
    python tools/bench_history.py --count 50000 --keep /tmp/history-fixture
    python tools/bench_history.py --browser       # also time it in Chromium: click History until 36 tiles drawn

``--browser`` starts ``python app.py`` on the fixture and times, in Debian's Chromium (/usr/bin/chromium) driven by
Playwright, from the click on the History tab until every tile of the first page has its image decoded: first with
no thumbnails (and an empty Gradio cache), then warm.

Figures go to docs/performance.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image

from webui.outputs.history import INDEX_NAME, HistoryIndex
from webui.outputs.infotext import format_infotext
from webui.outputs.saving import save_image
from webui.outputs.thumbnails import THUMBNAIL_DIR

WORDS = [
    "red",
    "blue",
    "green",
    "castle",
    "forest",
    "portrait",
    "city",
    "night",
    "river",
    "dragon",
    "robot",
    "flower",
    "ocean",
    "mountain",
]


def textured(size: int, seed: int) -> Image.Image:
    """A picture that compresses like a generated one (smooth shapes plus fine noise), not like a flat colour."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (max(1, size // 16),) * 2 + (3,), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16)
    return Image.fromarray(np.clip(smooth + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8))


def make_fixture(root: Path, count: int, page_images: int = 108, page_size: int = 512) -> None:
    """``count`` PNGs with A1111 infotext, spread over 30 days and three models, as a long-used install; the newest
    ``page_images`` are ``page_size`` squared and textured, the rest small and flat."""
    image = Image.new("RGB", (64, 64), (90, 120, 200))
    start = datetime(2026, 1, 1).timestamp()
    for i in range(count):
        prompt = " ".join(WORDS[(i * k) % len(WORDS)] for k in (1, 3, 7)) + f" #{i}"
        params = {
            "Steps": 20, "Sampler": "Euler a", "CFG scale": 7, "Seed": i, "Size": "512x512",
            "Model": ("sd15", "dreamshaper", "sdxl")[i % 3],
        }  # fmt: skip
        mode = "img2img" if i % 5 == 0 else "txt2img"
        when = datetime.fromtimestamp(start + i * (30 * 86400 / count))
        picture = textured(page_size, i) if i >= count - page_images else image
        path = save_image(picture, root, mode, i, format_infotext(prompt, "blurry", params), when=when)
        os.utime(path, (when.timestamp(), when.timestamp()))


def timed(fn, repeat: int = 5, before=None) -> tuple[float, object]:
    """Median seconds of ``repeat`` calls of ``fn`` (``before`` runs untimed ahead of each), and the last result."""
    times, result = [], None
    for _ in range(repeat):
        if before is not None:
            before()
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


CHROMIUM = "/usr/bin/chromium"
_TILES_DRAWN = """count => {
    const images = [...document.querySelectorAll('#history_gallery img')];
    return images.length === count && images.every(img => img.complete && img.naturalWidth > 0);
}"""


def in_browser(root: Path, runs: int, tiles: int) -> tuple[float, float]:
    """Median seconds from clicking History to ``tiles`` drawn images in Chromium: (first open, warm open)."""
    from playwright.sync_api import sync_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    models = Path(tempfile.mkdtemp(prefix="easel-bench-models-"))
    env = {**os.environ, "GRADIO_TEMP_DIR": str(root / ".gradio-cache")}
    command = [sys.executable, "app.py", "--port", str(port), "--outputs-dir", str(root), "--models-dir", str(models)]
    server = subprocess.Popen(
        command, cwd=Path(__file__).resolve().parents[1], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            deadline = time.monotonic() + 120
            while True:
                try:
                    urllib.request.urlopen(url, timeout=2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("app.py did not start") from None
                    time.sleep(0.5)

            def open_history(fresh: bool) -> float:
                if fresh:
                    shutil.rmtree(root / THUMBNAIL_DIR, ignore_errors=True)
                    for cached in (root / ".gradio-cache").glob("*"):
                        shutil.rmtree(cached, ignore_errors=True)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(url)
                page.get_by_role("tab", name="History", exact=True).wait_for()
                time.sleep(1.0)  # let the page's load events finish first
                started = time.perf_counter()
                page.get_by_role("tab", name="History", exact=True).click()
                page.wait_for_function(_TILES_DRAWN, arg=tiles, timeout=60_000, polling=10)
                seconds = time.perf_counter() - started
                page.close()
                return seconds

            open_history(False)  # the first page load of a server warms Gradio and Chromium up
            cold = [open_history(True) for _ in range(runs)]
            warm = [open_history(False) for _ in range(runs)]
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(models, ignore_errors=True)
    return statistics.median(cold), statistics.median(warm)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the fixture here instead of a temp folder")
    parser.add_argument("--page-images", type=int, default=108, help="how many of the newest images are full size")
    parser.add_argument("--page-size", type=int, default=512, help="their width and height")
    parser.add_argument("--cold-runs", type=int, default=5, help="first opens to time (thumbnails deleted before each)")
    parser.add_argument("--browser", action="store_true", help="also time the first page in Chromium (see above)")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="easel-history-bench-"))
    os.environ.setdefault("GRADIO_TEMP_DIR", str(root / ".gradio-cache"))  # before gradio is imported
    try:
        if not any(root.rglob("*.png")):
            started = time.perf_counter()
            make_fixture(root, args.count, args.page_images, args.page_size)
            print(
                f"fixture: {args.count} PNGs ({args.page_images} newest at {args.page_size}x{args.page_size}) "
                f"in {time.perf_counter() - started:.1f} s"
            )
        (root / INDEX_NAME).unlink(missing_ok=True)
        index = HistoryIndex(root)
        started = time.perf_counter()
        report = index.sync()
        rebuild = time.perf_counter() - started
        print(f"rebuild from files: {report.added} images in {rebuild:.2f} s")
        resync, _ = timed(index.sync, 3)
        first, page = timed(lambda: index.page(0, 36))
        last, _ = timed(lambda: index.page(page.pages - 1, 36))
        search, found = timed(lambda: index.page(0, 36, search="dragon castle"))
        filtered, _ = timed(lambda: index.page(0, 36, model="sdxl", mode="img2img"))

        import gradio as gr
        from gradio import processing_utils

        from webui.ui.history_tab import PER_PAGE, gallery_tiles, query

        service = SimpleNamespace(history=index)
        gallery = gr.Gallery(allow_preview=False, buttons=[])

        def handler() -> list[tuple[str, str]]:
            """What the History tab does for its first page: query, thumbnails, the model list."""
            found = query(service, 0, "", "All", "All", "", "")
            tiles, _ = gallery_tiles(index, found.entries)
            index.models()
            return tiles

        def through_gradio(tiles: list[tuple[str, str]]) -> None:
            """Gradio's part before the browser can ask for the files: wrap them, hash and copy them into its cache."""
            processing_utils.move_files_to_cache(gallery.postprocess(tiles), gallery, postprocess=True)

        def forget_thumbnails() -> None:
            """As before the first open: no thumbnails, and Gradio's cache without copies of them."""
            shutil.rmtree(root / THUMBNAIL_DIR, ignore_errors=True)
            shutil.rmtree(gallery.GRADIO_CACHE, ignore_errors=True)

        cold_handler, tiles = timed(handler, args.cold_runs, before=forget_thumbnails)
        cold_total, _ = timed(lambda: through_gradio(handler()), args.cold_runs, before=forget_thumbnails)
        warm_handler, tiles = timed(handler)
        warm_total, _ = timed(lambda: through_gradio(handler()))
        full = [(str(e.path), "") for e in index.page(0, PER_PAGE).entries]
        full_gradio, _ = timed(lambda: through_gradio(full), before=lambda: shutil.rmtree(gallery.GRADIO_CACHE, True))
        thumb_bytes = sum(Path(path).stat().st_size for path, _ in tiles)
        full_bytes = sum(Path(path).stat().st_size for path, _ in full)
        with Image.open(tiles[0][0]) as sample:
            thumb_size = sample.size
        rows = [
            ("sync with nothing new (start-up)", resync),
            ("first page, newest 36", first),
            ("last page", last),
            (f"search 'dragon castle' ({found.total} hits)", search),
            ("filter model + mode", filtered),
            ("History tab handler, warm (thumbnails cached)", warm_handler),
            ("  + Gradio's copy into its cache", warm_total),
            (f"History tab handler, first open (36 made, {args.cold_runs} runs)", cold_handler),
            ("  + Gradio's copy into its cache", cold_total),
            ("before thumbnails: the full images through Gradio", full_gradio),
        ]
        print(f"{page.total} images indexed; medians (5 runs unless said):")
        for name, seconds in rows:
            print(f"  {name:<56} {seconds * 1000:8.1f} ms")
        print(
            f"first page: {len(tiles)} thumbnails ({thumb_size[0]}x{thumb_size[1]}) = {thumb_bytes / 1024:.0f} KB "
            f"to download, against {full_bytes / 1024:.0f} KB of {args.page_size}x{args.page_size} PNGs"
        )
        if args.browser:
            index.close()
            cold_browser, warm_browser = in_browser(root, args.cold_runs, len(tiles))
            print(f"in Chromium, click on History until {len(tiles)} tiles are drawn (median of {args.cold_runs}):")
            print(f"  {'first open (thumbnails made)':<56} {cold_browser * 1000:8.1f} ms")
            print(f"  {'warm open':<56} {warm_browser * 1000:8.1f} ms")
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        )
    finally:
        shutil.rmtree(root / ".gradio-cache", ignore_errors=True)
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
