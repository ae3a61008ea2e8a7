"""Train the demo model's canny ControlNet on its frozen weights and save it where Easel ships it.

    python tools/train_demo_controlnet.py --threads 2       # into webui/demo/ (figures in docs/demo-model.md)
    python tools/train_demo_controlnet.py --quick --out /tmp/c.safetensors   # a few steps: checks the script

The run is reproducible from ``--seed`` on the same machine and torch build. Progress is printed with an ETA.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from webui.demo import train_controlnet, train_networks
from webui.demo.weights import DEMO_CONTROLNET_PATH, DEMO_MODEL_PATH


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEMO_MODEL_PATH, help="the base model (default: the demo model)")
    parser.add_argument("--out", type=Path, default=DEMO_CONTROLNET_PATH)
    parser.add_argument("--seed", type=int, default=train_controlnet.ControlNetConfig.seed)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="a few steps to check the script works (useless file)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = train_controlnet.ControlNetConfig(seed=args.seed)
    if args.quick:
        config = train_controlnet.ControlNetConfig(
            seed=args.seed, scenes=16, steps=3, batch=4, warmup_steps=0, log_every=1
        )
    if args.steps is not None:
        config.steps = args.steps
    log = lambda line: print(line, flush=True)  # noqa: E731
    print(f"training the demo canny ControlNet on {args.model} (seed {config.seed}, {torch.get_num_threads()} threads)")
    started = time.perf_counter()
    state, metadata = train_controlnet.train_controlnet(
        config, log=log, components=train_networks.load_demo(args.model)
    )
    train_networks.save(state, metadata, args.out)
    minutes = (time.perf_counter() - started) / 60
    print(f"saved {args.out} ({args.out.stat().st_size / 1024:.0f} KiB) after {minutes:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
