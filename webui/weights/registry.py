"""The lists of model files on disk (checkpoints, VAEs, LoRAs...), named and matched the way A1111 does.

Listing only stats files; it never opens or hashes them, so a folder of 7 GB models lists instantly. Queries
are matched against the listed names only: no query is ever turned into a path, so '../../x' finds nothing.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from webui.errors import ModelLoadError, ModelNotFound
from webui.weights.hashing import HashCache

log = logging.getLogger(__name__)

CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".bin")
VAE_EXTENSIONS = (".safetensors", ".pt", ".ckpt")
LORA_EXTENSIONS = (".safetensors", ".pt", ".ckpt")

_HEX = re.compile(r"[0-9a-fA-F]{8,64}")
_BRACKETED = re.compile(r"^(?P<name>.*?)\s*\[[^\[\]]*\]$")


@dataclass
class CheckpointInfo:
    """One listed model: a weights file, or a diffusers folder (``kind='diffusers'``)."""

    path: Path
    name: str
    model_name: str
    kind: str
    size: int
    mtime: float
    sha256: str | None = None
    legacy_hash: str | None = None
    builtin: bool = False  # shipped with Easel (the demo model), not found in the user's folder

    @property
    def shorthash(self) -> str | None:
        """First 10 hex chars of sha256: what A1111 shows in titles and writes as "Model hash"."""
        return self.sha256[:10] if self.sha256 else None

    @property
    def title(self) -> str:
        return f"{self.name} [{self.shorthash}]" if self.shorthash else self.name

    def ensure_hash(self, cache: HashCache) -> str:
        """Compute (or fetch) the sha256 so the title gains its hash; folders have no single-file hash."""
        if self.kind == "diffusers":
            raise ModelLoadError(self.path, "a diffusers folder has no single-file hash")
        if self.sha256 is None:
            self.sha256 = cache.compute(self.path, "sha256")
        return self.sha256


ModelInfo = CheckpointInfo
"""The same record for every model kind; ``CheckpointInfo`` is the A1111 name."""


class ModelRegistry:
    """Models under one folder with the given extensions; ``label`` names the kind in errors ('sd_vae'...).

    ``refresh`` rescans; ``list``/``get`` are safe to call from any thread while another refreshes.
    """

    def __init__(
        self,
        root: Path,
        cache: HashCache,
        extensions: tuple[str, ...] = CHECKPOINT_EXTENSIONS,
        *,
        label: str = "checkpoint",
        diffusers_folders: bool = True,
        folder_marker: str = "model_index.json",
        builtins: Sequence[Path] = (),
    ) -> None:
        self.root = Path(root)
        self.cache = cache
        self.extensions = tuple(e.lower() for e in extensions)
        self.label = label
        self.diffusers_folders = diffusers_folders
        self.folder_marker = folder_marker  # the file that makes a folder one model (ControlNets: config.json)
        # Files shipped with Easel, listed after the user's own; a user file of the same name hides one.
        self.builtins = tuple(Path(p) for p in builtins)
        self.errors: dict[str, str] = {}
        self._error_stamps: dict[str, tuple[int, float]] = {}
        self._items: list[CheckpointInfo] = []
        self._lock = threading.Lock()

    def refresh(self) -> list[CheckpointInfo]:
        """Rescan the folder; errors recorded for files that changed or vanished are forgotten."""
        found: list[CheckpointInfo] = []
        if self.root.is_dir():
            self._scan(self.root, self.root.resolve(), found, visited=set())
        else:
            log.info("%s folder %s does not exist; no models listed", self.label, self.root)
        found.sort(key=lambda i: (i.name.casefold(), i.name))
        names = {i.name for i in found}
        for path in self.builtins:
            if path.name not in names and path.is_file():
                st = path.stat()
                found.append(CheckpointInfo(path, path.name, path.stem, "file", st.st_size, st.st_mtime, builtin=True))
        for info in found:
            if info.kind == "file":
                info.sha256 = self.cache.get(info.path, "sha256")
                info.legacy_hash = self.cache.get(info.path, "legacy")
        current = {i.name: (i.size, i.mtime) for i in found}
        with self._lock:
            self._items = found
            for name in list(self.errors):
                if current.get(name) != self._error_stamps.get(name):
                    self.errors.pop(name, None)
                    self._error_stamps.pop(name, None)
        return list(found)

    def list(self) -> list[CheckpointInfo]:
        with self._lock:
            return list(self._items)

    def record_error(self, info: CheckpointInfo, reason: str) -> None:
        """Mark one entry unusable with its reason; it stays listed so the user sees why."""
        with self._lock:
            self.errors[info.name] = reason
            self._error_stamps[info.name] = (info.size, info.mtime)

    def get(self, query: str) -> CheckpointInfo:
        """Match A1111-style: title, name, name without extension, hash prefix, then 'name [stale hash]'."""
        items = self.list()
        found = self._match(items, query.strip()) if query and query.strip() else None
        if found is None:
            raise ModelNotFound(self.label, query, known=[i.name for i in items])
        return found

    def _match(self, items: list[CheckpointInfo], query: str) -> CheckpointInfo | None:
        for candidate in dict.fromkeys((query, query.replace("\\", "/"))):
            for attr in ("title", "name", "model_name"):
                hit = next((i for i in items if getattr(i, attr) == candidate), None)
                if hit is not None:
                    return hit
        if _HEX.fullmatch(query):
            prefix = query.lower()
            hit = next((i for i in items if i.sha256 and i.sha256.startswith(prefix)), None)
            hit = hit or next((i for i in items if i.legacy_hash == prefix), None)
            if hit is not None:
                return hit
        bracketed = _BRACKETED.match(query)
        if bracketed and bracketed.group("name"):
            return self._match(items, bracketed.group("name"))
        folded = query.replace("\\", "/").casefold()
        hits = [i for i in items if folded in (i.name.casefold(), i.model_name.casefold())]
        return hits[0] if len(hits) == 1 else None

    def _scan(self, folder: Path, root_real: Path, found: list[CheckpointInfo], visited: set[Path]) -> None:
        real = folder.resolve()
        if real in visited:
            return  # a symlink loop inside the root
        visited.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list %s: %s", folder, exc)
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue  # .easel-cache, .git, macOS '._x.safetensors' resource forks
            path = Path(entry.path)
            if entry.is_symlink() and not self._inside(path, root_real):
                log.warning("skipping %s: symlink points outside %s", path, self.root)
                continue
            try:
                if entry.is_dir():
                    if self.diffusers_folders and (path / self.folder_marker).is_file():
                        found.append(self._folder_info(path))
                    else:
                        self._scan(path, root_real, found, visited)
                elif entry.is_file() and path.suffix.lower() in self.extensions:
                    found.append(self._file_info(path))
            except OSError as exc:
                log.warning("skipping %s: %s", path, exc)

    @staticmethod
    def _inside(path: Path, root_real: Path) -> bool:
        try:
            return path.resolve().is_relative_to(root_real)
        except (OSError, RuntimeError):
            return False  # broken or looping link

    def _file_info(self, path: Path) -> CheckpointInfo:
        st = path.stat()
        name = path.relative_to(self.root).as_posix()
        stem = name[: -len(path.suffix)] if path.suffix else name
        return CheckpointInfo(path, name, stem, "file", st.st_size, st.st_mtime)

    def _folder_info(self, path: Path) -> CheckpointInfo:
        name = path.relative_to(self.root).as_posix()
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        mtime = (path / self.folder_marker).stat().st_mtime
        return CheckpointInfo(path, name, name, "diffusers", size, mtime)
