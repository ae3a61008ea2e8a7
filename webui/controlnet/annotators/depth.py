"""Depth preprocessors (``depth``/``depth_midas``, ``depth_leres``, ``depth_leres++``) from the extension's files.

| preprocessor          | files in ``models/annotators``                     | modules                  |
|-----------------------|----------------------------------------------------|--------------------------|
| depth (depth_midas)   | ``dpt_hybrid-midas-501f0c75.pt``                   | ``midas``                |
| depth_leres           | ``res101.pth``                                     | ``leres``                |
| depth_leres++         | ``res101.pth``, ``latest_net_G.pth``               | ``leres``, ``leres_boost`` |

The extension downloads them into ``annotator/downloads/midas`` and ``annotator/downloads/leres``; Easel reads them
from the one annotators folder and never downloads one. Each ``detect_*`` takes an RGB ``uint8`` image at the
preprocessor resolution and returns the HxW ``uint8`` map (near bright), computed on the image padded to multiples of
64 as the extension does. Importing this module does not import torch; the first call does.

``res101.pth`` is AdelaiDepth's training checkpoint, not a bare state dict: the weights sit under ``depth_model``,
beside its shift and focal networks, which are not read. It is read with torch's restricted unpickler
(``weights_only``) and cached by ``loading.network`` like every annotator file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

Array = np.ndarray

MIDAS_FILE = "dpt_hybrid-midas-501f0c75.pt"
LERES_FILE = "res101.pth"
LERES_BOOST_FILE = "latest_net_G.pth"


def detect_midas(image: Array, folder: Path) -> Array:
    """MiDaS DPT-Hybrid relative depth, stretched to 0-255."""
    from webui.controlnet.annotators import common, loading, midas

    model = loading.network(folder / MIDAS_FILE, midas.DPTHybrid)
    return common.on_padded(image, lambda padded: midas.depth_map(model, padded))


def detect_leres(
    image: Array, folder: Path, *, remove_near: float = 0.0, remove_background: float = 0.0, boost: bool = False
) -> Array:
    """LeReS depth (``boost``: LeReS++, merged by ``latest_net_G.pth``), with the extension's "Remove Near %" and
    "Remove Background %"."""
    from webui.controlnet.annotators import common, leres, leres_boost, loading

    model = loading.network(folder / LERES_FILE, leres.LeReS, wrapper="depth_model")
    merger = loading.network(folder / LERES_BOOST_FILE, leres_boost.MergeNet) if boost else None

    def detect(padded: Array) -> Array:
        height, width = padded.shape[:2]
        if merger is not None:
            depth = leres_boost.boosted_estimate(model, merger, padded, max(width, height))
        else:
            depth = leres.estimate(model, padded, width, height)
        return leres.depth_image(depth, remove_near, remove_background)

    return common.on_padded(image, detect)
