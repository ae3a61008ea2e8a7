"""Measure how well a demo-model file follows prompts: the figures quoted in docs/demo-model.md.

    python tools/eval_demo_model.py                      # the shipped model
    python tools/eval_demo_model.py --model /tmp/snap.safetensors

Generates through the normal service (the file is copied into a temporary checkpoint folder) and reads the
images back with ``webui.demo.measure``; the tests assert thresholds on the same functions.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from webui.demo import evaluate
from webui.demo.weights import DEMO_MODEL_PATH
from webui.service.factory import create_service
from webui.settings import Settings
from webui.types import GenerationRequest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEMO_MODEL_PATH)
    parser.add_argument("--sampler", default="Euler a")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        (root / "ckpt").mkdir()
        shutil.copy(args.model, root / "ckpt" / args.model.name)
        settings = Settings(models_dir=root, ckpt_dir=root / "ckpt", outputs_dir=root / "out", demo_model=False)
        service = create_service(settings)
        started = time.perf_counter()
        count = 0

        def run(prompt: str, seed: int, **fields):
            nonlocal count
            count += 1
            fields = {"width": 64, "height": 64, "sampler_name": args.sampler, "steps": args.steps, **fields}
            request = GenerationRequest.build(prompt=prompt, seed=seed, save_images=False, **fields)
            return service.generate(request, timeout=300).images[0].image

        try:
            score = evaluate.colour_score(run, cfg_scale=3.0)
            print(f"colour prompts ({len(evaluate.colour_cases())}, CFG 3): shape colour right {score.shape_rate:.0%},")
            print(f"  background right {score.background_rate:.0%}, adherence {score.adherence:.2f}")
            for failure in score.failures:
                print(f"  miss: {failure}")
            for cfg in (1.0, 3.0, 5.0, 7.0):
                print(f"adherence at CFG {cfg:g}: {evaluate.colour_score(run, cfg_scale=cfg, seed=300).adherence:.2f}")
            for size in ("small", "large"):
                sizes = {cfg: evaluate.size_adherence(run, cfg, seed=600, count=48, size=size) for cfg in (1, 2, 3, 5)}
                print(f"{size}-size adherence at CFG 1 / 2 / 3 / 5: " + " / ".join(f"{v:.3f}" for v in sizes.values()))
            for cfg in (1.0, 3.0):
                hits = [evaluate.position_hits(run, quadrant, cfg_scale=cfg) for quadrant in evaluate.QUADRANTS]
                print(f"positions at CFG {cfg:g} ({' / '.join(evaluate.QUADRANTS)}): {hits} of 4")
            prompt, seeds = "a large circle on a white background", range(400, 424)
            for cfg in (3.0, 5.0):
                plain = evaluate.colour_share(run, prompt, "red", seeds, cfg_scale=cfg)
                avoided = evaluate.colour_share(run, prompt, "red", seeds, negative="red", cfg_scale=cfg)
                white = evaluate.colour_share(run, prompt, "white", seeds, negative="red", cfg_scale=cfg)
                print(f"CFG {cfg:g}, '{prompt}', {len(seeds)} seeds: red share {plain:.3f}; with negative 'red' "
                      f"{avoided:.3f} (white share then {white:.3f})")  # fmt: skip
        finally:
            service.stop()
        seconds = time.perf_counter() - started
        print(f"{count} images in {seconds:.0f} s ({seconds / count:.2f} s each, {args.sampler}, {args.steps} steps)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
