"""Train Easel's built-in demo model from scratch and save it where Easel ships it.

    python tools/train_demo_model.py --out /tmp/stage1.safetensors      # stage 1: 46.5 minutes on 2 CPU cores
    python tools/train_demo_model.py --resume /tmp/stage1.safetensors --unet-steps 2000 --unet-lr 3e-4 \
        --blind-from 999 --top-share 0.1                 # stage 2 (17 minutes): writes the shipped file
    python tools/train_demo_model.py --quick --out /tmp/demo.safetensors   # a smoke run of a minute
    python tools/train_demo_model.py --resume FILE --unet-steps 1500 --out /tmp/more.safetensors

The run is reproducible from ``--seed`` on the same machine and torch build (CPU kernels differ across CPUs in
the last bits). It prints progress with an ETA, and with ``--snapshot`` saves the weights so far every 1000
U-Net steps. Timings of the shipped model are in docs/demo-model.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from webui.demo import train
from webui.demo.weights import DEMO_MODEL_PATH


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEMO_MODEL_PATH, help="where to save (default: the shipped file)")
    parser.add_argument("--seed", type=int, default=train.TrainConfig.seed)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1... (default: cuda when available)")
    parser.add_argument("--vae-steps", type=int, default=None)
    parser.add_argument("--unet-steps", type=int, default=None)
    parser.add_argument("--unet-lr", type=float, default=None)
    parser.add_argument("--snr-floor", type=float, default=None, help="lower bound of the x0 loss weight")
    parser.add_argument("--blind-from", type=int, default=None, help="timestep from which training input is pure noise")
    parser.add_argument("--prediction", choices=["epsilon", "v_prediction"], default=None, help="U-Net target")
    parser.add_argument("--top-share", type=float, default=None, help="share of each batch from t >= blind-from")
    parser.add_argument("--resume", type=Path, default=None, help="continue a saved model's text encoder and U-Net")
    parser.add_argument("--quick", action="store_true", help="a tiny run to check the script works (useless model)")
    parser.add_argument("--snapshot", type=Path, default=None, help="save the weights so far here every 1000 steps")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = train.TrainConfig(seed=args.seed)
    if args.quick:
        config = train.TrainConfig(
            seed=args.seed, vae_steps=20, unet_steps=20, scenes=256, warmup_steps=5, log_every=5, snapshot_every=10
        )
    config.device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.vae_steps is not None:
        config.vae_steps = args.vae_steps
    if args.unet_steps is not None:
        config.unet_steps = args.unet_steps
    if args.unet_lr is not None:
        config.unet_lr = args.unet_lr
    if args.snr_floor is not None:
        config.snr_floor = args.snr_floor
    if args.blind_from is not None:
        config.blind_from = args.blind_from
    if args.prediction is not None:
        config.prediction = args.prediction
    if args.top_share is not None:
        config.top_share = args.top_share
    where = config.device if config.device != "cpu" else f"cpu, {torch.get_num_threads()} threads"
    print(f"training the demo model (seed {config.seed}, {where}) into {args.out}")
    started = time.perf_counter()
    log = lambda line: print(line, flush=True)  # noqa: E731
    if args.resume:
        components, metadata = train.resume(args.resume, config, log=log, snapshot_path=args.snapshot)
    else:
        components, metadata = train.train(config, log=log, snapshot_path=args.snapshot)
    train.save(components, metadata, args.out)
    size = args.out.stat().st_size / 2**20
    print(f"saved {args.out} ({size:.1f} MiB) after {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
