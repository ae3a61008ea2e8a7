"""Image steps the extension's annotators share: padding to a multiple of 64, HED's "safe" steps, scribble NMS.

They follow the SD-WebUI ControlNet extension (``scripts/processor.py`` and ``annotator/util.py``), so the same image
gives the same map as there: a ControlNet was trained on maps made this way.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch

Array = np.ndarray

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # per RGB channel, as torchvision's Normalize in the extension
IMAGENET_STD = (0.229, 0.224, 0.225)

_NMS_KERNELS = [
    np.array(rows, dtype=np.uint8)
    for rows in (
        [[0, 0, 0], [1, 1, 1], [0, 0, 0]],
        [[0, 1, 0], [0, 1, 0], [0, 1, 0]],
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        [[0, 0, 1], [0, 1, 0], [1, 0, 0]],
    )
]


def on_padded(image: Array, detect: Callable[[Array], Array]) -> Array:
    """Run ``detect`` on ``image`` grown to multiples of 64 by repeating its edge pixels, and crop the result back.

    The extension does this before every network (its ``resize_image_with_pad``): the networks halve the size up to
    five times, and edge padding keeps a border from reading as an edge."""
    h, w = image.shape[:2]
    padded = np.pad(image, [[0, -h % 64], [0, -w % 64], [0, 0]], mode="edge")
    return np.ascontiguousarray(detect(padded)[:h, :w])


def as_batch(image: Array, divide_by: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    """An HxWxC ``uint8`` array as a 1xCxHxW float32 tensor, ``pixel / divide_by + shift``."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).float().permute(2, 0, 1).unsqueeze(0)
    if divide_by != 1.0:
        tensor = tensor / divide_by
    return tensor + shift if shift else tensor


def to_uint8(values: Array) -> Array:
    """``values`` in [0, 1] as 0-255, clipped and truncated as the extension does."""
    return (values * 255.0).clip(0, 255).astype(np.uint8)


def safe_step(values: Array, step: int = 2) -> Array:
    """The "safe" variants' quantisation: soft edges become three levels (0, 0.5, 1; 1.5 clips to 1), so a
    ControlNet sees fewer faint textures."""
    return np.trunc(values.astype(np.float32) * float(step + 1)) / float(step)


def scribble(edges: Array) -> Array:
    """A soft edge map turned into the scribble ControlNet's input: thin the ridges (non-maximum suppression in four
    directions after a blur, kept above 127), thicken them with a blur, and make every touched pixel white."""
    blurred = cv2.GaussianBlur(edges.astype(np.float32), (0, 0), 3.0)
    ridges = np.zeros_like(blurred)
    for kernel in _NMS_KERNELS:
        np.putmask(ridges, cv2.dilate(blurred, kernel=kernel) == blurred, blurred)
    thin = np.where(ridges > 127, 255, 0).astype(np.uint8)
    thick = cv2.GaussianBlur(thin, (0, 0), 3.0)
    return np.where(thick > 4, 255, 0).astype(np.uint8)
