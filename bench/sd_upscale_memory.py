"""Benchmark: peak memory of SD upscale (tiles) against one img2img pass at the full output size.

    .venv/bin/python bench/sd_upscale_memory.py CHECKPOINT.safetensors [--tile 256] [--device auto]

Each case runs in its own process (the peak is the process's, nothing carried over): the same input upscaled 2x
and 4x by SD upscale with tiles of ``--tile`` pixels, and plain img2img straight at the 2x and 4x sizes. On CPU
the figure is how far the resident memory rose during the job (sampled every 20 ms; the model is loaded before),
beside the process's overall peak; on CUDA the peak allocated device memory as well. The point
is the shape: SD upscale's peak stays near one tile's work whatever the output size, img2img's grows with it.
Use a full-size random checkpoint (tools/make_random_checkpoint.py) for real figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_case(checkpoint: Path, mode: str, scale: int, tile: int, device: str) -> dict[str, float]:
    """One measurement, in this process (called in a child)."""
    import resource
    import threading
    import time

    import psutil
    import torch
    from PIL import Image

    from webui.service.factory import create_service
    from webui.settings import Settings
    from webui.types import GenerationRequest

    work = Path(tempfile.mkdtemp(prefix="easel-sdup-"))
    settings = Settings(
        ckpt_dir=checkpoint.parent, models_dir=work, outputs_dir=work / "out", cache_dir=work, device=device,
        demo_model=False,
    )  # fmt: skip
    service = create_service(settings)
    source = Image.effect_mandelbrot((tile, tile), (-2.0, -1.2, 0.8, 1.2), 60).convert("RGB")
    common = {
        "mode": "img2img", "prompt": "a landscape", "init_image": source, "steps": 2, "denoising_strength": 0.5,
        "seed": 1, "save_images": False, "checkpoint": checkpoint.name, "sampler_name": "Euler",
    }  # fmt: skip
    if mode == "sd_upscale":
        fields = {
            "width": tile,
            "height": tile,
            "sd_upscale": True,
            "sd_upscale_scale": scale,
            "sd_upscale_overlap": 32,
        }
    else:
        fields = {"width": tile * scale, "height": tile * scale}
    service.generate(GenerationRequest.build(**{**common, "width": 64, "height": 64, "steps": 1}), timeout=3600)
    cuda = service.engine.device.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    process = psutil.Process()
    before = process.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:  # the job's own peak: loading the model (done above) is not counted
        while not done.wait(0.02):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    result = service.generate(GenerationRequest.build(**{**common, **fields}), timeout=3600)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    size = result.images[0].image.size
    service.stop()
    figures = {
        "seconds": round(seconds, 1),
        "width": size[0],
        "job_rss_growth_mib": round((peak[0] - before) / 2**20),
        "process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if cuda:
        figures["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # mode:scale, run in a child process
    args = parser.parse_args()
    checkpoint = args.checkpoint.resolve()
    if args.case:
        mode, scale = args.case.split(":")
        print(json.dumps(run_case(checkpoint, mode, int(scale), args.tile, args.device)))
        return
    report = {}
    for mode in ("sd_upscale", "img2img"):
        for scale in (2, 4):
            command = [sys.executable, __file__, str(checkpoint), "--tile", str(args.tile), "--device", args.device]
            out = subprocess.run([*command, "--case", f"{mode}:{scale}"], capture_output=True, text=True, check=True)
            report[f"{mode} x{scale}"] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{mode} x{scale}: {report[f'{mode} x{scale}']}", flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
