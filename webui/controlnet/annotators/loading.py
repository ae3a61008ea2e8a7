"""Reading an annotator file into its network: safe readers, an exact name-and-shape check, a small cache.

Users put the files the SD-WebUI ControlNet extension downloads into ``models/annotators``. They are read only
through ``webui.weights.formats.read_state_dict`` (safetensors, or ``torch.load(weights_only=True)``; it unwraps
``state_dict``/``params`` wrappers, and the caller's own: ``scannet.pt``'s ``model``, ``res101.pth``'s
``depth_model``), a ``module.`` prefix left by ``DataParallel`` is dropped, and the tensors must then match the
network's own names and shapes exactly (``load_state_dict(strict=True)``). A mismatch is reported before torch sees
it, as a ``ModelLoadError`` that names the file and the first differences, so a wrong or damaged download reads as
such instead of a traceback.

The network is built on the meta device and given uninitialised CPU memory (``to_empty``): the file's weights
replace every tensor, so random initialisation of up to 120 million numbers would be wasted. Loaded networks stay in
an LRU of three (``openpose_full`` runs three at once), keyed by the file's path and the network, and checked
against the file's mtime and size: a preview followed by a generation reads the file once, and a file replaced on
disk is read again, its old network dropped first so both are never held. The lock makes loading safe from any
thread.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from webui.errors import ModelLoadError
from webui.weights.formats import read_state_dict

_KEEP = 3
_SHOWN = 3  # differences named in an error message

Net = TypeVar("Net", bound=nn.Module)

_cache: OrderedDict[tuple[str, str], tuple[tuple[int, int], nn.Module]] = OrderedDict()
_lock = threading.Lock()


def network(path: Path, build: Callable[[], Net], *, wrapper: str | None = None) -> Net:
    """The network ``build()`` makes, with ``path``'s weights, in float32 on the CPU and in eval mode.

    Read from disk the first time, and again only when the file's mtime or size changed. ``wrapper``: the key a
    pickled checkpoint keeps its weights under, when not a flat state dict or a built-in wrapper (a flat file is
    still read). ``ModelLoadError`` (naming the file) when it cannot be read or does not fit."""
    path = Path(path)
    key = (str(path.resolve()), getattr(build, "__qualname__", repr(build)))
    with _lock:
        try:
            stat = path.stat()
        except OSError as exc:
            raise ModelLoadError(path, f"cannot be read ({exc.strerror or exc})") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        if key in _cache:
            if _cache[key][0] == stamp:
                _cache.move_to_end(key)
                return _cache[key][1]  # type: ignore[return-value]
            del _cache[key]  # stale: its memory back before the changed file is read
        tensors = read_state_dict(path, wrappers=(wrapper,) if wrapper else ())
        with torch.device("meta"):
            model = build()
        model.to_empty(device="cpu")
        load_exact(model, tensors, path)
        del tensors
        model.float().eval().requires_grad_(False)
        _cache[key] = (stamp, model)
        while len(_cache) > _KEEP:
            _cache.popitem(last=False)
        return model


def forget() -> None:
    """Drop every cached network (tests; a caller that wants the memory back)."""
    with _lock:
        _cache.clear()


def load_exact(model: nn.Module, tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """Copy ``tensors`` into ``model``, which must have exactly these names and shapes (after a ``module.`` prefix
    is dropped). BatchNorm's ``num_batches_tracked`` counter may be absent: inference never reads it."""
    state = {name.removeprefix("module."): value for name, value in tensors.items()}
    expected = model.state_dict()
    for name, value in expected.items():
        if name.endswith("num_batches_tracked") and name not in state:
            state[name] = value
    problems = []
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    wrong = [
        f"{name} is {list(value.shape)}, the network needs {list(expected[name].shape)}"
        for name, value in state.items()
        if name in expected and value.shape != expected[name].shape
    ]
    if missing:
        problems.append(
            f"{len(missing)} tensors missing ({', '.join(missing[:_SHOWN])}{', ...' * (len(missing) > _SHOWN)})"
        )
    if unexpected:
        problems.append(
            f"{len(unexpected)} unknown tensors ({', '.join(unexpected[:_SHOWN])}{', ...' * (len(unexpected) > _SHOWN)})"
        )
    if wrong:
        problems.append(f"{len(wrong)} of other shapes ({'; '.join(wrong[:_SHOWN])}{'; ...' * (len(wrong) > _SHOWN)})")
    if problems:
        raise ModelLoadError(
            path, f"is not the {type(model).__name__} network this preprocessor runs: {'; '.join(problems)}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as exc:  # e.g. a non-float tensor where a weight belongs
        raise ModelLoadError(path, f"its tensors do not fit the network ({str(exc).splitlines()[0]})") from None
