"""Weights files on disk: format sniffing, safe reading, hashing with its cache, and the model registry."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from webui.errors import EaselError, ModelLoadError, ModelNotFound
from webui.weights import formats, hashing
from webui.weights.hashing import HashCache
from webui.weights.registry import VAE_EXTENSIONS, ModelRegistry

REPO = Path(__file__).resolve().parent.parent


def _tensors() -> dict[str, torch.Tensor]:
    return {"a.weight": torch.arange(64 * 64, dtype=torch.float32).reshape(64, 64), "b.bias": torch.ones(300)}


def _safetensors(path: Path, metadata: dict[str, str] | None = None) -> Path:
    save_file(_tensors(), str(path), metadata=metadata)
    return path


def _raw_safetensors(path: Path, header: object, data: bytes = b"", length: int | None = None) -> Path:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def _load_error(path: Path) -> ModelLoadError:
    with pytest.raises(ModelLoadError) as info:
        formats.read_state_dict(path)
    assert path.name in str(info.value)
    return info.value


# --- sniffing -------------------------------------------------------------------------------------------------


def test_sniff_by_content_not_extension(tmp_path: Path) -> None:
    st = _safetensors(tmp_path / "model.ckpt")
    assert formats.sniff(st) == "safetensors"
    zipped = tmp_path / "model.safetensors"
    torch.save(_tensors(), zipped)
    assert formats.sniff(zipped) == "torch-zip"
    legacy = tmp_path / "old.bin"
    torch.save(_tensors(), legacy, _use_new_zipfile_serialization=False)
    assert formats.sniff(legacy) == "pickle"
    folder = tmp_path / "diffusers-model"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    assert formats.sniff(folder) == "diffusers"


def test_renamed_files_still_load(tmp_path: Path) -> None:
    st = formats.read_state_dict(_safetensors(tmp_path / "model.ckpt"))
    zipped = tmp_path / "model.safetensors"
    torch.save(_tensors(), zipped)
    for loaded in (st, formats.read_state_dict(zipped)):
        assert torch.equal(loaded["a.weight"], _tensors()["a.weight"])


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "file is empty"), (b"hello world, not a model", "unrecognised format"), (b"\x01\x02", "unrecognised")],
)
def test_sniff_rejects_unknown(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=reason):
        formats.sniff(path)
    _load_error(path)


def test_sniff_missing_file_and_plain_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="file not found"):
        formats.sniff(tmp_path / "nope.safetensors")
    with pytest.raises(ModelLoadError, match=r"model_index\.json"):
        formats.sniff(tmp_path)


# --- safetensors validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["1kb", "half", "minus1", "in-header"])
def test_truncated_safetensors(tmp_path: Path, cut: str) -> None:
    path = _safetensors(tmp_path / "broken.safetensors")
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    keep = {"1kb": 1024, "half": len(data) // 2, "minus1": len(data) - 1, "in-header": 8 + header_len // 2}[cut]
    assert keep > 8 + header_len or cut == "in-header"
    path.write_bytes(data[:keep])
    err = _load_error(path)
    if cut == "in-header":
        assert err.reason == f"truncated: header says {header_len} bytes but file has {keep - 8} after the length"
    else:
        assert "data ends past end of file" in err.reason


def test_header_length_over_limit(tmp_path: Path) -> None:
    path = _raw_safetensors(tmp_path / "huge.safetensors", {}, length=200 * 1024 * 1024)
    assert "over the 100 MB limit" in _load_error(path).reason


def test_garbage_header(tmp_path: Path) -> None:
    path = _raw_safetensors(tmp_path / "garbage.safetensors", b"{not json at all", b"\0" * 16)
    assert _load_error(path).reason.startswith("header is not valid JSON")
    path = _raw_safetensors(tmp_path / "bytes.safetensors", b"{\xff\xfe}")
    assert _load_error(path).reason.startswith("header is not valid JSON")


def test_header_not_an_object_or_bad_metadata(tmp_path: Path) -> None:
    # sniff needs a '{' at byte 8, so a top-level array can only reach the validator directly
    path = _raw_safetensors(tmp_path / "list.safetensors", [1, 2])
    with pytest.raises(ModelLoadError, match="not a JSON object"):
        formats.validate_safetensors(path)
    path = _raw_safetensors(tmp_path / "meta.safetensors", {"__metadata__": {"epoch": 3}})
    assert "__metadata__" in _load_error(path).reason


def test_offsets_past_eof(tmp_path: Path) -> None:
    header = {"x": {"dtype": "F32", "shape": [250], "data_offsets": [0, 1000]}}
    path = _raw_safetensors(tmp_path / "short.safetensors", header, b"\0" * 16)
    err = _load_error(path)
    assert err.reason.startswith("tensor 'x' data ends past end of file")


@pytest.mark.parametrize(
    ("header", "data_len", "reason"),
    [
        ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, 4, "tensor 'x' has 4 bytes but F32"),
        ({"x": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 4]}}, 4, "unknown dtype"),
        ({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, 4, "invalid shape"),
        ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, 4, "before it begins"),
        ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}, 4, "invalid data_offsets"),
        (
            {
                "x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "y": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
            },
            8,
            "overlaps",
        ),
        (
            {
                "x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                "y": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},
            },
            12,
            "gap",
        ),
        ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 8, "4 bytes after the last tensor"),
    ],
)
def test_inconsistent_tensor_entries(tmp_path: Path, header: dict, data_len: int, reason: str) -> None:
    path = _raw_safetensors(tmp_path / "bad.safetensors", header, b"\0" * data_len)
    assert reason in _load_error(path).reason


def test_duplicate_tensor_names(tmp_path: Path) -> None:
    entry = '{"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}'
    raw = f'{{"x": {entry}, "x": {entry}}}'.encode()
    path = _raw_safetensors(tmp_path / "dup.safetensors", raw, b"\0" * 4)
    assert _load_error(path).reason == "header names 'x' twice"


def test_valid_safetensors_and_metadata(tmp_path: Path) -> None:
    path = _safetensors(tmp_path / "ok.safetensors", metadata={"ss_network_dim": "32"})
    assert set(formats.validate_safetensors(path)) == {"__metadata__", "a.weight", "b.bias"}
    assert formats.read_metadata(path) == {"ss_network_dim": "32"}
    assert formats.read_metadata(_safetensors(tmp_path / "plain.safetensors")) == {}
    zipped = tmp_path / "z.ckpt"
    torch.save(_tensors(), zipped)
    assert formats.read_metadata(zipped) == {}
    assert set(formats.read_state_dict(path)) == {"a.weight", "b.bias"}


# --- pickles --------------------------------------------------------------------------------------------------


class _Evil:
    """Unpickling this runs exec(), which creates the canary file: proof that code ran."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self):
        return (exec, (f"open({str(self.canary)!r}, 'w').close()",))


def test_payload_is_live(tmp_path: Path) -> None:
    """Guards the test below: an unrestricted unpickle of the payload really does create the canary."""
    canary = tmp_path / "canary"
    pickle.loads(pickle.dumps(_Evil(canary)))
    assert canary.exists()


@pytest.mark.parametrize("variant", ["raw-pickle.safetensors", "raw-pickle.ckpt", "torch-zip.ckpt", "legacy.pt"])
def test_malicious_pickle_refused(tmp_path: Path, variant: str) -> None:
    canary = tmp_path / "canary"
    evil = {"model.weight": torch.ones(2), "boom": _Evil(canary)}
    path = tmp_path / f"evil.{variant.split('.')[1]}"
    if variant.startswith("raw-pickle"):
        path.write_bytes(pickle.dumps(_Evil(canary), protocol=2))
    elif variant == "torch-zip.ckpt":
        torch.save(evil, path)
    else:
        torch.save(evil, path, _use_new_zipfile_serialization=False)
    err = _load_error(path)
    assert err.reason.startswith("refused: this pickle needs code execution to load (")
    assert err.reason.endswith("); convert it to .safetensors")
    assert "Weights only load failed" not in err.reason
    assert not canary.exists()


def test_legit_ckpt_loads_and_lightning_unwrapped(tmp_path: Path) -> None:
    plain = tmp_path / "plain.ckpt"
    torch.save(_tensors(), plain)
    assert torch.equal(formats.read_state_dict(plain)["b.bias"], torch.ones(300))
    lightning = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": _tensors(), "epoch": 3, "global_step": 1000}, lightning)
    assert set(formats.read_state_dict(lightning)) == {"a.weight", "b.bias"}
    legacy = tmp_path / "legacy.ckpt"
    torch.save({"state_dict": _tensors()}, legacy, _use_new_zipfile_serialization=False)
    assert set(formats.read_state_dict(legacy)) == {"a.weight", "b.bias"}


def test_corrupt_or_empty_torch_files(tmp_path: Path) -> None:
    zipped = tmp_path / "cut.ckpt"
    torch.save(_tensors(), zipped)
    zipped.write_bytes(zipped.read_bytes()[:2000])
    assert "not a readable PyTorch checkpoint" in _load_error(zipped).reason
    not_weights = tmp_path / "list.ckpt"
    torch.save([1, 2, 3], not_weights)
    assert "not a dict of weights" in _load_error(not_weights).reason
    empty = tmp_path / "empty.ckpt"
    torch.save({"epoch": 1}, empty)
    assert _load_error(empty).reason == "file holds no tensors"


def test_no_unsafe_deserialisation_in_webui() -> None:
    """Independent of ruff: every torch.load passes weights_only=True and nothing calls pickle's loaders."""
    unsafe = re.compile(r"\b(c?pickle|dill|joblib)\s*\.\s*(loads?|Unpickler)\b|\bfrom\s+c?pickle\s+import\s+[^\n]*load")
    problems: list[str] = []
    torch_loads = 0
    for file in sorted((REPO / "webui").rglob("*.py")):
        text = file.read_text(encoding="utf-8")
        rel = file.relative_to(REPO)
        for match in unsafe.finditer(text):
            problems.append(f"{rel}:{text.count(chr(10), 0, match.start()) + 1}: {match.group(0)}")
        for match in re.finditer(r"\btorch\s*\.\s*load\s*\(", text):
            torch_loads += 1
            call = _balanced_call(text, match.end() - 1)
            if not re.search(r"\bweights_only\s*=\s*True\b", call):
                problems.append(f"{rel}:{text.count(chr(10), 0, match.start()) + 1}: torch.load{call[:80]}")
    assert torch_loads >= 1, "the guard found no torch.load at all; is it scanning the right tree?"
    assert not problems, "unsafe deserialisation:\n" + "\n".join(problems)


def _balanced_call(text: str, open_paren: int) -> str:
    depth = 0
    for i in range(open_paren, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_paren : i + 1]
    return text[open_paren:]


# --- hashing --------------------------------------------------------------------------------------------------


def test_hash_functions(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    payload = os.urandom(0x100000 + 0x20000)
    big.write_bytes(payload)
    assert hashing.sha256_file(big, chunk=4096) == hashlib.sha256(payload).hexdigest()
    assert hashing.legacy_model_hash(big) == hashlib.sha256(payload[0x100000:0x110000]).hexdigest()[:8]
    small = tmp_path / "small.bin"
    small.write_bytes(b"x")
    assert hashing.legacy_model_hash(small) == hashlib.sha256(b"").hexdigest()[:8]
    st = _safetensors(tmp_path / "lora.safetensors")
    data = st.read_bytes()
    n = int.from_bytes(data[:8], "little")
    assert hashing.addnet_hash_safetensors(st) == hashlib.sha256(data[8 + n :]).hexdigest()


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = hashing.sha256_file

    def counting(path: Path, chunk: int = 1 << 20) -> str:
        calls.append(Path(path))
        return real(path, chunk)

    monkeypatch.setattr(hashing, "sha256_file", counting)
    return calls


def test_hash_cache_computes_once_and_persists(tmp_path: Path, counted: list[Path]) -> None:
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"weights" * 1000)
    cache_file = tmp_path / "cache" / "hashes.json"
    cache = HashCache(cache_file)
    assert cache.get(model) is None
    expected = hashlib.sha256(model.read_bytes()).hexdigest()
    assert cache.compute(model, "sha256") == expected
    assert cache.compute(model, "sha256") == expected
    assert cache.get(model) == expected
    assert len(counted) == 1
    fresh = HashCache(cache_file)
    assert fresh.get(model) == expected
    assert fresh.compute(model) == expected
    assert len(counted) == 1
    assert not [p for p in cache_file.parent.iterdir() if p.name != "hashes.json"], "temp files left behind"


def test_hash_cache_rehashes_changed_file(tmp_path: Path, counted: list[Path]) -> None:
    model = tmp_path / "m.ckpt"
    model.write_bytes(b"a" * 100)
    cache = HashCache(tmp_path / "hashes.json")
    first = cache.compute(model)
    legacy = cache.compute(model, "legacy")
    model.write_bytes(b"b" * 101)  # size changes
    assert cache.get(model) is None
    assert cache.get(model, "legacy") is None, "hashes of the old file must not survive"
    second = cache.compute(model)
    assert second != first and len(counted) == 2
    st = model.stat()
    model.write_bytes(b"c" * 101)  # same size, only mtime differs
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert HashCache(tmp_path / "hashes.json").get(model) is None
    assert cache.compute(model) == hashlib.sha256(b"c" * 101).hexdigest()
    assert len(counted) == 3
    assert cache.compute(model, "legacy") == legacy, "legacy hash reads bytes past 1 MiB: empty for both"


@pytest.mark.parametrize(
    "content", ["{not json", "[1, 2]", '{"version": 1, "files": {"x": 5}}', '{"version": 99}', "\0\0\0"]
)
def test_hash_cache_tolerates_corrupt_file(
    tmp_path: Path, counted: list[Path], caplog: pytest.LogCaptureFixture, content: str
) -> None:
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"w" * 10)
    cache_file = tmp_path / "hashes.json"
    cache_file.write_text(content)
    cache = HashCache(cache_file)
    with caplog.at_level(logging.WARNING):
        assert cache.get(model) is None
    assert cache.compute(model) == hashlib.sha256(b"w" * 10).hexdigest()
    assert HashCache(cache_file).get(model) is not None, "the cache was rebuilt"
    assert len(counted) == 1


def test_hash_cache_unknown_kind_and_missing_file(tmp_path: Path) -> None:
    cache = HashCache(tmp_path / "hashes.json")
    with pytest.raises(ValueError, match="unknown hash kind"):
        cache.compute(tmp_path, "md5")
    assert cache.get(tmp_path / "missing") is None
    with pytest.raises(ModelLoadError, match="cannot read file"):
        cache.compute(tmp_path / "missing")


# --- registry -------------------------------------------------------------------------------------------------


@pytest.fixture
def models(tmp_path: Path) -> Path:
    root = tmp_path / "models" / "Stable-diffusion"
    (root / "sub").mkdir(parents=True)
    (root / "beta.safetensors").write_bytes(b"beta" * 100)
    (root / "Alpha.CKPT").write_bytes(b"alpha" * 100)
    (root / "sub" / "gamma.SafeTensors").write_bytes(b"gamma" * 100)
    (root / "notes.txt").write_text("not a model")
    (root / "._beta.safetensors").write_bytes(b"macOS junk")
    (root / ".easel-cache").mkdir()
    (root / ".easel-cache" / "hidden.safetensors").write_bytes(b"x")
    diffusers = root / "sdxl-diffusers"
    (diffusers / "unet").mkdir(parents=True)
    (diffusers / "model_index.json").write_text("{}")
    (diffusers / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"u" * 50)
    return root


def _registry(root: Path, **kwargs: object) -> ModelRegistry:
    registry = ModelRegistry(root, HashCache(root / ".easel-cache" / "hashes.json"), **kwargs)  # type: ignore[arg-type]
    registry.refresh()
    return registry


def test_registry_lists_like_a1111(models: Path) -> None:
    registry = _registry(models)
    items = registry.list()
    assert [i.name for i in items] == ["Alpha.CKPT", "beta.safetensors", "sdxl-diffusers", "sub/gamma.SafeTensors"]
    by_name = {i.name: i for i in items}
    assert by_name["sub/gamma.SafeTensors"].model_name == "sub/gamma"
    assert by_name["sdxl-diffusers"].kind == "diffusers"
    assert by_name["sdxl-diffusers"].model_name == "sdxl-diffusers"
    assert by_name["sdxl-diffusers"].size == 52
    assert by_name["beta.safetensors"].size == 400
    assert all(i.sha256 is None and i.shorthash is None and i.title == i.name for i in items)


def test_registry_titles_with_hash(models: Path) -> None:
    registry = _registry(models)
    beta = registry.get("beta")
    digest = hashlib.sha256(b"beta" * 100).hexdigest()
    assert beta.ensure_hash(registry.cache) == digest
    assert beta.shorthash == digest[:10]
    assert beta.title == f"beta.safetensors [{digest[:10]}]"
    reopened = _registry(models)  # a new process: the hash comes from the cache file, not re-hashing
    assert reopened.get("beta.safetensors").title == beta.title
    with pytest.raises(ModelLoadError, match="no single-file hash"):
        reopened.get("sdxl-diffusers").ensure_hash(reopened.cache)


def test_registry_lookup_order(models: Path) -> None:
    registry = _registry(models)
    gamma = registry.get("sub/gamma.SafeTensors")
    digest = gamma.ensure_hash(registry.cache)
    assert registry.get(gamma.title) is gamma
    assert registry.get("sub/gamma") is gamma
    assert registry.get("sub\\gamma.SafeTensors") is gamma  # Windows-style clients
    assert registry.get(digest[:10]) is gamma
    assert registry.get(digest[:8].upper()) is gamma
    assert registry.get(digest) is gamma
    assert registry.get("sub/gamma.SafeTensors [0123456789]") is gamma  # stale hash from an old infotext
    assert registry.get("sub/gamma [deadbeef]") is gamma
    assert registry.get("  Alpha  ").name == "Alpha.CKPT"
    assert registry.get("alpha.ckpt").name == "Alpha.CKPT"  # unique case-insensitive match
    legacy = registry.cache.compute(gamma.path, "legacy")
    assert _registry(models).get(legacy).name == gamma.name


@pytest.mark.parametrize(
    "query",
    ["nothing", "", "../../etc/passwd", "/etc/passwd", "sub/../beta.safetensors", "notes.txt", "hidden", "12345678"],
)
def test_registry_unknown_names(models: Path, query: str) -> None:
    registry = _registry(models)
    with pytest.raises(ModelNotFound) as info:
        registry.get(query)
    assert info.value.field == "checkpoint"
    assert "beta.safetensors" in str(info.value)


def test_registry_symlinks(models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.safetensors").write_bytes(b"s")
    (models / "escape.safetensors").symlink_to(outside / "secret.safetensors")
    (models / "escape-dir").symlink_to(outside, target_is_directory=True)
    (models / "alias.safetensors").symlink_to(models / "beta.safetensors")
    (models / "sub" / "loop").symlink_to(models, target_is_directory=True)
    (models / "dangling.safetensors").symlink_to(tmp_path / "gone.safetensors")
    with caplog.at_level(logging.WARNING):
        registry = _registry(models)
    names = [i.name for i in registry.list()]
    assert "escape.safetensors" not in names
    assert not any(n.startswith("escape-dir") for n in names)
    assert "dangling.safetensors" not in names
    assert "alias.safetensors" in names
    assert "points outside" in caplog.text
    with pytest.raises(ModelNotFound):
        registry.get("secret")


def test_registry_errors_and_refresh(models: Path) -> None:
    registry = _registry(models)
    beta = registry.get("beta")
    registry.record_error(beta, "truncated: header says 1234 bytes but file has 900")
    assert registry.errors == {"beta.safetensors": "truncated: header says 1234 bytes but file has 900"}
    assert len(registry.list()) == 4
    registry.refresh()
    assert "beta.safetensors" in registry.errors, "an unchanged file keeps its error"
    beta.path.write_bytes(b"fixed" * 10)
    registry.refresh()
    assert registry.errors == {}, "a replaced file gets another chance"
    (models / "new.pt").write_bytes(b"n")
    assert "new.pt" in [i.name for i in registry.refresh()]


def test_registry_generic_for_vae(tmp_path: Path) -> None:
    root = tmp_path / "VAE"
    root.mkdir()
    for name in ("a.vae.safetensors", "b.pt", "c.bin", "d.ckpt"):
        (root / name).write_bytes(b"v")
    registry = _registry(root, extensions=VAE_EXTENSIONS, label="sd_vae", diffusers_folders=False)
    assert [i.name for i in registry.list()] == ["a.vae.safetensors", "b.pt", "d.ckpt"]
    assert registry.get("a.vae").name == "a.vae.safetensors"
    with pytest.raises(ModelNotFound, match=r"sd_vae: 'c\.bin' not found"):
        registry.get("c.bin")
    missing = _registry(tmp_path / "nope")
    assert missing.list() == []


def test_lightning_era_ckpt_with_callbacks_and_numpy_counters_loads_without_running_their_code(tmp_path):
    """SD-era .ckpt files pickle a Lightning ModelCheckpoint and numpy step counters beside the weights."""
    import sys
    import types

    import numpy as np

    canary = tmp_path / "canary"
    module = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:
        def __setstate__(self, state):  # the real class's code: must never run on load
            canary.write_text("ran")
            self.__dict__.update(state)

    ModelCheckpoint.__module__ = module.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", module.__name__]
    for name in names[:-1]:
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules[module.__name__] = module
    try:
        callback = ModelCheckpoint()
        callback.__dict__["monitor"] = "val/loss"
        path = tmp_path / "sd-v1-style.ckpt"
        torch.save(
            {
                "state_dict": {"model.diffusion_model.x": torch.ones(2)},
                "global_step": np.int64(470000),
                "epoch": np.int32(3),
                "callbacks": {ModelCheckpoint: callback},
            },
            path,
        )
    finally:
        for name in names:
            sys.modules.pop(name, None)
    loaded = formats.read_state_dict(path)
    assert list(loaded) == ["model.diffusion_model.x"]
    assert not canary.exists()


def test_builtin_models_are_listed_after_the_users_and_a_user_file_of_that_name_wins(
    models: Path, tmp_path: Path
) -> None:
    shipped = tmp_path / "package" / "easel-demo.safetensors"
    shipped.parent.mkdir()
    shipped.write_bytes(b"demo" * 10)
    registry = _registry(models, builtins=[shipped])
    items = registry.list()
    assert items[-1].name == "easel-demo.safetensors" and items[-1].builtin and items[-1].path == shipped
    assert not any(i.builtin for i in items[:-1])
    assert registry.get("easel-demo").path == shipped
    (models / "easel-demo.safetensors").write_bytes(b"mine" * 10)
    registry.refresh()
    mine = registry.get("easel-demo.safetensors")
    assert mine.path == models / "easel-demo.safetensors" and not mine.builtin
    assert sum(i.name == "easel-demo.safetensors" for i in registry.list()) == 1
    assert _registry(models, builtins=[tmp_path / "missing.safetensors"]).list()[-1].name != "missing.safetensors"


def test_the_demo_model_is_the_default_only_without_a_usable_user_checkpoint(tmp_path: Path) -> None:
    from webui.demo.weights import DEMO_MODEL_NAME
    from webui.pipeline.device import choose
    from webui.settings import Settings
    from webui.weights.manager import WeightsManager

    models = tmp_path / "models"
    (models / "Stable-diffusion").mkdir(parents=True)
    settings = Settings(models_dir=models)
    weights = WeightsManager(settings, choose(settings))
    weights.refresh()
    assert weights.default_checkpoint().name == DEMO_MODEL_NAME
    _safetensors(models / "Stable-diffusion" / "zz-mine.safetensors")
    weights.refresh()
    assert weights.default_checkpoint().name == "zz-mine.safetensors"  # a usable file of the user's wins
    weights.checkpoints.record_error(weights.checkpoints.get("zz-mine"), "broken")
    assert weights.default_checkpoint().name == DEMO_MODEL_NAME
    hidden = WeightsManager(Settings(models_dir=tmp_path / "empty", demo_model=False), choose(settings))
    hidden.refresh()
    assert hidden.checkpoints.list() == []
    with pytest.raises(EaselError, match="no usable checkpoint"):
        hidden.default_checkpoint()
