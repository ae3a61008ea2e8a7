"""Benchmark: checkpoint switching A -> B -> A with and without the RAM cache (--ckpt-cache).

    .venv/bin/python bench/switching.py A.safetensors B.safetensors [--device auto]

Both files must sit in one folder. Prints load and switch times; "switch back" with the cache is a move between
RAM and the device (nothing on CPU), without it a full read-and-convert of the file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from webui.pipeline.device import choose
    from webui.settings import Settings
    from webui.weights.manager import WeightsManager

    work = Path(tempfile.mkdtemp(prefix="easel-switch-"))
    report = {}
    for cache in (0, 1):
        settings = Settings(ckpt_dir=args.first.resolve().parent, cache_dir=work, device=args.device, ckpt_cache=cache)
        weights = WeightsManager(settings, choose(settings))
        weights.refresh()
        times = []
        for name in (args.first.name, args.second.name, args.first.name):
            start = time.perf_counter()
            weights.use(name)
            times.append(round(time.perf_counter() - start, 3))
        report[f"ckpt_cache={cache}"] = {"load A": times[0], "switch to B": times[1], "switch back to A": times[2]}
        weights.active = None
    report["device"] = choose(Settings(device=args.device)).label
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
