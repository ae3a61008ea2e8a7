"""The ``normal_bae`` preprocessor's entry point: the file it needs, the detection, and the normals' colours.

Kept apart from ``normal_bae`` (the network) so importing it does not import torch, as for the package's other
``detect_*`` functions; the first detection does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

Array = np.ndarray

NORMAL_BAE_FILE = "scannet.pt"


def colours(normals: Array) -> Array:
    """Unit normals (HxWx3: x, y, z in [-1, 1]) as the extension's RGB ``uint8`` map: R = x, G = y, B = z, each
    ``(n + 1) * 0.5`` clipped to [0, 1], times 255 and truncated. A surface facing the camera, (0, 0, 1), is
    (127, 127, 255)."""
    unit = ((normals.astype(np.float32) + 1) * 0.5).clip(0, 1)
    return (unit * 255.0).clip(0, 255).astype(np.uint8)


def detect_normal_bae(image: Array, folder: Path) -> Array:
    """The normal map (HxWx3 ``uint8``) of an RGB ``uint8`` image, run on it padded to multiples of 64 and cropped
    back, as the extension does."""
    from webui.controlnet.annotators import common, loading, normal_bae

    model = loading.network(folder / NORMAL_BAE_FILE, normal_bae.NormalBAE, wrapper="model")
    return common.on_padded(image, lambda padded: colours(normal_bae.normals(model, padded)))
