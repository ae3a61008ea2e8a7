"""Draw the demo model's outputs for a fixed set of prompts into one captioned grid (docs/images/demo-grid.png).

    python tools/demo_grid.py [--out docs/images/demo-grid.png] [--seed 1]

Runs through the same service as the app, on an empty temporary models folder (so the demo model is the
default), and writes under each picture its prompt and what ``webui.demo.measure`` reads from it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image, ImageDraw

from webui.demo import measure
from webui.service.factory import create_service
from webui.settings import Settings
from webui.types import GenerationRequest

PROMPTS = [
    "a red circle on a blue background",
    "a large yellow star on a black background",
    "a small green triangle in the top left on a white background",
    "a large blue square in the bottom right on an orange background",
    "a small white circle in the top right on a purple background",
    "a large pink triangle on a cyan background",
    "a small black star in the bottom left on a yellow background",
    "a large orange circle in the center on a gray background",
    "a brown square on a pink background",
    "a large cyan star on a red background",
    "a small purple square in the center on a green background",
    "a large gray circle on a white and blue background",
]
CELL = 192  # each 64 px image shown 3x, nearest-neighbour, so pixels stay honest
TEXT = 44


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs/images/demo-grid.png")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--model", type=Path, default=None, help="another demo-model file (default: the shipped one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        (root / "models" / "Stable-diffusion").mkdir(parents=True)
        if args.model is not None:
            shutil.copy(args.model, root / "models" / "Stable-diffusion" / args.model.name)
        settings = Settings(models_dir=root / "models", outputs_dir=root / "outputs", demo_model=args.model is None)
        service = create_service(settings)
        try:
            defaults = {"width": 64, "height": 64, **service.defaults_for(None)}
            images = []
            for prompt in PROMPTS:
                request = GenerationRequest.build(prompt=prompt, seed=args.seed, save_images=False, **defaults)
                images.append(service.generate(request, timeout=300).images[0].image)
        finally:
            service.stop()
    rows = -(-len(images) // args.columns)
    grid = Image.new("RGB", (args.columns * CELL, rows * (CELL + TEXT)), "white")
    draw = ImageDraw.Draw(grid)
    for index, (prompt, image) in enumerate(zip(PROMPTS, images, strict=True)):
        x, y = (index % args.columns) * CELL, (index // args.columns) * (CELL + TEXT)
        grid.paste(image.resize((CELL, CELL), Image.Resampling.NEAREST), (x, y))
        reading = measure.read(image)
        seen = f"read: {reading.shape} on {reading.background}" + (f", {reading.quadrant}" if reading.quadrant else "")
        words = prompt.split()
        half = len(words) // 2
        for line, text in enumerate((" ".join(words[:half]), " ".join(words[half:]), seen)):
            draw.text((x + 4, y + CELL + 2 + line * 13), text, fill=(0, 0, 0) if line < 2 else (90, 90, 90))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    print(f"wrote {args.out} ({len(images)} images, seed {args.seed}, settings {defaults})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
