"""Benchmark (GPU): SD1.5-architecture model with random weights at real speed, 512x512, 20 steps, fp16.

Writes a random full-size SD1.5 checkpoint in the original layout (tools/make_random_checkpoint.py), loads it
through Easel's service like a user's file, and reports denoising it/s, whole-image seconds and peak VRAM.

    .venv/bin/python bench/gpu_sd15.py [--steps 20] [--size 512] [--repeats 5] [--precision fp16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--sampler", default="Euler a")
    args = parser.parse_args()

    import torch

    from webui.service.factory import create_service
    from webui.settings import Settings
    from webui.types import GenerationRequest

    if not torch.cuda.is_available():
        sys.exit("this benchmark needs a CUDA GPU")
    work = Path(tempfile.mkdtemp(prefix="easel-gpu-bench-"))
    ckpt = work / "Stable-diffusion" / "random-sd15.safetensors"
    subprocess.run([sys.executable, str(ROOT / "tools/make_random_checkpoint.py"), "--family", "sd1", "--half",
                    "--out", str(ckpt)], check=True)  # fmt: skip
    service = create_service(
        Settings(models_dir=work, outputs_dir=work / "outputs", device="cuda", precision=args.precision)
    )
    request = GenerationRequest.build(prompt="a photo of a cat", steps=args.steps, width=args.size, height=args.size,
                                      seed=1, sampler_name=args.sampler, save_images=False)  # fmt: skip
    service.generate(request)  # load + warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step_times: list[float] = []
    totals: list[float] = []
    for _ in range(args.repeats):
        job = service.submit(request)
        stamps: list[float] = []
        for progress in job.updates():
            if progress.state == "running" and progress.step:
                stamps.append(time.perf_counter())
        job.wait()
        totals.append(job.result.seconds)
        if len(stamps) > 2:
            step_times.append((stamps[-1] - stamps[0]) / (len(stamps) - 1))
    service.stop()
    print(json.dumps({
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "precision": args.precision,
        "size": args.size,
        "steps": args.steps,
        "sampler": args.sampler,
        "denoise_it_per_s": round(1 / statistics.median(step_times), 2) if step_times else None,
        "image_seconds_median": round(statistics.median(totals), 3),
        "peak_vram_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
