"""File hashes as A1111 and kohya compute them, and the on-disk cache that spares re-hashing big models.

Hashing a 7 GB checkpoint takes tens of seconds, so each hash is stored against the file's resolved path,
size and modification time: an unchanged file is never hashed twice, a replaced one always is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from webui.errors import ModelLoadError

log = logging.getLogger(__name__)

_CACHE_VERSION = 1
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Full sha256 in hex: what A1111 shows (first 10 chars) and what civitai looks models up by."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def legacy_model_hash(path: Path) -> str:
    """A1111's old 8-char "Model hash": sha256 of 64 KiB at offset 1 MiB, still found in old infotexts."""
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def addnet_hash_safetensors(path: Path, chunk: int = 1 << 20) -> str:
    """kohya's "addnet" hash: sha256 of the tensor data only, so editing metadata does not change it."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > _MAX_HEADER_BYTES:
            raise ModelLoadError(path, f"header length {n} bytes is over the 100 MB limit; not safetensors")
        f.seek(8 + n)
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _hasher(kind: str) -> Callable[[Path], str]:
    # Looked up at call time so tests can monkeypatch the module-level functions.
    hashers: dict[str, Callable[[Path], str]] = {
        "sha256": sha256_file,
        "legacy": legacy_model_hash,
        "addnet": addnet_hash_safetensors,
    }
    if kind not in hashers:
        raise ValueError(f"unknown hash kind {kind!r}; expected one of {sorted(hashers)}")
    return hashers[kind]


def _stamp(path: Path) -> tuple[str, int, int]:
    """(resolved path, size, mtime_ns): the identity a cached hash is valid for."""
    resolved = path.resolve()
    st = resolved.stat()
    return str(resolved), st.st_size, st.st_mtime_ns


class HashCache:
    """Hashes keyed on (resolved path, size, mtime_ns), persisted to one JSON file.

    Safe to share between threads. A missing or corrupt cache file only costs re-hashing; it never raises.
    """

    def __init__(self, cache_file: Path) -> None:
        self.cache_file = Path(cache_file)
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] | None = None

    def get(self, path: Path, kind: str = "sha256") -> str | None:
        """The cached hash if the file is unchanged since it was computed, else None (never hashes)."""
        try:
            key, size, mtime_ns = _stamp(Path(path))
        except OSError:
            return None
        with self._lock:
            entry = self._load().get(key)
            if entry is None or entry.get("size") != size or entry.get("mtime_ns") != mtime_ns:
                return None
            value = entry.get("hashes", {}).get(kind)
            return value if isinstance(value, str) else None

    def compute(self, path: Path, kind: str = "sha256") -> str:
        """Return the hash, computing and storing it only when the cache has no valid one."""
        hasher = _hasher(kind)
        path = Path(path)
        cached = self.get(path, kind)
        if cached is not None:
            return cached
        try:
            before = _stamp(path)
            log.info("computing %s hash of %s", kind, path.name)
            value = hasher(path)
            after = _stamp(path)
        except OSError as exc:
            raise ModelLoadError(path, f"cannot read file to hash it ({exc.strerror or exc})") from None
        if before != after:
            log.warning("%s changed while being hashed; not caching its %s hash", path.name, kind)
            return value
        key, size, mtime_ns = after
        with self._lock:
            entries = self._load()
            entry = entries.get(key)
            if entry is None or entry.get("size") != size or entry.get("mtime_ns") != mtime_ns:
                entry = {"size": size, "mtime_ns": mtime_ns, "hashes": {}}  # stale hashes of an older file go
                entries[key] = entry
            entry["hashes"][kind] = value
            self._save(entries)
        return value

    def _load(self) -> dict[str, dict[str, Any]]:
        """Read the cache file once (caller holds the lock); anything unreadable starts an empty cache."""
        if self._entries is not None:
            return self._entries
        self._entries = {}
        try:
            data = json.loads(self.cache_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return self._entries
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable hash cache %s (%s); it will be rebuilt", self.cache_file, exc)
            return self._entries
        files = data.get("files") if isinstance(data, dict) and data.get("version") == _CACHE_VERSION else None
        if not isinstance(files, dict):
            log.warning("ignoring hash cache %s in an unknown layout; it will be rebuilt", self.cache_file)
            return self._entries
        for key, entry in files.items():
            if isinstance(entry, dict) and isinstance(entry.get("hashes"), dict):
                self._entries[key] = entry
        return self._entries

    def _save(self, entries: dict[str, dict[str, Any]]) -> None:
        """Write via a temp file and os.replace so a crash mid-write never leaves a half-written cache."""
        payload = json.dumps({"version": _CACHE_VERSION, "files": entries}, indent=1, sort_keys=True)
        tmp_name = None
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".hashes-", suffix=".tmp", dir=self.cache_file.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, self.cache_file)
            tmp_name = None
        except OSError as exc:
            log.warning("cannot write hash cache %s (%s); hashes will be recomputed next run", self.cache_file, exc)
        finally:
            if tmp_name is not None:
                Path(tmp_name).unlink(missing_ok=True)
