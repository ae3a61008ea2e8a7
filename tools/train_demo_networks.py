"""Train the demo model's own LoRA (``striped``) and embedding (``easelviolet``) on its frozen weights and save them
where Easel ships them.

    python tools/train_demo_networks.py --threads 2          # both, into webui/demo/ (about 4 minutes on 2 cores)
    python tools/train_demo_networks.py --lora-out /tmp/s.safetensors --no-embedding
    python tools/train_demo_networks.py --quick --lora-out /tmp/s.safetensors --embedding-out /tmp/e.safetensors

The run is reproducible from ``--seed`` on the same machine and torch build. Progress is printed with an ETA;
figures of the shipped files are in docs/demo-model.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from webui.demo import train_networks
from webui.demo.weights import DEMO_EMBEDDING_PATH, DEMO_LORA_PATH, DEMO_MODEL_PATH


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEMO_MODEL_PATH, help="the base model (default: the demo model)")
    parser.add_argument("--lora-out", type=Path, default=DEMO_LORA_PATH)
    parser.add_argument("--embedding-out", type=Path, default=DEMO_EMBEDDING_PATH)
    parser.add_argument("--no-lora", action="store_true")
    parser.add_argument("--no-embedding", action="store_true")
    parser.add_argument("--seed", type=int, default=train_networks.NetworkConfig.seed)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--lora-steps", type=int, default=None)
    parser.add_argument("--lora-rank", type=int, default=None)
    parser.add_argument("--embedding-steps", type=int, default=None)
    parser.add_argument("--scenes", type=int, default=None, help="distinct scenes encoded for each network")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="a few steps to check the script works (useless files)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = train_networks.NetworkConfig(seed=args.seed)
    if args.quick:  # no warm-up, so that even a couple of steps move the weights
        config = train_networks.NetworkConfig(
            seed=args.seed, scenes=128, lora_steps=5, embedding_steps=5, warmup_steps=1, log_every=1
        )
    if args.scenes is not None:
        config.scenes = args.scenes
    if args.batch is not None:
        config.batch = args.batch
    if args.lora_steps is not None:
        config.lora_steps = args.lora_steps
    if args.lora_rank is not None:
        config.lora_rank = args.lora_rank
        config.lora_alpha = float(args.lora_rank)
    if args.embedding_steps is not None:
        config.embedding_steps = args.embedding_steps
    log = lambda line: print(line, flush=True)  # noqa: E731
    print(f"training the demo networks on {args.model} (seed {config.seed}, {torch.get_num_threads()} threads)")
    jobs = []
    if not args.no_lora:
        jobs.append((train_networks.train_lora, args.lora_out))
    if not args.no_embedding:
        jobs.append((train_networks.train_embedding, args.embedding_out))
    for job, out in jobs:
        started = time.perf_counter()
        state, metadata = job(config, log=log, components=train_networks.load_demo(args.model))
        train_networks.save(state, metadata, out)
        minutes = (time.perf_counter() - started) / 60
        print(f"saved {out} ({out.stat().st_size / 1024:.0f} KiB) after {minutes:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
