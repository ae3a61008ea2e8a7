"""Measured prompt adherence of the demo model (or any model drawing its vocabulary), for tests and reports.

Each function takes ``generate(prompt, seed, **request_fields) -> PIL image`` so it runs on whatever path the
caller wants to check (the tests use the real service) and returns figures, not verdicts: the tests decide
the thresholds, ``tools/eval_demo_model.py`` prints the figures for docs/demo-model.md.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from PIL import Image

from webui.demo import measure, scenes

Generate = Callable[..., Image.Image]
COLOURS = list(scenes.COLOURS)
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
POSITION_PAIRS = [("red", "white"), ("blue", "yellow"), ("green", "black"), ("yellow", "purple")]


def colour_cases() -> list[tuple[str, str, str]]:
    """(prompt, shape colour, background colour): every colour twice, on two different backgrounds."""
    cases = []
    for i, colour in enumerate(COLOURS):
        for offset, shape in ((3, "circle"), (7, "square")):
            background = COLOURS[(i + offset) % len(COLOURS)]
            prompt = f"a large {colour} {shape} on {scenes.article(background)} {background} background"
            cases.append((prompt, colour, background))
    return cases


@dataclass
class ColourScore:
    shape_rate: float  # prompts whose shape is mostly the prompted colour
    background_rate: float  # prompts whose background is the prompted colour
    adherence: float  # mean of (prompted colour's share of the shape + background right) / 2
    failures: list[str] = field(default_factory=list)


def colour_score(generate: Generate, cfg_scale: float = 5.0, seed: int = 100) -> ColourScore:
    cases = colour_cases()
    shape_right = background_right = 0
    total = 0.0
    failures = []
    for index, (prompt, colour, background) in enumerate(cases):
        reading = measure.read(generate(prompt, seed + index, cfg_scale=cfg_scale))
        shape_ok = reading.shape == colour and reading.shape_purity >= 0.5
        shape_right += shape_ok
        background_right += reading.background == background
        total += reading.share_in_shape(colour) + (reading.background == background)
        if not shape_ok or reading.background != background:
            failures.append(f"{prompt!r} (seed {seed + index}): read {reading.shape} on {reading.background}")
    n = len(cases)
    return ColourScore(shape_right / n, background_right / n, total / (2 * n), failures)


def position_hits(generate: Generate, position: str, seed: int = 200, cfg_scale: float = 3.0) -> int:
    """How many of the POSITION_PAIRS prompts put the shape's centre of mass in the named quadrant."""
    hits = 0
    for index, (colour, background) in enumerate(POSITION_PAIRS):
        prompt = f"a small {colour} circle in the {position} on a {background} background"
        hits += measure.read(generate(prompt, seed + index, cfg_scale=cfg_scale)).quadrant == position
    return hits


def colour_share(
    generate: Generate, prompt: str, colour: str, seeds: range, negative: str = "", cfg_scale: float = 7.0
) -> float:
    """Mean share of the image in ``colour`` over ``seeds``."""
    shares = [
        measure.read(generate(prompt, seed, negative_prompt=negative, cfg_scale=cfg_scale)).shares[colour]
        for seed in seeds
    ]
    return float(np.mean(shares))


@cache  # hundreds of renders, and the answer never changes
def trained_size(size: str, shape: str, count: int = 200, seed: int = 0) -> float:
    """Mean share of the image a ``size`` ``shape`` covers in the training data, read as generated images are
    read (so rendering and measuring biases cancel)."""
    rng = random.Random(seed)
    fractions: list[float] = []
    while len(fractions) < count:
        scene = scenes.random_scene(rng)
        if (scene.size, scene.shape, scene.background2) == (size, shape, None):
            fractions.append(measure.read(scenes.render(scene)).shape_fraction)
    return float(np.mean(fractions))


def size_adherence(
    generate: Generate, cfg_scale: float, seed: int = 300, count: int = 32, size: str = "large"
) -> float:
    """How close drawn ``size`` shapes come to the area they had in training, 1.0 being exact: the mean over
    ``count`` prompts (every colour and shape) of min(drawn, trained) / max(drawn, trained).

    Colour prompts are right even without guidance, so this is where CFG shows: unguided (CFG 1) the model
    hedges between sizes and draws large shapes too small.
    """
    targets = {shape: trained_size(size, shape) for shape in scenes.SHAPES}
    scores = []
    for index in range(count):
        colour = COLOURS[index % len(COLOURS)]
        background = COLOURS[(index + 5 + index // len(COLOURS)) % len(COLOURS)]
        shape = scenes.SHAPES[index % len(scenes.SHAPES)]
        prompt = f"a {size} {colour} {shape} on {scenes.article(background)} {background} background"
        drawn = measure.read(generate(prompt, seed + index, cfg_scale=cfg_scale)).shape_fraction
        scores.append(min(drawn, targets[shape]) / max(drawn, targets[shape], 1e-6))
    return float(np.mean(scores))
