"""The history index: every saved image as one SQLite row, so History can page, search and filter fast.

The PNG files are the truth and the index is a cache of what their infotext says. ``sync`` reconciles the
two (new files are read, rows whose file is gone are dropped, a corrupt index is set aside and rebuilt), and
``page`` checks the files of the rows it returns, so a deleted file never shows as a broken tile. The gallery shows
thumbnails from ``thumbnails.Thumbnails`` (in the hidden ``.thumbnails`` folder, which the scan skips); deleting
an image or dropping a vanished one removes its thumbnail too.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PIL import Image

from webui.outputs.infotext import parse_infotext, read_infotext
from webui.outputs.saving import IMAGE_SUFFIXES
from webui.outputs.thumbnails import Thumbnails

log = logging.getLogger(__name__)

INDEX_NAME = "history.sqlite3"
SCHEMA_VERSION = 1
_MODE_BY_FOLDER = {"txt2img-images": "txt2img", "img2img-images": "img2img"}
_COLUMNS = (
    "path",
    "mode",
    "prompt",
    "negative_prompt",
    "model",
    "seed",
    "width",
    "height",
    "sampler",
    "steps",
    "cfg_scale",
    "created",
    "mtime",
    "infotext",
)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS images (
    path TEXT PRIMARY KEY, mode TEXT NOT NULL, prompt TEXT NOT NULL, negative_prompt TEXT NOT NULL,
    model TEXT NOT NULL, seed INTEGER, width INTEGER, height INTEGER, sampler TEXT NOT NULL, steps INTEGER,
    cfg_scale REAL, created REAL NOT NULL, mtime REAL NOT NULL, infotext TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS images_created ON images (created DESC);
CREATE INDEX IF NOT EXISTS images_model ON images (model, created DESC);
CREATE INDEX IF NOT EXISTS images_mode ON images (mode, created DESC);
PRAGMA user_version = {SCHEMA_VERSION};
"""


@dataclass(frozen=True)
class HistoryEntry:
    path: Path  # absolute
    mode: str
    prompt: str
    negative_prompt: str
    model: str
    seed: int | None
    width: int | None
    height: int | None
    sampler: str
    steps: int | None
    cfg_scale: float | None
    created: float  # seconds since the epoch
    infotext: str

    @property
    def when(self) -> datetime:
        return datetime.fromtimestamp(self.created)


@dataclass(frozen=True)
class HistoryPage:
    entries: list[HistoryEntry]
    total: int  # rows matching the filters, on every page
    page: int  # 0-based
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


@dataclass(frozen=True)
class SyncReport:
    added: int
    removed: int
    rebuilt: bool  # the index was missing, corrupt or of another version


class HistoryIndex:
    """One index per outputs folder; safe to share between threads (one connection behind a lock)."""

    def __init__(self, outputs_root: Path) -> None:
        self.root = Path(outputs_root).resolve()
        self.path = self.root / INDEX_NAME
        self.thumbnails = Thumbnails(self.root)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._fresh = False

    # -- connection ----------------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        try:
            conn = self._connect()
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if existed and version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"index schema {version}, expected {SCHEMA_VERSION}")
            conn.executescript(_SCHEMA)
            conn.execute("SELECT COUNT(*) FROM images").fetchone()
        except sqlite3.DatabaseError as exc:
            log.warning(
                "history index %s is unusable (%s); setting it aside and rebuilding from the images", self.path, exc
            )
            self._set_aside()
            conn = self._connect()
            conn.executescript(_SCHEMA)
            existed = False
        self._fresh = not existed
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _set_aside(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            source = self.path.with_name(self.path.name + suffix)
            if source.exists():
                source.replace(source.with_name(f"{source.name}.broken-{stamp}"))

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                self._conn = self._open()
            try:
                with self._conn:  # one transaction
                    yield self._conn
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                    raise
                # Corrupted under us: start over from the files next time.
                log.warning("history index error (%s); it will be rebuilt", exc)
                self._set_aside()
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- writing -------------------------------------------------------------------------------------
    def add(self, path: Path, infotext: str | None = None, mode: str | None = None) -> HistoryEntry:
        """Index one saved image (its file must exist: rows never come before files)."""
        path = Path(path).resolve()
        stat = path.stat()
        if infotext is None:
            infotext = _read_text(path)
        entry = _entry(path, infotext or "", mode or _mode_of(self.root, path, infotext or ""), stat.st_mtime)
        with self._db() as db:
            db.execute(
                f"INSERT OR REPLACE INTO images ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                _row(self.root, entry, stat.st_mtime),
            )
        self.thumbnails.make_later(path)  # ready before History is opened; the saving job does not wait
        return entry

    def delete(self, path: Path) -> bool:
        """Delete an image's file and its row together; False when it is not one of ours.

        The file goes first: if it cannot be removed the row stays, so History never lies about what is on disk.
        """
        path = Path(path).resolve()
        relative = self._relative(path)
        if relative is None:
            return False
        with suppress(FileNotFoundError):
            path.unlink()
        with self._db() as db:
            db.execute("DELETE FROM images WHERE path = ?", (relative,))
        self._drop_thumbnails([path])
        return True

    # -- reading -------------------------------------------------------------------------------------
    def page(
        self,
        page: int = 0,
        per_page: int = 36,
        *,
        search: str = "",
        model: str | None = None,
        mode: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> HistoryPage:
        """Newest first. ``search`` matches the prompt (every word, case-insensitive for ASCII); rows whose file has
        disappeared are dropped on the way, so what comes back is on disk."""
        page, per_page = max(0, int(page)), max(1, min(int(per_page), 500))
        where, args = _filters(search, model, mode, since, until)
        for _ in range(3):  # a page with vanished files is read again once they are dropped
            with self._db() as db:
                total = db.execute(f"SELECT COUNT(*) FROM images {where}", args).fetchone()[0]
                rows = db.execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM images {where} ORDER BY created DESC, path DESC LIMIT ? OFFSET ?",
                    [*args, per_page, page * per_page],
                ).fetchall()
            entries = [_from_row(self.root, row) for row in rows]
            missing = [e for e in entries if not e.path.is_file()]
            if not missing:
                break
            self._forget(missing)
        else:
            entries = [e for e in entries if e.path.is_file()]
        return HistoryPage(entries, total, page, per_page)

    def get(self, path: Path) -> HistoryEntry | None:
        relative = self._relative(Path(path).resolve())
        if relative is None:
            return None
        with self._db() as db:
            row = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM images WHERE path = ?", (relative,)).fetchone()
        return _from_row(self.root, row) if row else None

    def models(self) -> list[str]:
        with self._db() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT model FROM images WHERE model != '' ORDER BY model")]

    def count(self) -> int:
        with self._db() as db:
            return db.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    # -- reconciling with the files ------------------------------------------------------------------
    def sync(self) -> SyncReport:
        """Make the index match the files: read images it lacks (or that changed), drop rows of vanished files."""
        with self._db() as db:
            known = dict(db.execute("SELECT path, mtime FROM images").fetchall())
        rebuilt = self._fresh
        self._fresh = False
        on_disk = dict(_scan(self.root))
        new = [(rel, mtime) for rel, mtime in on_disk.items() if known.get(rel) != mtime]
        gone = [rel for rel in known if rel not in on_disk]
        rows = []
        for rel, mtime in new:
            path = self.root / rel
            try:
                text = _read_text(path)
            except OSError as exc:  # unreadable or truncated: not an image History can show
                log.warning("history: skipping %s (%s)", path, exc)
                continue
            rows.append(_row(self.root, _entry(path, text, _mode_of(self.root, path, text), mtime), mtime))
        with self._db() as db:
            db.executemany("DELETE FROM images WHERE path = ?", [(rel,) for rel in gone])
            db.executemany(
                f"INSERT OR REPLACE INTO images ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                rows,
            )
        self._drop_thumbnails(self.root / rel for rel in gone)
        if rows or gone:
            log.info("history index: %d image(s) added, %d removed", len(rows), len(gone))
        return SyncReport(len(rows), len(gone), rebuilt)

    def warm_thumbnails(self, count: int = 108) -> int:
        """Make the missing thumbnails of the newest ``count`` images (History's first three pages), so opening
        History after a start-up, an upgrade or an import does not wait for them; returns how many were made.
        Meant for the start-up thread, after ``sync``."""
        return self.thumbnails.warm(e.path for e in self.page(0, count).entries)

    def _forget(self, entries: Iterable[HistoryEntry]) -> None:
        entries = list(entries)
        with self._db() as db:
            db.executemany("DELETE FROM images WHERE path = ?", [(self._relative(e.path),) for e in entries])
        self._drop_thumbnails(e.path for e in entries)

    def _drop_thumbnails(self, paths: Iterable[Path]) -> None:
        """Thumbnails of images that are gone; a thumbnail that cannot be removed is only a few KB of litter."""
        for path in paths:
            try:
                self.thumbnails.remove(path)
            except OSError as exc:
                log.warning("history: cannot remove the thumbnail of %s (%s)", path, exc)

    def _relative(self, path: Path) -> str | None:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return None


def _scan(root: Path) -> Iterator[tuple[str, float]]:
    """(relative path, mtime) of every finished image below the data folder, whatever folders the settings
    named over time (temp files and the index's own files are hidden or not images). Hidden folders are skipped,
    which keeps the thumbnails (``.thumbnails/``, JPEG and WebP files) out of the index."""
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                full = Path(dirpath) / name
                try:
                    yield full.relative_to(root).as_posix(), full.stat().st_mtime
                except OSError:
                    continue


def _read_text(path: Path) -> str:
    with Image.open(path) as image:
        return read_infotext(image) or ""


def _mode_of(root: Path, path: Path, infotext: str) -> str:
    """The mode an image was made in, from its infotext (folders are the user's to rename): inpaint writes its
    mask settings, img2img its denoising strength; A1111's own folder names settle texts that say neither."""
    if "Mask blur:" in infotext:
        return "inpaint"
    if "Denoising strength:" in infotext and "Hires upscale:" not in infotext:
        return "img2img"
    try:
        folder = path.relative_to(root).parts[0]
    except (ValueError, IndexError):
        folder = ""
    return _MODE_BY_FOLDER.get(folder, "txt2img")


def _entry(path: Path, infotext: str, mode: str, created: float) -> HistoryEntry:
    parsed = parse_infotext(infotext) if infotext else {"Prompt": "", "Negative prompt": ""}

    def number(key: str, kind: type) -> int | float | None:
        value = parsed.get(key)
        try:
            return kind(value) if value is not None else None
        except (TypeError, ValueError, OverflowError):
            return None

    return HistoryEntry(
        path=path,
        mode=mode,
        prompt=str(parsed.get("Prompt", "")),
        negative_prompt=str(parsed.get("Negative prompt", "")),
        model=str(parsed.get("Model", "") or ""),
        seed=number("Seed", int),
        width=number("Size-1", int),
        height=number("Size-2", int),
        sampler=str(parsed.get("Sampler", "") or ""),
        steps=number("Steps", int),
        cfg_scale=number("CFG scale", float),
        created=created,
        infotext=infotext,
    )


def _row(root: Path, entry: HistoryEntry, mtime: float) -> tuple:
    return (
        entry.path.relative_to(root).as_posix(),
        entry.mode,
        entry.prompt,
        entry.negative_prompt,
        entry.model,
        entry.seed,
        entry.width,
        entry.height,
        entry.sampler,
        entry.steps,
        entry.cfg_scale,
        entry.created,
        mtime,
        entry.infotext,
    )


def _from_row(root: Path, row: tuple) -> HistoryEntry:
    values = dict(zip(_COLUMNS, row, strict=True))
    values.pop("mtime")
    return HistoryEntry(**{**values, "path": root / values["path"]})


def _filters(
    search: str, model: str | None, mode: str | None, since: float | None, until: float | None
) -> tuple[str, list]:
    clauses: list[str] = []
    args: list = []
    for word in search.split():
        clauses.append("prompt LIKE ? ESCAPE '\\'")
        args.append("%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    if model:
        clauses.append("model = ?")
        args.append(model)
    if mode:
        clauses.append("mode = ?")
        args.append(mode)
    if since is not None:
        clauses.append("created >= ?")
        args.append(since)
    if until is not None:
        clauses.append("created < ?")
        args.append(until)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args
