"""ControlNet preprocessors ("modules"), named as the SD-WebUI ControlNet extension names them.

The built-in ones need no weights (OpenCV, NumPy): canny, invert, threshold, blur_gaussian, scribble_xdog,
tile_resample, color, shuffle, inpaint. "none" passes a prepared map through.

The ones that run a network need the annotator file the extension downloads, put by the user into
``models/annotators`` (the ``annotators`` argument); Easel never downloads one. Without it a preprocessor is listed
as unavailable with the exact file it needs (``missing_files``), and ``run`` says so. With it, these run
(``webui.controlnet.annotators``): softedge_hed, softedge_hedsafe and scribble_hed (``ControlNetHED.pth``), lineart
and lineart_coarse (``sk_model.pth``, ``sk_model2.pth``), lineart_anime (``netG.pth``), softedge_pidinet,
softedge_pidisafe and scribble_pidinet (``table5_pidinet.pth``), mlsd (``mlsd_large_512_fp32.pth``), depth
(``dpt_hybrid-midas-501f0c75.pt``), depth_leres and depth_leres++ (``res101.pth``, ``latest_net_G.pth``),
openpose, openpose_hand, openpose_face, openpose_faceonly and openpose_full (``body_pose_model.pth``, with
``hand_pose_model.pth`` for hands and ``facenet.pth`` for faces) and normal_bae (``scannet.pt``).

A network preprocessor uses torch: it loads its network once (an LRU of three, re-read when the file changes) and
runs it on the CPU in float32 on the thread that calls ``run``. The service sends previews of these to its worker
thread (``GenerationService.detect_map``), since torch on a second thread slows every later CPU generation.

Extensions add their own preprocessors (``register``); theirs are listed after the built-in ones, by their
extension, and a failure in one fails the job or preview with a message naming the extension.

Each takes an RGB ``uint8`` array and returns one, at the preprocessor resolution (the image's short side scaled to
``resolution``, as the extension does), so a preview shows what the ControlNet will see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from webui.controlnet import annotators as nets
from webui.errors import GenerationFailed, InvalidRequest, ModelLoadError

Array = np.ndarray
MIN_RESOLUTION, MAX_RESOLUTION = 64, 2048  # the preprocessor resolution's range (the extension's slider)


@dataclass(frozen=True)
class Slider:
    """A threshold's meaning, default and allowed range (the extension's ``threshold_a``/``threshold_b``)."""

    label: str
    default: float
    low: float
    high: float


@dataclass(frozen=True)
class Preprocessor:
    name: str
    # With ``needs``: called as run(image, annotators_folder, *thresholds), returning a HxW map (or HxWx3). Without
    # ``needs``: run(image, *thresholds); None for the ones ``run`` handles itself (inpaint).
    run: Callable[..., Array] | None
    threshold_a: Slider | None = None
    threshold_b: Slider | None = None
    needs: tuple[str, ...] = ()  # files under models/annotators it needs
    uses_resolution: bool = True
    needs_mask: bool = False
    aliases: tuple[str, ...] = field(default_factory=tuple)
    extension: str = ""  # the extension that added it ("" for Easel's own)


def resize_short_side(image: Array, resolution: int) -> Array:
    """Scale so the short side is ``resolution`` (both sides rounded to multiples of 8), as the extension does."""
    h, w = image.shape[:2]
    scale = resolution / min(h, w)
    size = (max(8, round(w * scale / 8) * 8), max(8, round(h * scale / 8) * 8))
    if size == (w, h):
        return image
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, size, interpolation=interpolation)


def _rgb(single: Array) -> Array:
    if single.ndim == 3:  # already a colour map (normal_bae)
        return single
    return np.ascontiguousarray(np.repeat(single[:, :, None], 3, axis=2))


def canny(image: Array, low: float, high: float) -> Array:
    return _rgb(cv2.Canny(image, int(low), int(high)))


def invert(image: Array) -> Array:
    """For line art drawn black on white: ControlNets want white lines on black."""
    return 255 - image


def threshold(image: Array, level: float) -> Array:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return _rgb(np.where(gray > level, 255, 0).astype(np.uint8))


def blur_gaussian(image: Array, sigma: float) -> Array:
    return cv2.GaussianBlur(image, (0, 0), float(sigma))


def scribble_xdog(image: Array, level: float) -> Array:
    """Scribble lines from an image: a difference of Gaussians, thresholded (XDoG), white lines on black."""
    pixels = image.astype(np.float32)
    fine = cv2.GaussianBlur(pixels, (0, 0), 0.5)
    coarse = cv2.GaussianBlur(pixels, (0, 0), 5.0)
    edges = np.max(coarse - fine, axis=2)  # darker than its surroundings: a line
    return _rgb(np.where(2 * edges > level, 255, 0).astype(np.uint8))


def tile_resample(image: Array, rate: float) -> Array:
    """The tile ControlNet's input: the image at 1/rate of its size (it adds the detail back)."""
    if rate <= 1:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, int(w / rate)), max(1, int(h / rate))), interpolation=cv2.INTER_AREA)


def color_grid(image: Array) -> Array:
    """A palette map: the image shrunk to 1/64 (one colour per 64 px cell) and blown up with hard edges."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, w // 64), max(1, h // 64)), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def shuffle(image: Array, seed: int) -> Array:
    """The shuffle ControlNet's input: the image's content moved by a smooth random warp (reproducible by seed)."""
    h, w = image.shape[:2]
    rng = np.random.default_rng(seed)

    def field_of_offsets() -> Array:
        coarse = rng.uniform(0, 1, size=(max(2, h // 64), max(2, w // 64))).astype(np.float32)
        return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)

    map_x = (field_of_offsets() * (w - 1)).astype(np.float32)
    map_y = (field_of_offsets() * (h - 1)).astype(np.float32)
    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def inpaint_marked(image: Array, mask: Array) -> Array:
    """The inpaint ControlNet's input as a picture: the masked pixels black (the model itself gets -1 there)."""
    if mask.shape[:2] != image.shape[:2]:
        mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    marked = image.copy()
    marked[mask > 127] = 0
    return marked


_NETWORKS = (
    Preprocessor(
        "softedge_hed",
        lambda image, folder: nets.detect_hed(image, folder),
        needs=(nets.HED_FILE,),
        aliases=("hed",),
    ),
    Preprocessor(
        "softedge_hedsafe",
        lambda image, folder: nets.detect_hed(image, folder, safe=True),
        needs=(nets.HED_FILE,),
        aliases=("hed_safe",),
    ),
    Preprocessor(
        "scribble_hed",
        lambda image, folder: nets.detect_hed(image, folder, scribble=True),
        needs=(nets.HED_FILE,),
        aliases=("fake_scribble",),
    ),
    Preprocessor(
        "lineart",
        lambda image, folder: nets.detect_lineart(image, folder),
        needs=(nets.LINEART_FILE,),
        aliases=("lineart_realistic",),
    ),
    Preprocessor(
        "lineart_coarse",
        lambda image, folder: nets.detect_lineart(image, folder, coarse=True),
        needs=(nets.LINEART_COARSE_FILE,),
    ),
    Preprocessor(
        "lineart_anime",
        lambda image, folder: nets.detect_lineart_anime(image, folder),
        needs=(nets.LINEART_ANIME_FILE,),
    ),
    Preprocessor(
        "softedge_pidinet",
        lambda image, folder: nets.detect_pidinet(image, folder),
        needs=(nets.PIDINET_FILE,),
        aliases=("pidinet",),
    ),
    Preprocessor(
        "softedge_pidisafe",
        lambda image, folder: nets.detect_pidinet(image, folder, safe=True),
        needs=(nets.PIDINET_FILE,),
        aliases=("pidinet_safe",),
    ),
    Preprocessor(
        "scribble_pidinet",
        lambda image, folder: nets.detect_pidinet(image, folder, scribble=True),
        needs=(nets.PIDINET_FILE,),
    ),
    Preprocessor(
        "mlsd",
        lambda image, folder, a, b: nets.detect_mlsd(image, folder, value_threshold=a, distance_threshold=b),
        Slider("MLSD Value Threshold", 0.1, 0.01, 2.0),
        Slider("MLSD Distance Threshold", 0.1, 0.01, 20.0),
        needs=(nets.MLSD_FILE,),
    ),
    Preprocessor(
        "normal_bae",
        lambda image, folder: nets.detect_normal_bae(image, folder),
        needs=(nets.NORMAL_BAE_FILE,),
    ),
)

_REMOVE_NEAR = Slider("Remove Near %", 0, 0, 100)
_REMOVE_BACKGROUND = Slider("Remove Background %", 0, 0, 100)
_DEPTH = (
    Preprocessor(
        "depth",
        lambda image, folder: nets.detect_midas(image, folder),
        needs=(nets.MIDAS_FILE,),
        aliases=("depth_midas",),
    ),
    Preprocessor(
        "depth_leres",
        lambda image, folder, a, b: nets.detect_leres(image, folder, remove_near=a, remove_background=b),
        _REMOVE_NEAR,
        _REMOVE_BACKGROUND,
        needs=(nets.LERES_FILE,),
    ),
    Preprocessor(
        "depth_leres++",
        lambda image, folder, a, b: nets.detect_leres(image, folder, remove_near=a, remove_background=b, boost=True),
        _REMOVE_NEAR,
        _REMOVE_BACKGROUND,
        needs=(nets.LERES_FILE, nets.LERES_BOOST_FILE),
    ),
)

# The extension's OpenPose variants: what each draws (body, hands, face), and so which files it needs; the face is
# found from the body, so openpose_faceonly needs the body model too.
_POSE = tuple(
    Preprocessor(
        name,
        lambda image, folder, body=body, hand=hand, face=face: nets.detect_openpose(
            image, folder, body=body, hand=hand, face=face
        ),
        needs=(nets.BODY_FILE,) + (nets.HAND_FILE,) * hand + (nets.FACE_FILE,) * face,
    )
    for name, body, hand, face in (
        ("openpose", True, False, False),
        ("openpose_hand", True, True, False),
        ("openpose_face", True, False, True),
        ("openpose_faceonly", False, False, True),
        ("openpose_full", True, True, True),
    )
)

PREPROCESSORS: dict[str, Preprocessor] = {
    p.name: p
    for p in (
        Preprocessor("none", lambda image: image, uses_resolution=False),
        Preprocessor(
            "canny",
            lambda image, a, b: canny(image, a, b),
            Slider("Canny Low Threshold", 100, 1, 255),
            Slider("Canny High Threshold", 200, 1, 255),
        ),
        Preprocessor("invert", lambda image: invert(image), aliases=("invert (from white bg & black line)",)),
        Preprocessor("threshold", lambda image, a: threshold(image, a), Slider("Binarization Threshold", 127, 0, 255)),
        Preprocessor("blur_gaussian", lambda image, a: blur_gaussian(image, a), Slider("Sigma", 9.0, 0.01, 64.0)),
        Preprocessor("scribble_xdog", lambda image, a: scribble_xdog(image, a), Slider("XDoG Threshold", 32, 1, 64)),
        Preprocessor(
            "tile_resample", lambda image, a: tile_resample(image, a), Slider("Down Sampling Rate", 1.0, 1.0, 8.0)
        ),
        Preprocessor("color", lambda image: color_grid(image), aliases=("t2ia_color_grid",)),
        Preprocessor("shuffle", lambda image, seed: shuffle(image, seed)),
        Preprocessor("inpaint", None, uses_resolution=False, needs_mask=True, aliases=("inpaint_only",)),
        *_NETWORKS,
        *_DEPTH,
        *_POSE,
    )
}
_BY_ALIAS = {alias.lower(): p for p in PREPROCESSORS.values() for alias in (p.name, *p.aliases)}


def register(extension: str, name: str, function: Callable[..., Array], a: Slider | None, b: Slider | None) -> None:
    """List an extension's preprocessor beside the built-in ones. ``function(image, *thresholds)`` gets an RGB
    uint8 array at the unit's resolution; its result may be grey or RGB; an exception names the extension.
    A name already taken (by Easel or another extension) is refused with ``ValueError``."""
    key = name.strip().lower()
    if not key or key in _BY_ALIAS:
        raise ValueError(f"the preprocessor name '{name}' is already taken")

    def run(image: Array, *thresholds: float) -> Array:
        try:
            result = np.asarray(function(image, *thresholds))
        except Exception as exc:
            raise GenerationFailed(
                f"extension '{extension}' failed in its preprocessor '{name}': {type(exc).__name__}: {exc}"
            ) from exc
        if result.dtype != np.uint8 or result.ndim not in (2, 3):
            raise GenerationFailed(
                f"extension '{extension}': preprocessor '{name}' must return a uint8 grey or RGB image, "
                f"got {result.dtype} of shape {result.shape}"
            )
        return _rgb(result) if result.ndim == 2 else np.ascontiguousarray(result[:, :, :3])

    pre = Preprocessor(name, run, a, b, extension=extension)
    PREPROCESSORS[name] = pre
    _BY_ALIAS[key] = pre


def unregister_extensions() -> None:
    """Forget every extension's preprocessor (a new plugin host, or tests)."""
    for name in [n for n, p in PREPROCESSORS.items() if p.extension]:
        _BY_ALIAS.pop(name.lower(), None)
        del PREPROCESSORS[name]


def find(name: str) -> Preprocessor:
    found = _BY_ALIAS.get((name or "none").strip().lower())
    if found is None:
        raise InvalidRequest("module", f"unknown preprocessor '{name}' (built in: {', '.join(built_in_names())})")
    return found


def built_in_names() -> list[str]:
    return [p.name for p in PREPROCESSORS.values() if not p.needs]


def missing_files(preprocessor: Preprocessor, annotators: Path) -> list[str]:
    """The annotator files a preprocessor needs that are not in ``annotators`` (empty: all there)."""
    return [f for f in preprocessor.needs if not (annotators / f).is_file()]


def _value(slider: Slider | None, given: float, field_name: str) -> float:
    if slider is None:
        return given
    if given == -1:  # the extension's "use the default"
        return slider.default
    if not slider.low <= given <= slider.high:
        raise InvalidRequest(
            field_name, f"{slider.label} must be between {slider.low:g} and {slider.high:g}, got {given:g}"
        )
    return given


def run(
    name: str,
    image: Array,
    *,
    resolution: int = 512,
    threshold_a: float = -1,
    threshold_b: float = -1,
    mask: Array | None = None,
    seed: int = 0,
    annotators: Path | None = None,
) -> Array:
    """Run one preprocessor on an RGB ``uint8`` image; every bad value is an ``InvalidRequest`` naming its field.

    A network preprocessor reads its file from ``annotators`` (None: as if the folder were empty) and runs torch on
    this thread; a missing file, or a file that is not the network it should be (damaged, another model), is an
    ``InvalidRequest`` on ``module`` that names the file."""
    pre = find(name)
    where = annotators if annotators is not None else Path("models/annotators")
    if pre.needs:
        missing = missing_files(pre, annotators) if annotators is not None else list(pre.needs)
        if missing:
            raise InvalidRequest(
                "module", f"preprocessor '{pre.name}' needs {', '.join(missing)} in {where} (Easel never downloads it)"
            )
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidRequest("image", f"expected an RGB image, got an array of shape {image.shape} ({image.dtype})")
    if pre.uses_resolution:
        if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
            raise InvalidRequest(
                "processor_res", f"must be between {MIN_RESOLUTION} and {MAX_RESOLUTION}, got {resolution}"
            )
        image = resize_short_side(image, resolution)
    a = _value(pre.threshold_a, threshold_a, "threshold_a")
    b = _value(pre.threshold_b, threshold_b, "threshold_b")
    if pre.needs_mask:
        if mask is None:
            raise InvalidRequest("mask", f"preprocessor '{pre.name}' needs a mask (white = repaint)")
        return inpaint_marked(image, mask)
    if pre.name == "shuffle":
        return shuffle(image, seed)
    assert pre.run is not None
    args = [v for v, slider in ((a, pre.threshold_a), (b, pre.threshold_b)) if slider is not None]
    if not pre.needs:
        return pre.run(image, *args)
    try:
        return _rgb(pre.run(image, where, *args))
    except ModelLoadError as exc:
        raise InvalidRequest(
            "module", f"preprocessor '{pre.name}' cannot use {exc.path.name} in {where}: {exc.reason}"
        ) from None
