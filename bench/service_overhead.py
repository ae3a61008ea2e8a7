"""Benchmark: Easel's service overhead over calling the diffusers pipeline directly, same model and settings.

Runs the service's repeats first, stops it, then the direct repeats, in one process, and reports medians and
the ratio service / direct, which must stay <= 1.03. The arms do not alternate: each thread that runs torch
ops gets its own OpenMP pool, and on a 2-core machine two pools slow every later call about threefold (0.3 s
→ 0.9 s an image on the demo model), whichever thread makes it. Also times mode switching (txt2img ->
img2img -> inpaint: no reload) and checkpoint loading from a cold and a warm hash cache.

    .venv/bin/python bench/service_overhead.py [--family sd1] [--size 256] [--steps 20] [--repeats 5]

Without --checkpoint it builds a small random-weight SD model with the test fixtures (speed, not pictures).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", type=Path, help="a real checkpoint file (default: build a small one)")
    parser.add_argument("--family", default="sd1", choices=["sd1", "sd2", "sdxl"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()

    import torch

    from webui.service.factory import create_service
    from webui.settings import Settings
    from webui.types import GenerationRequest, Mode

    work = Path(tempfile.mkdtemp(prefix="easel-bench-"))
    ckpt_dir = work / "Stable-diffusion"
    ckpt_dir.mkdir()
    if args.checkpoint:
        ckpt_dir = args.checkpoint.resolve().parent  # the registry refuses symlinks that leave its folder
    else:
        from tests.fixtures.tiny_models import make_checkpoint

        # On a throwaway thread: torch ops here would leave the main thread an OpenMP pool (see above).
        builder = threading.Thread(target=make_checkpoint, args=(ckpt_dir,), kwargs={"family": args.family})
        builder.start()
        builder.join()
    settings = Settings(
        models_dir=work, ckpt_dir=ckpt_dir, outputs_dir=work / "outputs", device=args.device, precision=args.precision,
        checkpoint=args.checkpoint.name if args.checkpoint else None, cache_dir=work / "cache",
    )  # fmt: skip

    # Checkpoint load: cold hash cache (hash computed), then warm (hash read from the cache).
    t0 = time.perf_counter()
    service = create_service(settings)
    request = GenerationRequest.build(
        prompt="a red circle on a blue background", steps=args.steps, width=args.size, height=args.size,
        seed=1, save_images=False,
    )  # fmt: skip
    service.generate(request)
    cold = service.engine.weights.active.load_seconds
    service.stop()
    service = create_service(settings)
    service.generate(request)
    warm = service.engine.weights.active.load_seconds
    startup_total = time.perf_counter() - t0

    engine = service.engine
    model = engine.weights.active
    direct_pipe = engine.pipeline_for(model, Mode.TXT2IMG)  # the same modules, called the plain diffusers way

    def direct() -> None:
        from webui.pipeline.schedulers import build_scheduler

        direct_pipe.scheduler = build_scheduler(model.scheduler_config, request.sampler_name, request.scheduler, 1)
        with torch.inference_mode():
            direct_pipe(
                prompt=request.prompt, negative_prompt="", num_inference_steps=args.steps, guidance_scale=7.0,
                width=args.size, height=args.size, generator=torch.Generator("cpu").manual_seed(1), output_type="pil",
            )  # fmt: skip

    def via_service() -> None:
        service.generate(request)

    via_service()
    times: dict[str, list[float]] = {"direct": [], "service": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        via_service()
        times["service"].append(time.perf_counter() - start)

    # Mode switching: the same loaded components serve every mode; time each first call.
    from PIL import Image

    init = Image.new("RGB", (args.size, args.size), (200, 30, 30))
    mask = Image.new("L", (args.size, args.size), 0)
    mask.paste(255, (0, 0, args.size // 2, args.size // 2))
    switch = {}
    for mode, extra in (
        ("img2img", {"init_image": init, "denoising_strength": 0.5}),
        ("inpaint", {"init_image": init, "mask": mask, "denoising_strength": 0.75}),
        ("txt2img", {}),
    ):
        req = GenerationRequest.build(**{**request.model_dump(), "mode": mode, **extra})
        loads_before = id(engine.weights.active)
        start = time.perf_counter()
        service.generate(req)
        switch[mode] = {
            "seconds": round(time.perf_counter() - start, 3),
            "reloaded": id(engine.weights.active) != loads_before,
        }
    service.stop()  # its worker thread ends, and with it that thread's OpenMP pool

    direct()
    for _ in range(args.repeats):
        start = time.perf_counter()
        direct()
        times["direct"].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}

    report = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "device": engine.device.label,
        "model": model.info.name if args.checkpoint else f"random-weight {args.family} test model",
        "size": args.size,
        "steps": args.steps,
        "direct_median_s": round(med["direct"], 4),
        "service_median_s": round(med["service"], 4),
        "overhead_ratio": round(med["service"] / med["direct"], 4),
        "checkpoint_load_cold_s": round(cold, 3),
        "checkpoint_load_warm_s": round(warm, 3),
        "two_startups_total_s": round(startup_total, 2),
        "mode_switch": switch,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
