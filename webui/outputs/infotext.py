"""A1111 infotext: the ``parameters`` text written into every image, and reading it back from any tool's images."""

from __future__ import annotations

import json
import logging
import math
import re
from numbers import Integral, Real
from typing import Any

from PIL import Image

import webui
from webui import samplers
from webui.errors import InvalidRequest
from webui.outputs.other_tools import ToolParameters, fooocus_from_text, read_other_tool
from webui.types import MASKED_CONTENT_LABELS, GenerationRequest, MaskedContent, Mode

# The keys A1111 1.10 writes first, in the order of ``create_infotext``'s ``generation_params`` dict; clients that
# diff or regex infotexts rely on it. Any other key (extensions, inpaint settings) follows in insertion order.
KEY_ORDER: tuple[str, ...] = (
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Image CFG scale",
    "Seed",
    "Face restoration",
    "Size",
    "Model hash",
    "Model",
    "FP8 weight",
    "Cache FP16 weight for LoRA",
    "VAE hash",
    "VAE",
    "Variation seed",
    "Variation seed strength",
    "Seed resize from",
    "Denoising strength",
    "Conditional mask weight",
    "Clip skip",
    "ENSD",
    "Token merging ratio",
    "Token merging ratio hr",
    "Init image hash",
    "RNG",
    "Tiling",
)
TRAILING_KEYS: tuple[str, ...] = ("Version", "User")

# What A1111's parser assumes when a key is absent, so an image that omits a default reads the same as one that
# spells it out (A1111 omits ``Clip skip: 1``, ``Inpaint area: Whole picture``...).
PARSE_DEFAULTS: dict[str, Any] = {
    "Clip skip": 1,
    "Schedule type": "Automatic",
    "RNG": "GPU",
    "Mask mode": "Inpaint masked",
    "Masked content": "original",
    "Inpaint area": "Whole picture",
    "Masked area padding": 32,
}

# A1111's ``re_param`` (``\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)``) made linear: unbounded, a long
# colon-less line costs quadratic time in ``findall`` (every start position rescans the run). The key length is
# bounded (no real key is near 200 characters) and the leading ``\s*`` dropped: it never changes the groups found.
_RE_PARAM = re.compile(r'(\w[\w \-/]{1,200}):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_SIZE = re.compile(r"^(\d+)x(\d+)$")
_RE_INT = re.compile(r"^[-+]?\d+$")
_RE_FLOAT = re.compile(r"^[-+]?(?:\d+\.\d*|\.\d+)(?:[eE][-+]?\d+)?$")
_NEEDS_QUOTES = re.compile(r'[,:\n\r]|^"')

log = logging.getLogger(__name__)

_NEGATIVE_PREFIX = "Negative prompt:"
_EXIF_IFD = 0x8769
_EXIF_USER_COMMENT = 0x9286


# -- writing ---------------------------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A value as A1111 prints it: ``7`` for a whole float (what users see in A1111's own images), else ``7.5``."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real):
        number = float(value)
        if math.isfinite(number) and number.is_integer() and abs(number) < 1e16:
            return str(int(number))
        return repr(number)
    return str(value)


def quote(text: str) -> str:
    """JSON-quote a value that would otherwise break the ``Key: value, ...`` line (A1111's ``quote``).

    A value that starts with ``"`` is quoted too, so the parser's unquoting gives it back unchanged.
    """
    if not _NEEDS_QUOTES.search(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def format_infotext(prompt: str, negative_prompt: str, params: dict[str, Any]) -> str:
    """Prompt, optional ``Negative prompt:`` line, then one ``Key: value`` line in A1111's fixed key order."""
    ordered: list[tuple[str, Any]] = [(k, params[k]) for k in KEY_ORDER if k in params]
    fixed = set(KEY_ORDER) | set(TRAILING_KEYS)
    ordered += [(k, v) for k, v in params.items() if k not in fixed]
    ordered += [(k, params[k]) for k in TRAILING_KEYS if k in params]
    parts = []
    for key, value in ordered:
        if value is None:
            continue
        text = format_value(value)
        # A1111 writes a flag whose value is its own name (``Tiling``-style switches of some extensions) bare.
        parts.append(key if text == key else f"{key}: {quote(text)}")
    negative = f"\n{_NEGATIVE_PREFIX} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{', '.join(parts)}".strip()


def infotext_for(
    request: GenerationRequest,
    *,
    seed: int,
    sampler: str,
    schedule: str,
    model_name: str,
    model_hash: str | None,
    vae_name: str | None = None,
    vae_hash: str | None = None,
    extra: dict[str, Any] | None = None,
    version: str = webui.__version__,
) -> str:
    """The infotext of one generated image; ``seed``, ``sampler`` and ``schedule`` are what actually ran.

    ``RNG: CPU`` is always written because Easel draws its initial noise on the CPU: without it A1111 would
    replay the seed with GPU noise and draw a different picture.
    """
    img2img = request.mode in (Mode.IMG2IMG, Mode.INPAINT)
    params: dict[str, Any] = {
        "Steps": request.steps,
        "Sampler": sampler,
        "Schedule type": schedule,
        "CFG scale": request.cfg_scale,
        "Seed": seed,
        "Size": f"{request.width}x{request.height}",
        "Model hash": model_hash,
        "Model": model_name,
        "VAE hash": vae_hash,
        "VAE": vae_name,
        "Denoising strength": request.denoising_strength if img2img else None,
        "Clip skip": request.clip_skip if request.clip_skip > 1 else None,
        "RNG": "CPU",
    }
    if request.mode is Mode.INPAINT:
        params.update(_inpaint_params(request))
    params.update(extra or {})
    params["Version"] = f"easel-{version}"
    return format_infotext(request.prompt, request.negative_prompt, params)


def _inpaint_params(request: GenerationRequest) -> dict[str, Any]:
    """The keys A1111 adds for a masked img2img; left out only where the parser's default restores the value."""
    padding = request.inpaint_full_res_padding
    return {
        "Mask blur": request.mask_blur,
        "Inpaint area": "Only masked" if request.inpaint_full_res else None,
        "Masked area padding": padding
        if request.inpaint_full_res or padding != PARSE_DEFAULTS["Masked area padding"]
        else None,
        "Masked content": MASKED_CONTENT_LABELS[MaskedContent(request.inpainting_fill)],
        "Mask mode": "Inpaint not masked" if request.inpainting_mask_invert else None,
    }


# -- parsing ---------------------------------------------------------------------------------------------------


def parse_infotext(text: str) -> dict[str, Any]:
    """Split an infotext into ``Prompt``, ``Negative prompt`` and its ``Key: value`` pairs, as A1111 reads it.

    Never raises: whatever cannot be read as parameters stays in the prompt, so pasting a foreign or broken
    text loses nothing.
    """
    if not isinstance(text, str):
        text = str(text)
    *lines, last = text.replace("\r\n", "\n").replace("\r", "\n").strip().split("\n")
    matches = _RE_PARAM.findall(last)
    if len(matches) < 3:
        lines.append(last)
        matches = []

    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for raw in lines:
        line = raw.strip()
        if not negative_lines and line.startswith(_NEGATIVE_PREFIX):
            negative_lines.append(line[len(_NEGATIVE_PREFIX) :].strip())
        elif negative_lines:
            negative_lines.append(line)
        else:
            prompt_lines.append(line)

    result: dict[str, Any] = {"Prompt": "\n".join(prompt_lines), "Negative prompt": "\n".join(negative_lines)}
    for key, raw_value in matches:
        value = _unquote(raw_value.strip())
        size = _RE_SIZE.match(value)
        if size is not None:
            result[f"{key}-1"] = int(size.group(1))
            result[f"{key}-2"] = int(size.group(2))
        else:
            result[key] = _typed(key, value)
    for key, default in PARSE_DEFAULTS.items():
        result.setdefault(key, default)
    return result


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            decoded = json.loads(value)
        except ValueError:
            return value[1:-1]
        return decoded if isinstance(decoded, str) else value[1:-1]
    return value


def _typed(key: str, value: str) -> Any:
    """Numbers become numbers, except names and hashes that only look numeric (``Model hash: 1234567890``)."""
    lowered = key.lower()
    if "hash" in lowered or "prompt" in lowered or lowered in ("model", "vae", "version", "user", "sampler"):
        return value
    if _RE_INT.match(value):
        return int(value)
    if _RE_FLOAT.match(value):
        return float(value)
    return value


def request_fields_from_infotext(parsed: dict[str, Any]) -> dict[str, Any]:
    """Keyword fields for ``GenerationRequest.build`` from a ``parse_infotext`` result (A1111's paste).

    Values that do not convert are passed through unchanged, so ``build`` rejects them with an error naming the
    field instead of this function guessing. ``checkpoint`` is a hint (name preferred over hash) for the caller
    to resolve against the checkpoints on disk.
    """
    fields: dict[str, Any] = {
        "prompt": str(parsed.get("Prompt", "")),
        "negative_prompt": str(parsed.get("Negative prompt", "")),
    }
    simple = (
        ("Steps", "steps", int),
        ("CFG scale", "cfg_scale", float),
        ("Seed", "seed", int),
        ("Size-1", "width", int),
        ("Size-2", "height", int),
        ("Clip skip", "clip_skip", int),
        ("Denoising strength", "denoising_strength", float),
        ("Mask blur", "mask_blur", int),
        ("Masked area padding", "inpaint_full_res_padding", int),
    )
    for key, name, kind in simple:
        if key in parsed:
            fields[name] = _convert(parsed[key], kind)

    if "Sampler" in parsed:
        fields.update(_sampler_fields(str(parsed["Sampler"]), str(parsed.get("Schedule type", "Automatic"))))
    if "Masked content" in parsed:
        label = str(parsed["Masked content"]).strip().lower()
        by_label = {text: content for content, text in MASKED_CONTENT_LABELS.items()}
        fields["inpainting_fill"] = by_label.get(label, parsed["Masked content"])
    if "Inpaint area" in parsed:
        fields["inpaint_full_res"] = str(parsed["Inpaint area"]).strip().lower() == "only masked"
    if "Mask mode" in parsed:
        fields["inpainting_mask_invert"] = str(parsed["Mask mode"]).strip().lower() == "inpaint not masked"
    fields.update(_hires_fields(parsed))
    fields.update(_sd_upscale_fields(parsed))
    checkpoint = parsed.get("Model") or parsed.get("Model hash")
    if checkpoint:
        fields["checkpoint"] = str(checkpoint)
    return fields


def _hires_fields(parsed: dict[str, Any]) -> dict[str, Any]:
    """Hires fix's fields from its ``Hires ...`` keys, as A1111's paste restores them (its presence turns it on)."""
    fields: dict[str, Any] = {}
    if "Hires upscale" in parsed:
        fields["hr_scale"] = _convert(parsed["Hires upscale"], float)
    if "Hires resize-1" in parsed:
        fields["hr_resize_x"] = _convert(parsed["Hires resize-1"], int)
        fields["hr_resize_y"] = _convert(parsed.get("Hires resize-2", 0), int)
    if not fields and "Hires upscaler" not in parsed:
        return {}
    fields["enable_hr"] = True
    simple = (
        ("Hires steps", "hr_second_pass_steps", int),
        ("Hires upscaler", "hr_upscaler", str),
        ("Hires sampler", "hr_sampler_name", str),
        ("Hires schedule type", "hr_scheduler", str),
        ("Hires prompt", "hr_prompt", str),
        ("Hires negative prompt", "hr_negative_prompt", str),
    )
    for key, name, kind in simple:
        if key in parsed:
            fields[name] = _convert(parsed[key], kind)
    return fields


def _sd_upscale_fields(parsed: dict[str, Any]) -> dict[str, Any]:
    if "SD upscale" not in parsed:
        return {}
    fields: dict[str, Any] = {"sd_upscale": True, "sd_upscale_scale": _convert(parsed["SD upscale"], float)}
    if "SD upscale upscaler" in parsed:
        fields["sd_upscale_upscaler"] = str(parsed["SD upscale upscaler"])
    if "SD upscale overlap" in parsed:
        fields["sd_upscale_overlap"] = _convert(parsed["SD upscale overlap"], int)
    return fields


def _convert(value: Any, kind: type) -> Any:
    try:
        converted = kind(value)
    except (TypeError, ValueError, OverflowError):
        return value
    # ``int(7.5)`` would silently drop the fraction; leave such a value for ``build`` to reject.
    if kind is int and isinstance(value, float) and converted != value:
        return value
    return converted


def _sampler_fields(sampler_name: str, schedule: str) -> dict[str, Any]:
    """Canonical sampler and schedule names; legacy combined names (``DPM++ 2M Karras``) are split as in A1111."""
    try:
        sampler, label = samplers.resolve(sampler_name, schedule)
    except InvalidRequest:
        return {"sampler_name": sampler_name, "scheduler": schedule}
    return {"sampler_name": sampler.name, "scheduler": label}


# -- reading from image files ----------------------------------------------------------------------------------


def read_infotext(image: Image.Image) -> str | None:
    """The infotext stored in an image, as A1111 would write it, from whichever tool made it.

    In order: A1111's PNG ``parameters`` text; the other tools' chunks (``webui.outputs.other_tools``: Fooocus's JSON
    in ``parameters``, NovelAI's, InvokeAI's and ComfyUI's own chunks); a JSON ``parameters`` no tool claims, as it
    is; EXIF UserComment (JPEG, WebP); a GIF comment.
    """
    text = image.info.get("parameters")
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = text if isinstance(text, str) else ""
    if text and not text.lstrip().startswith("{"):  # A1111's own text wins over any other tool's chunks
        return text
    found = read_other_tool({**image.info, "parameters": text}, image.size)
    if found is not None:
        return _converted(found)
    if text:
        return text
    comment = _user_comment(image)
    if comment:
        return _converted(fooocus_from_text(comment, image.size)) or comment
    if image.format == "GIF" and image.info.get("comment"):
        comment = image.info["comment"]
        return comment.decode("utf-8", errors="replace") if isinstance(comment, bytes) else str(comment)
    return None


def _converted(found: ToolParameters | None) -> str | None:
    """Another tool's parameters as an infotext; ``None`` when there was nothing to convert."""
    if found is None:
        return None
    return format_infotext(found.prompt, found.negative_prompt, found.params)


def _user_comment(image: Image.Image) -> str | None:
    """EXIF UserComment: in the Exif IFD where A1111 (piexif) puts it, or in IFD0 where Fooocus does."""
    try:
        exif = image.getexif()
        raw = exif.get_ifd(_EXIF_IFD).get(_EXIF_USER_COMMENT) or exif.get(_EXIF_USER_COMMENT)
    except Exception:  # malformed EXIF in an arbitrary upload reads as "no infotext", not a crash
        log.debug("unreadable EXIF in %s image", image.format, exc_info=True)
        return None
    return decode_user_comment(raw) or None if raw else None


def decode_user_comment(raw: bytes | str) -> str:
    """EXIF UserComment: an 8-byte charset prefix, then the text; A1111 (piexif) writes ``UNICODE\\0`` + UTF-16BE.

    Other writers use the file's byte order, so without a BOM the UTF-16 byte order is guessed from where the
    zero bytes of ASCII characters fall.
    """
    if isinstance(raw, str):
        for prefix in ("UNICODE\0", "ASCII\0\0\0", "\0" * 8):
            if raw.startswith(prefix):
                raw = raw[len(prefix) :]
                break
        return raw.rstrip("\0")
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\0":
        if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
            return body.decode("utf-16", errors="replace").rstrip("\0")
        even_zeros = body[0::2].count(0)
        odd_zeros = body[1::2].count(0)
        encoding = "utf-16-le" if odd_zeros > even_zeros else "utf-16-be"
        return body[: len(body) // 2 * 2].decode(encoding, errors="replace").rstrip("\0")
    if prefix in (b"ASCII\0\0\0", b"\0" * 8):
        return body.decode("utf-8", errors="replace").rstrip("\0")
    return raw.decode("utf-8", errors="replace").rstrip("\0")
