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

``res101.pth`` is AdelaiDepth's training checkpoint, not a bare state dict: the weights sit under ``depth_model``.
It is read with torch's restricted unpickler (``weights_only``) like every annotator file, and kept in a cache of
its own (the last one, keyed by path, mtime and size), as ``loading.network`` reads flat files only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from webui.controlnet.annotators import leres_boost, midas
    from webui.controlnet.annotators.leres import LeReS

Net = TypeVar("Net", bound="nn.Module")

Array = np.ndarray

MIDAS_FILE = "dpt_hybrid-midas-501f0c75.pt"
LERES_FILE = "res101.pth"
LERES_BOOST_FILE = "latest_net_G.pth"

_leres_lock = threading.Lock()
_leres_cached: tuple[tuple[str, int, int], Any] | None = None


def detect_midas(image: Array, folder: Path) -> Array:
    """MiDaS DPT-Hybrid relative depth, stretched to 0-255."""
    from webui.controlnet.annotators import common, loading, midas

    model = loading.network(folder / MIDAS_FILE, _midas_network)
    return common.on_padded(image, lambda padded: midas.depth_map(model, padded))


def detect_leres(
    image: Array, folder: Path, *, remove_near: float = 0.0, remove_background: float = 0.0, boost: bool = False
) -> Array:
    """LeReS depth (``boost``: LeReS++, merged by ``latest_net_G.pth``), with the extension's "Remove Near %" and
    "Remove Background %"."""
    from webui.controlnet.annotators import common, leres, leres_boost, loading

    model = _leres(folder / LERES_FILE)
    merger = loading.network(folder / LERES_BOOST_FILE, _merge_network) if boost else None

    def detect(padded: Array) -> Array:
        height, width = padded.shape[:2]
        if merger is not None:
            depth = leres_boost.boosted_estimate(model, merger, padded, max(width, height))
        else:
            depth = leres.estimate(model, padded, width, height)
        return leres.depth_image(depth, remove_near, remove_background)

    return common.on_padded(image, detect)


def _unfilled(build: Callable[[], Net]) -> Net:
    """``build()`` with its tensors allocated but not initialised (built on the meta device): the file's weights
    replace every one, so random initialisation of 80-120 million numbers would be wasted."""
    import torch

    with torch.device("meta"):
        model = build()
    return model.to_empty(device="cpu")


def _midas_network() -> midas.DPTHybrid:
    from webui.controlnet.annotators import midas

    return _unfilled(midas.DPTHybrid)


def _merge_network() -> leres_boost.MergeNet:
    from webui.controlnet.annotators import leres_boost

    return _unfilled(leres_boost.MergeNet)


def _leres(path: Path) -> LeReS:
    """The LeReS network with ``res101.pth``'s weights: loaded once, again when the file's mtime or size changes."""
    global _leres_cached
    from webui.controlnet.annotators import leres, loading
    from webui.errors import ModelLoadError

    path = Path(path)
    with _leres_lock:
        try:
            stat = path.stat()
        except OSError as exc:
            raise ModelLoadError(path, f"cannot be read ({exc.strerror or exc})") from None
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if _leres_cached is not None and _leres_cached[0] == key:
            return _leres_cached[1]
        _leres_cached = None  # the old network's memory back before the new one is read
        model = _unfilled(leres.LeReS)
        loading.load_exact(model, read_leres_checkpoint(path), path)
        model.float().eval().requires_grad_(False)
        _leres_cached = (key, model)
        return model


def read_leres_checkpoint(path: Path) -> dict[str, Any]:
    """``res101.pth``'s depth-network tensors: those under ``depth_model`` in AdelaiDepth's checkpoint, or the whole
    file when it is a flat state dict (a conversion to safetensors, say). ``ModelLoadError`` naming the file when it
    cannot be read safely or holds no tensors."""
    import torch

    from webui.errors import ModelLoadError
    from webui.weights import formats

    if formats.sniff(path) == formats.SAFETENSORS:
        return formats.read_state_dict(path)
    loaded = formats.read_embedding_object(path)  # the restricted unpickler, nested dicts kept
    if isinstance(loaded, dict) and isinstance(loaded.get("depth_model"), dict):
        loaded = loaded["depth_model"]
    elif isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ModelLoadError(path, f"file holds a {type(loaded).__name__}, not a dict of weights")
    tensors = {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelLoadError(path, "file holds no tensors")
    return tensors


def forget() -> None:
    """Drop the cached LeReS network (the others are in ``loading``'s cache)."""
    global _leres_cached
    with _leres_lock:
        _leres_cached = None
