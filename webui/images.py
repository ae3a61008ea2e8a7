"""Decoding user-supplied images (upload, API base64, CLI path) into checked RGB or mask images, and PNG encoding."""

from __future__ import annotations

import base64
import binascii
import io
import re
from pathlib import Path
from typing import Literal

from PIL import Image, ImageOps
from PIL.PngImagePlugin import PngInfo

from webui.errors import InvalidRequest

# Below Pillow's own warning threshold (~89 MP), so its guard never needs to fire first; 64 MP is 8192 x 8192,
# far beyond anything Stable Diffusion takes as input.
MAX_PIXELS = 64_000_000
MAX_ENCODED_BYTES = 256 * 1024 * 1024
# Raster formats people actually send. Restricting ``Image.open`` keeps Pillow away from EPS (Ghostscript) and
# the long tail of rarely fuzzed plugins.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "AVIF")
_FORMATS_HINT = "PNG, JPEG, WebP, BMP, GIF or TIFF"
# A1111 flattens transparent init images onto ``img2img_background_color``, white by default.
_BACKGROUND = (255, 255, 255, 255)
_BASE64_BAD = re.compile(r"[^A-Za-z0-9+/=]")
_WHITESPACE = re.compile(r"\s+")

ImageMode = Literal["RGB", "L"]


def decode_image(
    data: str | bytes | bytearray | memoryview | Image.Image | Path,
    field: str,
    *,
    mode: ImageMode = "RGB",
    max_pixels: int = MAX_PIXELS,
) -> Image.Image:
    """A fully loaded image in ``mode`` ('RGB', or 'L' for masks); every failure is ``InvalidRequest(field, ...)``.

    Strings are base64 (optionally a ``data:image/...;base64,`` URI), never file names: only the CLI passes
    ``Path`` objects, so an API client cannot make the server read its files.
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    if isinstance(data, Image.Image):
        image = data
        _check_size(image.size, field, limit)
        _load(image, field)
    else:
        if isinstance(data, Path):
            raw = _read_file(data, field)
        elif isinstance(data, str):
            raw = _from_base64(data, field)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            raw = bytes(data)
        else:
            raise InvalidRequest(field, f"expected an image, base64 text or bytes, got {type(data).__name__}")
        image = _open(raw, field, limit)
    try:
        image = ImageOps.exif_transpose(image)
        return _to_mask(image) if mode == "L" else _to_rgb(image)
    except Exception as exc:  # odd EXIF or pixel formats: still the upload's fault, so still a field error
        raise InvalidRequest(field, f"cannot convert image ({image.mode}): {exc}") from exc


def open_base64_image(data: str, field: str, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image as sent, loaded but not converted, so its metadata (PNG text, EXIF) is still there to read."""
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    return _open(_from_base64(data, field), field, limit)


def encode_png_base64(image: Image.Image, infotext: str | None = None) -> str:
    """Base64 PNG (no ``data:`` prefix, as A1111's API returns), with the ``parameters`` chunk when given."""
    info = None
    if infotext is not None:
        info = PngInfo()
        info.add_text("parameters", infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# -- bytes from each door --------------------------------------------------------------------------------------


def _read_file(path: Path, field: str) -> bytes:
    try:
        if not path.is_file():
            reason = "is a directory" if path.is_dir() else "not found"
            raise InvalidRequest(field, f"{reason}: {path}")
        if path.stat().st_size > MAX_ENCODED_BYTES:
            raise InvalidRequest(field, f"file is too large: {path} ({path.stat().st_size} bytes)")
        return path.read_bytes()
    except OSError as exc:
        raise InvalidRequest(field, f"cannot read {path}: {exc.strerror or exc}") from exc


def _from_base64(text: str, field: str) -> bytes:
    payload = text.strip()
    if not payload:
        raise InvalidRequest(field, "is empty; expected a base64-encoded image")
    if payload[:5].lower() == "data:":
        payload = _data_uri_payload(payload, field)
    elif payload.lower().startswith(("http://", "https://", "file:")):
        raise InvalidRequest(field, "image URLs are not accepted; send the image itself, base64-encoded")
    payload = _WHITESPACE.sub("", payload)
    if not payload:
        raise InvalidRequest(field, "data URI holds no data")
    if len(payload) > MAX_ENCODED_BYTES * 4 // 3 + 4:
        raise InvalidRequest(field, f"image data is too large ({len(payload)} base64 characters)")
    bad = _BASE64_BAD.search(payload)
    if bad:
        raise InvalidRequest(field, f"invalid base64: character {bad.group()!r} at position {bad.start()}")
    if len(payload) % 4:
        raise InvalidRequest(
            field, f"invalid base64: length {len(payload)} is not a multiple of 4 (missing or extra '=' padding)"
        )
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise InvalidRequest(field, f"invalid base64: {exc}") from exc


def _data_uri_payload(uri: str, field: str) -> str:
    """The data of ``data:[<mime>][;base64],<data>``; only image MIME types and base64 encoding are accepted."""
    header, sep, payload = uri.partition(",")
    if not sep:
        raise InvalidRequest(field, "malformed data URI: no ',' before the data")
    mime, *params = (part.strip().lower() for part in header[5:].split(";"))
    if mime and not mime.startswith("image/"):
        raise InvalidRequest(field, f"data URI has MIME type '{mime}'; expected an image/* type")
    if "base64" not in params:
        raise InvalidRequest(field, "data URI must be base64-encoded ('data:image/png;base64,...')")
    return payload


# -- decoding --------------------------------------------------------------------------------------------------


def _open(raw: bytes, field: str, limit: int) -> Image.Image:
    if not raw:
        raise InvalidRequest(field, "is empty; expected image data")
    if len(raw) > MAX_ENCODED_BYTES:
        raise InvalidRequest(field, f"image data is too large ({len(raw)} bytes)")
    Image.init()  # registers every plugin, so the filter below sees WebP, TIFF and AVIF when Pillow has them
    formats = tuple(f for f in ALLOWED_FORMATS if f in Image.OPEN)
    try:
        image = Image.open(io.BytesIO(raw), formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        size = _png_size(raw)
        if size is not None:
            _check_size(size, field, limit)
        raise InvalidRequest(field, f"image is too large: {exc}") from exc
    except Exception as exc:  # UnidentifiedImageError mostly; plugins raise others on hostile headers
        raise InvalidRequest(
            field, f"not a supported image (looks like {_looks_like(raw)}); send {_FORMATS_HINT}"
        ) from exc
    _check_size(image.size, field, limit)
    _load(image, field)
    return image


def _check_size(size: tuple[int, int], field: str, limit: int) -> None:
    width, height = size
    if width * height > limit:
        raise InvalidRequest(field, f"image is too large: {width} x {height} pixels (max {limit} pixels)")
    if width < 1 or height < 1:
        raise InvalidRequest(field, f"image is empty: {width} x {height} pixels")


def _load(image: Image.Image, field: str) -> None:
    """Decode every pixel now: ``open`` reads only the header, and a truncated file fails only here."""
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidRequest(field, f"image is too large: {exc}") from exc
    except Exception as exc:  # decoders raise many types on hostile data; all mean "this upload is broken"
        raise InvalidRequest(field, f"image data is corrupt or truncated: {exc}") from exc


def _png_size(raw: bytes) -> tuple[int, int] | None:
    """Declared size from a PNG header, to name it when Pillow's bomb guard refuses to open the file."""
    if raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR" and len(raw) >= 24:
        return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    return None


def _looks_like(raw: bytes) -> str:
    """A name for what non-image bytes are, so the user learns they sent the wrong file, not just 'bad data'."""
    magic = (
        (b"%PDF", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive"),
        (b"PK\x05\x06", "a ZIP archive"),
        (b"\x1f\x8b", "gzip-compressed data"),
        (b"%!PS", "a PostScript/EPS file"),
        (b"8BPS", "a Photoshop document"),
        (b"\x7fELF", "an executable"),
        (b"MZ", "an executable"),
        (b"\x89PNG", "a damaged PNG"),
        (b"\xff\xd8\xff", "a damaged JPEG"),
    )
    for prefix, name in magic:
        if raw.startswith(prefix):
            return name
    if raw[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftyphevc"):
        return "a HEIC image, which is not supported"
    head = raw[:2048].decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n").lower()
    if head.startswith("<svg") or (head.startswith("<?xml") and "<svg" in head):
        return "an SVG (vector) image, which is not supported"
    if head.startswith(("<!doctype html", "<html", "<head", "<body")):
        return "an HTML document"
    if head.startswith("<?xml"):
        return "an XML document"
    if head.startswith(("{", "[")):
        return "JSON text"
    if "\ufffd" not in head and all(c.isprintable() or c in "\t\r\n" for c in head):
        return "plain text"
    return "unrecognised binary data"


# -- conversion ------------------------------------------------------------------------------------------------


def _has_alpha(image: Image.Image) -> bool:
    return "A" in image.getbands() or "transparency" in image.info


def _to_rgb(image: Image.Image) -> Image.Image:
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, _BACKGROUND), rgba).convert("RGB")
    if image.mode == "I" or image.mode.startswith("I;16"):
        image = _sixteen_to_eight(image)
    return image.convert("RGB")


def _to_mask(image: Image.Image) -> Image.Image:
    """A1111's rule: a mask with real transparency is its alpha channel; otherwise its brightness (white = paint)."""
    if _has_alpha(image):
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema() != (255, 255):
            return alpha
    if image.mode == "I" or image.mode.startswith("I;16"):
        return _sixteen_to_eight(image)
    return image.convert("L")


def _sixteen_to_eight(image: Image.Image) -> Image.Image:
    """16-bit greyscale scaled to 8 bits; Pillow's own conversion clips, turning most of the image white."""
    return image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
