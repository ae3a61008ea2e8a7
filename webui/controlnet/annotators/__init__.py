"""Annotator networks: the ControlNet preprocessors that need weights, run from the files users download.

The SD-WebUI ControlNet extension (and lllyasviel's ControlNet-v1-1 annotators) download these files into their
``annotator/downloads`` folder; Easel reads the same files from ``models/annotators`` and never downloads one. The
networks are written here, one small module each, with the originals' tensor names and shapes so a file loads with
``load_state_dict(strict=True)``: the packages that carry them (controlnet_aux, the extension itself) pull in
torchvision, timm or hub downloaders, which Easel cannot depend on.

| preprocessor                               | file                      | module          |
|--------------------------------------------|---------------------------|-----------------|
| softedge_hed, softedge_hedsafe, scribble_hed | ``ControlNetHED.pth``   | ``hed``         |
| lineart / lineart_coarse                   | ``sk_model.pth`` / ``sk_model2.pth`` | ``lineart`` |
| lineart_anime                              | ``netG.pth``              | ``lineart_anime`` |
| softedge_pidinet, softedge_pidisafe, scribble_pidinet | ``table5_pidinet.pth`` | ``pidinet`` |
| mlsd                                       | ``mlsd_large_512_fp32.pth`` | ``mlsd``      |

Each ``detect_*`` function here takes an RGB ``uint8`` image (already at the preprocessor resolution) and the annotators folder,
and returns the HxW ``uint8`` map, pre- and post-processed as the extension does (padding to multiples of 64, the
inversion of line art, "safe" steps, scribble thinning). The network runs on the CPU in float32, on the calling
thread: the UI's preview calls these from its own threads, as generation does from the worker. Importing this
package does not import torch; the first call does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

Array = np.ndarray

HED_FILE = "ControlNetHED.pth"
LINEART_FILE = "sk_model.pth"
LINEART_COARSE_FILE = "sk_model2.pth"
LINEART_ANIME_FILE = "netG.pth"
PIDINET_FILE = "table5_pidinet.pth"
MLSD_FILE = "mlsd_large_512_fp32.pth"


def detect_hed(image: Array, folder: Path, *, safe: bool = False, scribble: bool = False) -> Array:
    """HED soft edges (``safe``: three levels), or the scribble made from them (``scribble``: binary)."""
    from webui.controlnet.annotators import common, hed, loading

    model = loading.network(folder / HED_FILE, hed.HEDNetwork)
    edges = common.on_padded(image, lambda padded: hed.edges(model, padded, safe))
    return common.scribble(edges) if scribble else edges


def detect_lineart(image: Array, folder: Path, *, coarse: bool = False) -> Array:
    """White lines on black from the informative-drawings generator (``coarse``: ``sk_model2.pth``)."""
    from webui.controlnet.annotators import common, lineart, loading

    model = loading.network(folder / (LINEART_COARSE_FILE if coarse else LINEART_FILE), lineart.LineartGenerator)
    return common.on_padded(image, lambda padded: lineart.lines(model, padded))


def detect_lineart_anime(image: Array, folder: Path) -> Array:
    """White lines on black from the anime line-art U-Net."""
    from webui.controlnet.annotators import common, lineart_anime, loading

    model = loading.network(folder / LINEART_ANIME_FILE, lineart_anime.AnimeUNet)
    return common.on_padded(image, lambda padded: lineart_anime.lines(model, padded))


def detect_pidinet(image: Array, folder: Path, *, safe: bool = False, scribble: bool = False) -> Array:
    """PiDiNet soft edges (``safe``: three levels), or the scribble made from them (``scribble``: binary)."""
    from webui.controlnet.annotators import common, loading, pidinet

    model = loading.network(folder / PIDINET_FILE, pidinet.PiDiNet)
    edges = common.on_padded(image, lambda padded: pidinet.edges(model, padded, safe))
    return common.scribble(edges) if scribble else edges


def detect_mlsd(image: Array, folder: Path, *, value_threshold: float, distance_threshold: float) -> Array:
    """M-LSD's straight segments, one pixel wide, white on black."""
    from webui.controlnet.annotators import common, loading, mlsd

    model = loading.network(folder / MLSD_FILE, mlsd.MLSDLarge)
    return common.on_padded(image, lambda padded: mlsd.line_map(model, padded, value_threshold, distance_threshold))
