"""Generation parameters that other tools write into their PNGs, turned into A1111's terms.

PNG Info, History and the ``png-info`` API read A1111's ``parameters`` text first; an image from NovelAI, ComfyUI,
InvokeAI or Fooocus carries its settings in that tool's own chunk and format instead. Each reader here takes the
image's text chunks (Pillow's ``image.info``) and returns a ``ToolParameters`` (prompt, negative prompt and A1111
keys), or ``None`` when the chunks are not that tool's, so ``infotext.read_infotext`` can try them in turn.

The readers never raise: a chunk that is not what it claims (hand-edited, truncated, another tool's key of the same
name) reads as "not this tool". Sampler and schedule names are mapped to A1111's where Easel has that sampler; one
it does not know is left out, so sending the parameters to txt2img keeps the form's sampler rather than putting a
name in the menu that no job could run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from webui import samplers
from webui.errors import InvalidRequest

# ComfyUI's KSampler names (comfy/samplers.py), which Fooocus uses too; the ``_gpu`` variants only move the noise.
COMFY_SAMPLERS: dict[str, str] = {
    "euler": "Euler",
    "euler_ancestral": "Euler a",
    "heun": "Heun",
    "dpm_2": "DPM2",
    "dpm_2_ancestral": "DPM2 a",
    "lms": "LMS",
    "dpmpp_2s_ancestral": "DPM++ 2S a",
    "dpmpp_sde": "DPM++ SDE",
    "dpmpp_sde_gpu": "DPM++ SDE",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_2m_sde_gpu": "DPM++ 2M SDE",
    "dpmpp_2m_sde_heun": "DPM++ 2M SDE Heun",
    "dpmpp_2m_sde_heun_gpu": "DPM++ 2M SDE Heun",
    "dpmpp_3m_sde": "DPM++ 3M SDE",
    "dpmpp_3m_sde_gpu": "DPM++ 3M SDE",
    "ddim": "DDIM",
    "uni_pc": "UniPC",
    "uni_pc_bh2": "UniPC",
    "lcm": "LCM",
}
# ComfyUI's scheduler names; "normal" spaces the model's own timesteps evenly, which is A1111's "Uniform".
COMFY_SCHEDULES: dict[str, str] = {
    "normal": "Uniform",
    "karras": "Karras",
    "exponential": "Exponential",
    "sgm_uniform": "SGM Uniform",
    "beta": "Beta",
}
# NovelAI's sampler names (its API's ``sampler``) and ``noise_schedule`` values.
NOVELAI_SAMPLERS: dict[str, str] = {
    "k_euler": "Euler",
    "k_euler_ancestral": "Euler a",
    "k_dpmpp_2s_ancestral": "DPM++ 2S a",
    "k_dpmpp_2m": "DPM++ 2M",
    "k_dpmpp_sde": "DPM++ SDE",
    "k_dpmpp_2m_sde": "DPM++ 2M SDE",
    "k_dpm_2": "DPM2",
    "k_dpm_2_ancestral": "DPM2 a",
    "k_lms": "LMS",
    "k_heun": "Heun",
    "ddim": "DDIM",
    "ddim_v3": "DDIM",
}
NOVELAI_SCHEDULES: dict[str, str] = {"karras": "Karras", "exponential": "Exponential"}
# InvokeAI's scheduler names (SCHEDULER_MAP): one name is sampler and schedule, ``_k`` meaning Karras sigmas.
INVOKEAI_SCHEDULERS: dict[str, tuple[str, str | None]] = {
    "euler": ("Euler", "Uniform"),
    "euler_k": ("Euler", "Karras"),
    "euler_a": ("Euler a", None),
    "heun": ("Heun", "Uniform"),
    "heun_k": ("Heun", "Karras"),
    "lms": ("LMS", "Uniform"),
    "lms_k": ("LMS", "Karras"),
    "kdpm_2": ("DPM2", "Uniform"),
    "kdpm_2_k": ("DPM2", "Karras"),
    "kdpm_2_a": ("DPM2 a", "Uniform"),
    "kdpm_2_a_k": ("DPM2 a", "Karras"),
    "dpmpp_2s": ("DPM++ 2S a", "Uniform"),
    "dpmpp_2s_k": ("DPM++ 2S a", "Karras"),
    "dpmpp_2m": ("DPM++ 2M", "Uniform"),
    "dpmpp_2m_k": ("DPM++ 2M", "Karras"),
    "dpmpp_2m_sde": ("DPM++ 2M SDE", "Uniform"),
    "dpmpp_2m_sde_k": ("DPM++ 2M SDE", "Karras"),
    "dpmpp_sde": ("DPM++ SDE", "Uniform"),
    "dpmpp_sde_k": ("DPM++ SDE", "Karras"),
    "ddim": ("DDIM", None),
    "pndm": ("PLMS", None),
    "unipc": ("UniPC", "Uniform"),
    "unipc_k": ("UniPC", "Karras"),
    "lcm": ("LCM", None),
}

_SAMPLER_NODES = ("KSampler", "KSamplerAdvanced")
_MAX_HOPS = 32  # links followed from one input; a real graph is a few deep, a cycle or a hostile file is not
_PAIR = re.compile(r"^\(\s*'?(\d+)'?\s*,\s*'?(\d+)'?\s*\)$")  # Fooocus's resolution, "(1024, 1024)"


@dataclass
class ToolParameters:
    """What an image from another tool says about how it was made, with A1111's key names."""

    prompt: str
    negative_prompt: str = ""
    params: dict[str, Any] = field(default_factory=dict)


def read_other_tool(info: Mapping[str, Any], size: tuple[int, int]) -> ToolParameters | None:
    """The parameters in the first of the known tools' chunks that ``info`` holds; ``size`` is the image's, used
    where the tool does not record one."""
    for reader in READERS:
        found = reader(info, size)
        if found is not None:
            return found
    return None


def fooocus_from_text(text: str, size: tuple[int, int]) -> ToolParameters | None:
    """Fooocus's own scheme: a JSON object where A1111 keeps its text (``parameters`` chunk or EXIF comment)."""
    data = _json_object(text)
    if data is None or not ("full_prompt" in data or data.get("metadata_scheme") == "fooocus"):
        return None
    full = data.get("full_prompt")
    full_negative = data.get("full_negative_prompt")
    # The prompt that was encoded (styles and the expansion applied), as Fooocus's own A1111 export writes it.
    prompt = ", ".join(map(str, full)) if isinstance(full, list) and full else _text(data.get("prompt"))
    negative = (
        ", ".join(map(str, full_negative))
        if isinstance(full_negative, list) and full_negative
        else _text(data.get("negative_prompt"))
    )
    width, height = _fooocus_size(data.get("resolution"), size)
    model = _text(data.get("base_model"))
    params: dict[str, Any] = {
        "Steps": _int(data.get("steps")),
        **_sampler_params(COMFY_SAMPLERS, data.get("sampler"), COMFY_SCHEDULES, data.get("scheduler")),
        "CFG scale": _number(data.get("guidance_scale")),
        "Seed": _int(data.get("seed")),
        "Size": f"{width}x{height}",
        "Model hash": _text(data.get("base_model_hash"))[:10] or None,
        "Model": _model_stem(model) if model and model != "None" else None,
        "Version": _text(data.get("version")) or None,
    }
    return ToolParameters(prompt, negative, params)


def _fooocus(info: Mapping[str, Any], size: tuple[int, int]) -> ToolParameters | None:
    text = info.get("parameters")
    return fooocus_from_text(text, size) if isinstance(text, str) else None


def _novelai(info: Mapping[str, Any], size: tuple[int, int]) -> ToolParameters | None:
    """NovelAI: ``Software: NovelAI``, the prompt in ``Description``, the rest as JSON in ``Comment``."""
    if info.get("Software") != "NovelAI":
        return None
    comment = _json_object(info.get("Comment"))
    if comment is None:
        return None
    prompt = _text(info.get("Description")) or _text(comment.get("prompt"))
    negative = _text(comment.get("uc")) or _v4_caption(comment.get("v4_negative_prompt"))
    width = _int(comment.get("width")) or size[0]
    height = _int(comment.get("height")) or size[1]
    params: dict[str, Any] = {
        "Steps": _int(comment.get("steps")),
        **_sampler_params(NOVELAI_SAMPLERS, comment.get("sampler"), NOVELAI_SCHEDULES, comment.get("noise_schedule")),
        "CFG scale": _number(comment.get("scale")),
        "Seed": _int(comment.get("seed")),
        "Size": f"{width}x{height}",
        "Model": _text(info.get("Source")) or None,  # "NovelAI Diffusion V3 7BCCAA2C": the model and its hash
    }
    return ToolParameters(prompt, negative, params)


def _invokeai(info: Mapping[str, Any], size: tuple[int, int]) -> ToolParameters | None:
    """InvokeAI 3 and later: ``invokeai_metadata``, one JSON object with the core parameters."""
    data = _json_object(info.get("invokeai_metadata"))
    if data is None or not any(k in data for k in ("positive_prompt", "seed", "steps")):
        return None
    model = data.get("model") if isinstance(data.get("model"), Mapping) else {}
    sampler, schedule = INVOKEAI_SCHEDULERS.get(_text(data.get("scheduler")), (None, None))
    clip_skip = _int(data.get("clip_skip"))  # InvokeAI counts layers skipped; A1111's 1 is "none skipped"
    params: dict[str, Any] = {
        "Steps": _int(data.get("steps")),
        **_checked(sampler, schedule),
        "CFG scale": _number(data.get("cfg_scale")),
        "Seed": _int(data.get("seed")),
        "Size": f"{_int(data.get('width')) or size[0]}x{_int(data.get('height')) or size[1]}",
        "Model": _text(model.get("name") or model.get("model_name")) or None,  # 4.x ``name``, 3.x ``model_name``
        "Clip skip": clip_skip + 1 if clip_skip else None,
        "Version": f"InvokeAI {data['app_version']}" if data.get("app_version") else None,
    }
    return ToolParameters(_text(data.get("positive_prompt")), _text(data.get("negative_prompt")), params)


def _comfyui(info: Mapping[str, Any], size: tuple[int, int]) -> ToolParameters | None:
    """ComfyUI: the API-format graph in ``prompt``, read from its KSampler back to the text encoders."""
    graph = _json_object(info.get("prompt"))
    if graph is None:
        return None
    sampler_id = _pick_sampler(graph)
    if sampler_id is None:
        return None
    inputs = graph[sampler_id].get("inputs") or {}
    seed = _scalar(graph, inputs.get("seed", inputs.get("noise_seed")), ("seed", "noise_seed", "value"))
    width, height = _latent_size(graph, inputs.get("latent_image"), size)
    checkpoint = _follow_to(graph, inputs.get("model"), "ckpt_name", via=("model",))
    denoise = _number(_scalar(graph, inputs.get("denoise"), ("value",)))
    params: dict[str, Any] = {
        "Steps": _int(_scalar(graph, inputs.get("steps"), ("steps", "value"))),
        **_sampler_params(
            COMFY_SAMPLERS,
            _scalar(graph, inputs.get("sampler_name"), ("sampler_name", "value")),
            COMFY_SCHEDULES,
            _scalar(graph, inputs.get("scheduler"), ("scheduler", "value")),
        ),
        "CFG scale": _number(_scalar(graph, inputs.get("cfg"), ("cfg", "value"))),
        "Seed": _int(seed),
        "Size": f"{width}x{height}",
        "Model": _model_stem(_text(checkpoint)) if checkpoint else None,
        "Denoising strength": denoise if denoise is not None and denoise < 1 else None,
    }
    positive = _prompt_text(graph, inputs.get("positive"))
    negative = _prompt_text(graph, inputs.get("negative"))
    return ToolParameters(positive, negative, params)


READERS: tuple[Callable[[Mapping[str, Any], tuple[int, int]], ToolParameters | None], ...] = (
    _fooocus,
    _novelai,
    _invokeai,
    _comfyui,
)


# -- ComfyUI's graph -------------------------------------------------------------------------------------------


def _node(graph: Mapping[str, Any], link: Any) -> Mapping[str, Any] | None:
    """The node a link (``["6", 0]``: node id, output index) points at."""
    if isinstance(link, list) and len(link) == 2 and isinstance(graph.get(str(link[0])), Mapping):
        return graph[str(link[0])]
    return None


def _pick_sampler(graph: Mapping[str, Any]) -> str | None:
    """The first pass's sampler: the one starting from an empty latent (a hires-fix graph has a second one that
    starts from the first one's output), else the first in id order."""
    ids = sorted(
        (k for k, v in graph.items() if isinstance(v, Mapping) and v.get("class_type") in _SAMPLER_NODES),
        key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k),
    )
    for node_id in ids:
        latent = _node(graph, (graph[node_id].get("inputs") or {}).get("latent_image"))
        if latent is not None and "Empty" in str(latent.get("class_type", "")):
            return node_id
    return ids[0] if ids else None


def _scalar(graph: Mapping[str, Any], value: Any, names: tuple[str, ...]) -> Any:
    """An input's value; one wired from another node (a primitive, a seed node) is read from that node's inputs."""
    for _ in range(_MAX_HOPS):
        node = _node(graph, value)
        if node is None:
            return value
        inputs = node.get("inputs") or {}
        value = next((inputs[n] for n in names if n in inputs), None)
    return None


def _follow_to(graph: Mapping[str, Any], link: Any, wanted: str, via: tuple[str, ...]) -> Any:
    """Walk back along ``via`` inputs (a LoRA loader's ``model``) to the node that has ``wanted``."""
    for _ in range(_MAX_HOPS):
        node = _node(graph, link)
        if node is None:
            return None
        inputs = node.get("inputs") or {}
        if wanted in inputs:
            return inputs[wanted]
        link = next((inputs[n] for n in via if n in inputs), None)
    return None


def _prompt_text(graph: Mapping[str, Any], link: Any, seen: frozenset[str] = frozenset()) -> str:
    """The text a conditioning input came from: a CLIPTextEncode's ``text`` (SDXL's ``text_g``), through nodes that
    pass conditioning on (ControlNet apply, combine, set area); combined conditionings are joined with ``BREAK``.
    A node already on the path is not entered again, so a cycle in a hand-made file ends."""
    node = _node(graph, link)
    if node is None or str(link[0]) in seen or len(seen) > _MAX_HOPS:
        return ""
    seen = seen | {str(link[0])}
    inputs = node.get("inputs") or {}
    for name in ("text", "text_g", "prompt"):
        if name in inputs:
            return _text(_scalar(graph, inputs[name], ("text", "string", "value", "prompt")))
    index = link[1] if isinstance(link[1], int) else 0
    # ControlNetApplyAdvanced and friends take both and give both back: output 0 is the positive, 1 the negative.
    if "positive" in inputs and "negative" in inputs:
        return _prompt_text(graph, inputs["negative" if index == 1 else "positive"], seen)
    parts = [
        _prompt_text(graph, value, seen)
        for name, value in sorted(inputs.items())
        if name.startswith("conditioning") and _node(graph, value) is not None
    ]
    return " BREAK ".join(p for p in parts if p)


def _latent_size(graph: Mapping[str, Any], link: Any, size: tuple[int, int]) -> tuple[int, int]:
    """The empty latent's width and height (in pixels, as ComfyUI asks for them), else the image's own size."""
    for _ in range(_MAX_HOPS):
        node = _node(graph, link)
        if node is None:
            break
        inputs = node.get("inputs") or {}
        width = _int(_scalar(graph, inputs.get("width"), ("width", "value")))
        height = _int(_scalar(graph, inputs.get("height"), ("height", "value")))
        if width and height:
            return width, height
        link = inputs.get("samples", inputs.get("latent_image"))
    return size


# -- small conversions -----------------------------------------------------------------------------------------


def _sampler_params(
    samplers: Mapping[str, str], sampler: Any, schedules: Mapping[str, str], schedule: Any
) -> dict[str, Any]:
    return _checked(samplers.get(_text(sampler).lower()), schedules.get(_text(schedule).lower()))


def _checked(sampler: str | None, schedule: str | None) -> dict[str, Any]:
    """``Sampler`` and ``Schedule type`` for the infotext; a schedule Easel's sampler cannot apply (diffusers' Euler a
    has no Karras sigmas) is dropped, so the parameters still make a valid request."""
    if sampler is None:
        return {}
    try:
        samplers.resolve(sampler, schedule)
    except InvalidRequest:
        schedule = None
    return {"Sampler": sampler, "Schedule type": schedule}


def _json_object(text: Any) -> dict[str, Any] | None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str) or not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _v4_caption(value: Any) -> str:
    """NovelAI V4's ``{"caption": {"base_caption": ...}}`` prompt objects."""
    caption = value.get("caption") if isinstance(value, Mapping) else None
    return _text(caption.get("base_caption")) if isinstance(caption, Mapping) else ""


def _fooocus_size(value: Any, size: tuple[int, int]) -> tuple[int, int]:
    match = _PAIR.match(_text(value).strip())
    return (int(match[1]), int(match[2])) if match else size


def _model_stem(name: str) -> str:
    """A checkpoint's name as A1111 writes ``Model``: the file name without folders or extension."""
    base = PurePosixPath(name.replace("\\", "/")).name
    return base.rsplit(".", 1)[0] if base.lower().endswith((".safetensors", ".ckpt", ".pt", ".pth", ".bin")) else base


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    """Whole numbers, also as text (Fooocus writes its seed as a string); anything else is "not recorded"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
