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
| depth (depth_midas)                        | ``dpt_hybrid-midas-501f0c75.pt`` | ``midas`` |
| depth_leres                                | ``res101.pth``            | ``leres``       |
| depth_leres++                              | ``res101.pth``, ``latest_net_G.pth`` | ``leres``, ``leres_boost`` |
| normal_bae                                 | ``scannet.pt``            | ``normal_bae``, ``efficientnet`` |
| openpose, openpose_hand, openpose_face, openpose_faceonly, openpose_full | ``body_pose_model.pth``, ``hand_pose_model.pth``, ``facenet.pth`` | ``openpose*`` |

Each ``detect_*`` function here takes an RGB ``uint8`` image (already at the preprocessor resolution) and the annotators folder,
and returns the HxW ``uint8`` map (HxWx3 for normals and poses), pre- and post-processed as the extension does
(padding to multiples of 64, the inversion of line art, "safe" steps, scribble thinning). The networks are read and
cached by ``loading.network`` and run on the CPU in float32, on the calling thread: the UI's preview calls these
from its own threads, as generation does from the worker. Importing this package does not import torch (the
modules it names do, and are imported by the first call).
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
MIDAS_FILE = "dpt_hybrid-midas-501f0c75.pt"
LERES_FILE = "res101.pth"  # AdelaiDepth's training checkpoint: the weights under "depth_model"
LERES_BOOST_FILE = "latest_net_G.pth"
NORMAL_BAE_FILE = "scannet.pt"  # the training script's checkpoint: {"model": state_dict, "iter": N}
BODY_FILE = "body_pose_model.pth"  # OpenPose's three
HAND_FILE = "hand_pose_model.pth"
FACE_FILE = "facenet.pth"


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


def detect_midas(image: Array, folder: Path) -> Array:
    """MiDaS DPT-Hybrid relative depth (near bright), stretched to 0-255."""
    from webui.controlnet.annotators import common, loading, midas

    model = loading.network(folder / MIDAS_FILE, midas.DPTHybrid)
    return common.on_padded(image, lambda padded: midas.depth_map(model, padded))


def detect_leres(
    image: Array, folder: Path, *, remove_near: float = 0.0, remove_background: float = 0.0, boost: bool = False
) -> Array:
    """LeReS depth (near bright; ``boost``: LeReS++, merged by ``latest_net_G.pth``), with the extension's "Remove
    Near %" and "Remove Background %"."""
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


def normal_colours(normals: Array) -> Array:
    """Unit normals (HxWx3: x, y, z in [-1, 1]) as the extension's RGB ``uint8`` map: R = x, G = y, B = z, each
    ``(n + 1) * 0.5`` clipped to [0, 1], times 255 and truncated. A surface facing the camera, (0, 0, 1), is
    (127, 127, 255)."""
    unit = ((normals.astype(np.float32) + 1) * 0.5).clip(0, 1)
    return (unit * 255.0).clip(0, 255).astype(np.uint8)


def detect_normal_bae(image: Array, folder: Path) -> Array:
    """NormalBAE's normal map (HxWx3 ``uint8``, coloured by ``normal_colours``)."""
    from webui.controlnet.annotators import common, loading, normal_bae

    model = loading.network(folder / NORMAL_BAE_FILE, normal_bae.NormalBAE, wrapper="model")
    return common.on_padded(image, lambda padded: normal_colours(normal_bae.normals(model, padded)))


def detect_openpose(image: Array, folder: Path, *, body: bool = True, hand: bool = False, face: bool = False) -> Array:
    """The pose map (HxWx3 ``uint8`` RGB): the body drawn when ``body``, the hands and the face detected and drawn
    when ``hand`` / ``face`` (the body network runs always: it finds where they are)."""
    from webui.controlnet.annotators import (
        common,
        loading,
        openpose,
        openpose_body,
        openpose_draw,
        openpose_face,
        openpose_hand,
    )

    body_model = loading.network(folder / BODY_FILE, openpose_body.BodyPoseNetwork)
    hand_model = loading.network(folder / HAND_FILE, openpose_hand.HandPoseNetwork) if hand else None
    face_model = loading.network(folder / FACE_FILE, openpose_face.FaceNetwork) if face else None

    def draw(padded: Array) -> Array:
        poses = openpose.detect_poses(np.ascontiguousarray(padded[:, :, ::-1]), body_model, hand_model, face_model)
        return openpose_draw.draw_poses(poses, padded.shape[0], padded.shape[1], body=body, hand=hand, face=face)

    return common.on_padded(image, draw)
