"""Procedural training scenes for the demo model: one flat-coloured shape on a plain or two-tone background.

Everything is drawn from a seed, so the data set is the same on every machine and nothing is downloaded. The
vocabulary here is also what the meaning tests measure against: a generated image is read back by classifying
its pixels to the nearest named colour.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

# Named colours, spread out in RGB so a pixel's nearest name is unambiguous.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 225, 30),
    "green": (30, 160, 50),
    "cyan": (40, 210, 225),
    "blue": (30, 60, 215),
    "purple": (125, 45, 175),
    "pink": (250, 140, 200),
    "brown": (115, 65, 25),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES: dict[str, tuple[float, float]] = {"small": (0.12, 0.16), "large": (0.26, 0.31)}  # radius / image size
POSITIONS: dict[str, tuple[float, float]] = {
    "in the top left": (0.3, 0.3),
    "in the top right": (0.7, 0.3),
    "in the bottom left": (0.3, 0.7),
    "in the bottom right": (0.7, 0.7),
    "in the center": (0.5, 0.5),
}
POSITION_JITTER = 0.05
STRIPE_PERIOD = 8  # striped shapes (the demo LoRA's data): horizontal bands, half of this many pixels each
SUPERSAMPLE = 4  # drawn this much larger, then downscaled: smooth edges like a real photo's


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    size: str
    position: str
    background: str
    background2: str | None = None  # two-tone: ``background`` on top, this below
    cx: float = 0.5  # centre and radius as fractions of the image size, after jitter
    cy: float = 0.5
    radius: float = 0.2
    striped: bool = False  # the shape in horizontal bands of its colour and ``stripe_colour`` (the demo LoRA)


def random_scene(rng: random.Random) -> Scene:
    shape = rng.choice(SHAPES)
    colour = rng.choice(list(COLOURS))
    others = [c for c in COLOURS if c != colour]
    background = rng.choice(others)
    background2 = None
    if rng.random() < 0.2:
        background2 = rng.choice([c for c in others if c != background])
    size = rng.choice(list(SIZES))
    position = rng.choice(list(POSITIONS))
    radius = rng.uniform(*SIZES[size])
    px, py = POSITIONS[position]
    cx = px + rng.uniform(-POSITION_JITTER, POSITION_JITTER)
    cy = py + rng.uniform(-POSITION_JITTER, POSITION_JITTER)
    # Keep the shape inside the frame.
    cx = min(max(cx, radius + 0.02), 0.98 - radius)
    cy = min(max(cy, radius + 0.02), 0.98 - radius)
    return Scene(shape, colour, size, position, background, background2, cx, cy, radius)


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def background_phrase(scene: Scene) -> str:
    if scene.background2 is None:
        return f"on {article(scene.background)} {scene.background} background"
    return f"on {article(scene.background)} {scene.background} and {scene.background2} background"


def caption(scene: Scene, rng: random.Random | None = None) -> str:
    """The scene in plain English; given ``rng``, parts are left out at random, as people write prompts.

    Training on partial captions is what makes short prompts (``a red circle``, or a negative prompt of just
    ``red``) mean something, and an empty caption now and then teaches the unconditional model CFG needs.
    """
    keep = {"size": True, "colour": True, "shape": True, "position": True, "background": True}
    if rng is not None:
        keep = {
            "size": rng.random() < 0.5,
            "colour": rng.random() < 0.9,
            "shape": rng.random() < 0.85,
            "position": rng.random() < 0.6,
            "background": rng.random() < 0.7,
        }
        if rng.random() < 0.1:
            return ""
    words = [w for part, w in (("size", scene.size), ("colour", scene.colour)) if keep[part]]
    words.append(scene.shape if keep["shape"] else "shape")
    text = f"{article(words[0])} {' '.join(words)}"
    if keep["position"]:
        text += f" {scene.position}"
    if keep["background"]:
        text += f" {background_phrase(scene)}"
    return text


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    points = []
    for i in range(10):
        angle = -math.pi / 2 + i * math.pi / 5
        radius = r if i % 2 == 0 else r * 0.45
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def stripe_colour(scene: Scene) -> str:
    """The second colour of a striped shape: white, or the first of black, gray, yellow not already in the scene."""
    used = {scene.colour, scene.background, scene.background2}
    return next(c for c in ("white", "black", "gray", "yellow") if c not in used)


def render(scene: Scene, size: int = 64) -> Image.Image:
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), COLOURS[scene.background])
    if scene.background2 is not None:
        ImageDraw.Draw(image).rectangle((0, big // 2, big, big), fill=COLOURS[scene.background2])
    if scene.striped:  # draw the outline as a mask, then paste bands of the two colours through it
        mask = Image.new("L", (big, big), 0)
        _draw_shape(ImageDraw.Draw(mask), scene, big, 255)
        fill = Image.new("RGB", (big, big), COLOURS[scene.colour])
        band = STRIPE_PERIOD * SUPERSAMPLE // 2
        bands = ImageDraw.Draw(fill)
        for top in range(band, big, 2 * band):
            bands.rectangle((0, top, big, top + band - 1), fill=COLOURS[stripe_colour(scene)])
        image.paste(fill, (0, 0), mask)
    else:
        _draw_shape(ImageDraw.Draw(image), scene, big, COLOURS[scene.colour])
    return image.resize((size, size), Image.Resampling.BOX)


def _draw_shape(draw: ImageDraw.ImageDraw, scene: Scene, big: int, fill: tuple[int, int, int] | int) -> None:
    cx, cy, r = scene.cx * big, scene.cy * big, scene.radius * big
    if scene.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif scene.shape == "square":
        half = r * 0.85
        draw.rectangle((cx - half, cy - half, cx + half, cy + half), fill=fill)
    elif scene.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)], fill=fill)
    else:
        draw.polygon(_star(cx, cy, r), fill=fill)


def dataset(
    count: int, seed: int, size: int = 64, *, striped: bool = False, colour: str | None = None
) -> tuple[np.ndarray, list[Scene]]:
    """``count`` rendered scenes as a uint8 array (N, H, W, 3) and their descriptions, the same for a seed.

    ``striped``: every shape striped (the demo LoRA's data); ``colour``: every shape that colour (the demo
    embedding's), its background drawn again where it would be the same.
    """
    rng = random.Random(seed)
    scenes = [random_scene(rng) for _ in range(count)]
    if colour is not None:
        scenes = [_recoloured(s, colour, rng) for s in scenes]
    if striped:
        scenes = [replace(s, striped=True) for s in scenes]
    pixels = np.stack([np.asarray(render(s, size)) for s in scenes])
    return pixels, scenes


def _recoloured(scene: Scene, colour: str, rng: random.Random) -> Scene:
    others = [c for c in COLOURS if c != colour]
    background = scene.background if scene.background != colour else rng.choice(others)
    background2 = scene.background2
    if background2 is not None and background2 in (colour, background):
        background2 = rng.choice([c for c in others if c != background])
    return replace(scene, colour=colour, background=background, background2=background2)


def nearest_colours(pixels: np.ndarray) -> np.ndarray:
    """Index into ``COLOURS`` of each pixel's nearest named colour (pixels: (..., 3) uint8)."""
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    flat = pixels.reshape(-1, 3).astype(np.float32)
    distances = ((flat[:, None, :] - palette[None, :, :]) ** 2).sum(-1)
    return distances.argmin(1).reshape(pixels.shape[:-1])
