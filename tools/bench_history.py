"""How fast History is with many images: rebuild of the index from the files, first page, search, and the
History tab's own first-page handler (what the browser waits for), on generated fixture images.

    python tools/bench_history.py                 # 10,000 images in a temporary folder
    python tools/bench_history.py --count 50000 --keep /tmp/history-fixture

Figures go to docs/performance.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image

from webui.outputs.history import INDEX_NAME, HistoryIndex
from webui.outputs.infotext import format_infotext
from webui.outputs.saving import save_image

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


def make_fixture(root: Path, count: int) -> None:
    """``count`` small PNGs with A1111 infotext, spread over 30 days and three models, as a long-used install."""
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
        path = save_image(image, root, mode, i, format_infotext(prompt, "blurry", params), when=when)
        os.utime(path, (when.timestamp(), when.timestamp()))


def timed(fn, repeat: int = 5) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the fixture here instead of a temp folder")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="easel-history-bench-"))
    try:
        if not any(root.rglob("*.png")):
            started = time.perf_counter()
            make_fixture(root, args.count)
            print(f"fixture: {args.count} PNGs in {time.perf_counter() - started:.1f} s")
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

        from webui.ui.history_tab import query

        service = SimpleNamespace(history=index)
        handler, _ = timed(lambda: (query(service, 0, "", "All", "All", "", ""), index.models()))
        rows = [
            ("sync with nothing new (start-up)", resync),
            ("first page, newest 36", first),
            ("last page", last),
            (f"search 'dragon castle' ({found.total} hits)", search),
            ("filter model + mode", filtered),
            ("History tab first-page handler", handler),
        ]
        print(f"{page.total} images indexed; median of 5 runs:")
        for name, seconds in rows:
            print(f"  {name:<42} {seconds * 1000:8.1f} ms")
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
