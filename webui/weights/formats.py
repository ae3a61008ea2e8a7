"""Weights file formats: tell them apart by content, validate safetensors headers, and read tensors safely.

A file's extension says nothing reliable (people rename ``.ckpt`` to ``.safetensors`` and back), so the first
bytes decide. Pickle-based files are only ever read through torch's restricted ``weights_only`` unpickler:
a checkpoint that needs anything more is refused, never retried with a full unpickle.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from webui.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SAFETENSORS = "safetensors"
TORCH_ZIP = "torch-zip"
PICKLE = "pickle"
DIFFUSERS = "diffusers"

MAX_HEADER_BYTES = 100 * 1024 * 1024
"""No real header comes near this; a bigger length means the file is not safetensors or is corrupt."""

# Bits per element; sub-byte types (F4, F6) pack several elements into a byte.
_DTYPE_BITS = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "F64": 64,
    "I64": 64,
    "U64": 64,
    "C64": 64,
}

_ZIP_MAGIC = b"PK\x03\x04"
_MAX_REASON = 200


def sniff(path: Path) -> str:
    """Return 'safetensors', 'torch-zip', 'pickle' or 'diffusers', judged by content alone.

    Raises ``ModelLoadError`` for a missing, empty or unrecognised file, so callers never guess.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return DIFFUSERS
        raise ModelLoadError(path, "folder has no model_index.json, so it is not a diffusers model")
    head = _read_head(path, 16)
    if not head:
        raise ModelLoadError(path, "file is empty")
    if head.startswith(_ZIP_MAGIC):
        return TORCH_ZIP  # torch.save's default format since 1.6: a zip holding data.pkl and the tensors
    if len(head) >= 9 and head[8:9] == b"{":
        return SAFETENSORS  # the header length itself is checked by validate_safetensors
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return PICKLE  # PROTO opcode: legacy torch.save or a bare pickle
    raise ModelLoadError(
        path, f"unrecognised format (not safetensors, a PyTorch checkpoint or a diffusers folder; starts {head[:8]!r})"
    )


def validate_safetensors(path: Path) -> dict[str, Any]:
    """Check a safetensors header against the file and return it parsed.

    Done before handing the file to the safetensors library so a broken download is reported as
    "truncated" or "tensor 'x' data ends past end of file" instead of an opaque deserialisation error.
    """
    path = Path(path)
    size = _file_size(path)
    if size == 0:
        raise ModelLoadError(path, "file is empty")
    if size < 8:
        raise ModelLoadError(path, f"truncated: file has {size} bytes, fewer than the 8-byte header length")
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > MAX_HEADER_BYTES:
            raise ModelLoadError(
                path, f"header length {n} bytes is over the 100 MB limit; the file is corrupt or not safetensors"
            )
        if 8 + n > size:
            raise ModelLoadError(path, f"truncated: header says {n} bytes but file has {size - 8} after the length")
        raw = f.read(n)
    header = _parse_header(path, raw)
    _check_tensors(path, header, data_size=size - 8 - n)
    return header


def _parse_header(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelLoadError(path, "header is not valid JSON (not UTF-8 text)") from None

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                raise ModelLoadError(path, f"header names '{key}' twice")
            obj[key] = value
        return obj

    try:
        header = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(path, f"header is not valid JSON ({exc.msg} at byte {exc.pos})") from None
    if not isinstance(header, dict):
        raise ModelLoadError(path, f"header is not a JSON object (got {type(header).__name__})")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ModelLoadError(path, "header's __metadata__ is not a map of strings")
    return header


def _check_tensors(path: Path, header: dict[str, Any], data_size: int) -> None:
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise ModelLoadError(path, f"tensor '{name}' has no description in the header")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _DTYPE_BITS:
            raise ModelLoadError(path, f"tensor '{name}' has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            raise ModelLoadError(path, f"tensor '{name}' has an invalid shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_uint(o) for o in offsets)):
            raise ModelLoadError(path, f"tensor '{name}' has invalid data_offsets {offsets!r}")
        begin, end = offsets
        if end < begin:
            raise ModelLoadError(path, f"tensor '{name}' data ends (byte {end}) before it begins (byte {begin})")
        if end > data_size:
            raise ModelLoadError(
                path, f"tensor '{name}' data ends past end of file (needs {end} data bytes, file has {data_size})"
            )
        bits = math.prod(shape) * _DTYPE_BITS[dtype]
        if bits % 8 or bits // 8 != end - begin:
            raise ModelLoadError(
                path, f"tensor '{name}' has {end - begin} bytes but {dtype} with shape {shape} needs {bits / 8:g}"
            )
        spans.append((begin, end, name))
    position, previous = 0, None
    for begin, end, name in sorted(spans):
        if begin < position:
            raise ModelLoadError(path, f"tensor '{name}' overlaps tensor '{previous}'")
        if begin > position:
            raise ModelLoadError(
                path, f"tensor '{name}' starts at data byte {begin}, leaving a gap after byte {position}"
            )
        position, previous = end, name
    if position != data_size:
        raise ModelLoadError(path, f"file has {data_size - position} bytes after the last tensor (corrupt or padded)")


def read_metadata(path: Path) -> dict[str, str]:
    """The safetensors ``__metadata__`` map (training info, LoRA settings...); empty for other formats."""
    path = Path(path)
    if sniff(path) != SAFETENSORS:
        return {}
    return dict(validate_safetensors(path).get("__metadata__", {}))


def read_state_dict(path: Path, device: str = "cpu", *, wrappers: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Read a single-file checkpoint into a flat name→tensor dict.

    A pickled checkpoint may hold its weights a level down: under the first of ``wrappers`` (the caller's own, e.g.
    a training script's ``model``) or of the built-in ``state_dict``, ``params_ema``, ``params`` that is a dict;
    entries beside it (optimizer state, counters) are not read. Every failure becomes a ``ModelLoadError`` naming
    the file, so one bad file never takes the list down.
    """
    path = Path(path)
    kind = sniff(path)
    if kind == DIFFUSERS:
        raise ModelLoadError(path, "is a diffusers folder, not a single weights file")
    if kind == SAFETENSORS:
        validate_safetensors(path)
        try:
            from safetensors.torch import load_file

            return load_file(path, device=device)
        except Exception as exc:
            raise ModelLoadError(path, f"safetensors could not read it ({_first_line(exc)})") from exc
    loaded = _torch_load(path)
    # Lightning wraps the weights with optimizer state and counters; BasicSR (Real-ESRGAN) under params(_ema).
    holder = "file"
    for wrapper in (*wrappers, "state_dict", "params_ema", "params"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded, holder = loaded[wrapper], f"its '{wrapper}' entry"
            break
    return _only_tensors(path, loaded, device, holder)


def read_embedding_object(path: Path) -> Any:
    """A pickled embedding (A1111 ``.pt``, diffusers ``.bin``) as its nested dict, through the restricted unpickler
    (``weights_only=True``): the embedding's vectors sit a level down, so ``read_state_dict`` would not find them."""
    return _torch_load(Path(path))


class _InertObject:
    """Stands in for objects old Lightning checkpoints pickle beside the weights (callbacks).

    It keeps the pickled state as data and runs none of the original class's code, so allowing it keeps the
    restricted unpickler's guarantee while letting the 2022-era ``.ckpt`` files users still have load.
    """

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _extra_safe_globals() -> list[Any]:
    """Names that SD-era ``.ckpt`` files pickle besides tensors: Lightning callbacks and numpy step counters."""
    import numpy as np

    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    extra: list[Any] = [
        (_InertObject, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
    ]
    extra += [getattr(np.dtypes, n) for n in ("Int64DType", "Int32DType", "Float64DType", "Float32DType")]
    return extra


def _torch_load(path: Path) -> Any:
    """Load a zip or legacy torch checkpoint with the restricted unpickler; refuse what it rejects."""
    import torch

    try:
        # An open file, not the path: given a path ending in .safetensors, torch.load goes by the extension.
        with open(path, "rb") as f, torch.serialization.safe_globals(_extra_safe_globals()):
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelLoadError(
            path,
            f"refused: this pickle needs code execution to load ({_torch_reason(exc)}); convert it to .safetensors",
        ) from None
    except EOFError:
        raise ModelLoadError(path, "truncated: pickle data ends early") from None
    except Exception as exc:
        raise ModelLoadError(path, f"not a readable PyTorch checkpoint ({_first_line(exc)})") from None


def _only_tensors(path: Path, loaded: Any, device: str, holder: str = "file") -> dict[str, torch.Tensor]:
    import torch

    if not isinstance(loaded, dict):
        raise ModelLoadError(path, f"{holder} holds a {type(loaded).__name__}, not a dict of weights")
    tensors = {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelLoadError(path, f"{holder} holds no tensors")
    if len(tensors) != len(loaded):
        log.debug("%s: ignored %d non-tensor entries", path.name, len(loaded) - len(tensors))
    if device != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors


def _torch_reason(exc: BaseException) -> str:
    """The useful line of torch's weights_only message (e.g. the blocked GLOBAL), not its boilerplate."""
    for line in str(exc).splitlines():
        line = line.strip()
        if "WeightsUnpickler error:" in line:
            line = line.split("WeightsUnpickler error:", 1)[1].strip()
        if not line or line.startswith(("Weights only load failed", "Check the documentation")):
            continue
        return line[:_MAX_REASON]
    inner = exc.__cause__ or exc.__context__
    return _first_line(inner) if inner is not None else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:_MAX_REASON]


def _read_head(path: Path, count: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(count)
    except FileNotFoundError:
        raise ModelLoadError(path, "file not found") from None
    except OSError as exc:
        raise ModelLoadError(path, f"cannot read file ({exc.strerror or exc})") from None


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        raise ModelLoadError(path, "file not found") from None
    except OSError as exc:
        raise ModelLoadError(path, f"cannot read file ({exc.strerror or exc})") from None


def _is_uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
