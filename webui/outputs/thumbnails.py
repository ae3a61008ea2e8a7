"""Small copies of saved images for History's gallery, so a page of a big history sends kilobytes, not megabytes.

A 512x512 PNG is about half a megabyte and a 1024x1024 one two; History shows 36 per page, and Gradio copies
(and hashes) every file it is handed into its cache before the browser fetches it. A thumbnail whose longest side
is 256 px is 10-25 KB. They are made on demand the first time a page needs them (or ahead of time by ``warm``,
from a background thread) and kept on disk so the next visit costs two ``stat`` calls a tile.

Where they live: ``<outputs>/.thumbnails/<2 hex>/<sha1 of the relative path>-<mtime_ns>-<size>.jpg`` (``.webp``
for images with transparency, which JPEG cannot hold). The folder is hidden, so the history scanner (which skips
hidden folders) never indexes a thumbnail as an image, and it is inside the outputs folder, which the web server is
already allowed to serve. The name carries the source's mtime and size, so a replaced or edited image gets a fresh
thumbnail instead of a stale one; the older versions of the same path are removed when the new one is made. The
path is hashed rather than mirrored so odd or very long file names never make an invalid thumbnail name.

Thumbnails are written to a hidden ``.….tmp`` file and renamed into place, so a reader never sees half a
thumbnail; a crash's leftover temp files are removed at start-up by ``saving.cleanup_temp_files``. A file that
cannot be decoded has no thumbnail (History shows no tile for it); if only the writing fails (a read-only
outputs folder, a full disk) the image itself is handed back, so History still works, just heavier.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

from PIL import Image

log = logging.getLogger(__name__)

THUMBNAIL_DIR = ".thumbnails"
MAX_SIDE = 256
JPEG_QUALITY = 85  # at 256 px: ~10-30 KB, no visible blocking; JPEG encodes ~10x faster than WebP (0.2 vs 3 ms)
WEBP_QUALITY = 85
_SUFFIXES = (".jpg", ".webp")  # opaque images, images with an alpha channel
# Decoding and resampling release the GIL, so a cold page is made on all cores; more threads than that only queue.
_WORKERS = max(1, min(4, os.cpu_count() or 1))
_background: ThreadPoolExecutor | None = None  # one thread for the whole process, made on first use
_background_lock = threading.Lock()
_ORIENTATION = 0x0112  # EXIF tag
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class Thumbnails:
    """The thumbnail cache of one outputs folder. Stateless apart from the files, so safe to share between threads:
    two threads making the same thumbnail each write their own temp file and the second rename wins, harmlessly."""

    def __init__(self, outputs_root: Path, max_side: int = MAX_SIDE) -> None:
        self.root = Path(outputs_root).resolve()
        self.folder = self.root / THUMBNAIL_DIR
        self.max_side = max_side

    # -- naming --------------------------------------------------------------------------------------
    def _stem(self, image: Path) -> tuple[Path, str]:
        """The folder and name prefix every thumbnail of ``image`` shares, whatever version of the file."""
        try:
            key = image.relative_to(self.root).as_posix()  # survives moving the whole outputs folder
        except ValueError:
            resolved = image.resolve()  # a path spelled another way (relative, through a link) gets the same key
            key = resolved.relative_to(self.root).as_posix() if resolved.is_relative_to(self.root) else str(resolved)
        digest = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()
        return self.folder / digest[:2], digest

    def _names(self, image: Path) -> tuple[Path, str] | None:
        """(folder, name without suffix) of the thumbnail for the file as it is now; None if it is not there."""
        try:
            stat = image.stat()
        except OSError:
            return None
        folder, stem = self._stem(image)
        return folder, f"{stem}-{stat.st_mtime_ns:x}-{stat.st_size:x}"

    # -- reading -------------------------------------------------------------------------------------
    def cached(self, image: Path) -> Path | None:
        """The thumbnail of the file as it is now, if one was made; never makes one."""
        names = self._names(Path(image))
        return None if names is None else _existing(*names)

    def get(self, image: Path) -> Path | None:
        """The thumbnail of ``image``, made now if needed; None if the file is missing or cannot be decoded."""
        image = Path(image)
        names = self._names(image)
        if names is None:
            return None
        return _existing(*names) or self._make(image, *names)

    def many(self, images: Sequence[Path]) -> list[Path | None]:
        """``get`` for each image, in order; the missing ones are made in parallel (a cold page of 36)."""
        images = [Path(p) for p in images]
        found: list[Path | None] = []
        todo: list[tuple[int, Path, Path, str]] = []
        for i, image in enumerate(images):
            names = self._names(image)
            hit = _existing(*names) if names else None
            found.append(hit)
            if hit is None and names is not None:
                todo.append((i, image, *names))
        if len(todo) == 1:
            i, image, folder, name = todo[0]
            found[i] = self._make(image, folder, name)
        elif todo:
            with ThreadPoolExecutor(min(_WORKERS, len(todo)), thread_name_prefix="easel-thumb") as pool:
                made = pool.map(lambda job: self._make(*job[1:]), todo)
                for (i, *_), path in zip(todo, made, strict=True):
                    found[i] = path
        return found

    def warm(self, images: Iterable[Path]) -> int:
        """Make the thumbnails that are missing (say, for History's first pages, from a start-up thread); returns
        how many were made. Never raises for a bad file."""
        todo = [p for p in map(Path, images) if self.cached(p) is None]
        return sum(1 for thumb in self.many(todo) if thumb is not None and thumb not in todo)

    def make_later(self, image: Path) -> None:
        """Queue ``image``'s thumbnail on a background thread and return at once. Called for each image just saved,
        so History finds its thumbnail ready and the job that saved it does not wait for it."""
        global _background
        with _background_lock:
            if _background is None:
                _background = ThreadPoolExecutor(1, thread_name_prefix="easel-thumb-later")
            pool = _background
        pool.submit(self._get_quietly, Path(image))

    def _get_quietly(self, image: Path) -> None:
        try:
            self.get(image)
        except Exception:  # a background task has no one to raise to
            log.warning("history: could not make the thumbnail of %s", image, exc_info=True)

    # -- writing -------------------------------------------------------------------------------------
    def remove(self, image: Path) -> int:
        """Delete every thumbnail of ``image`` (any version); returns how many. Called when the image is deleted."""
        folder, stem = self._stem(Path(image))
        removed = 0
        with suppress(FileNotFoundError, NotADirectoryError):
            for thumb in folder.glob(f"{stem}-*"):  # the stem is hex: nothing in it is a glob pattern
                with suppress(FileNotFoundError):
                    thumb.unlink()
                    removed += 1
        return removed

    def _make(self, image: Path, folder: Path, name: str) -> Path | None:
        try:
            small = _shrink(image, self.max_side)
        except Exception as exc:  # a damaged, truncated or hostile file raises almost anything in Pillow
            log.warning("history: no thumbnail for %s (%s)", image, exc)
            return None
        suffix = _SUFFIXES[1] if small.mode == "RGBA" else _SUFFIXES[0]
        target = folder / (name + suffix)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _write_atomically(small, target)
        except OSError as exc:  # read-only or full outputs folder: show the image itself rather than nothing
            log.warning("history: cannot save a thumbnail for %s (%s); using the image itself", image, exc)
            return image
        if not image.exists():  # deleted while we worked: its thumbnail would be litter nobody removes
            self.remove(image)
            return None
        self._drop_older(folder, name, target)
        return target

    def _drop_older(self, folder: Path, name: str, keep: Path) -> None:
        """Remove thumbnails of earlier versions of the same path (it was replaced or edited)."""
        stem = name.split("-", 1)[0]
        for thumb in folder.glob(f"{stem}-*"):
            if thumb != keep:
                with suppress(OSError):
                    thumb.unlink()


def _existing(folder: Path, name: str) -> Path | None:
    for suffix in _SUFFIXES:
        path = folder / (name + suffix)
        try:
            if path.stat().st_size > 0:  # an empty file is what a power cut after the rename may leave
                return path
        except OSError:
            continue
    return None


def _shrink(image: Path, max_side: int) -> Image.Image:
    """Decode ``image`` at thumbnail size, cheaply: ``thumbnail`` asks JPEGs to decode at 1/2-1/8 scale (``draft``)
    and reduces other formats by an integer factor before the final resample, so a large file costs little more
    than its decode. EXIF orientation is applied, as browsers do for the full image."""
    with Image.open(image) as source:
        orientation = source.getexif().get(_ORIENTATION, 1)
        has_alpha = source.mode in ("RGBA", "LA", "PA") or "transparency" in source.info
        mode = "RGBA" if has_alpha else "RGB"
        # Palette and exotic modes would be resampled nearest-neighbour (or not at all): convert them first.
        picture = source if source.mode in ("RGB", "RGBA", "L", "LA") else source.convert(mode)
        picture.thumbnail((max_side, max_side), Image.Resampling.BICUBIC, reducing_gap=2.0)
        small = picture.convert(mode) if picture.mode != mode else picture.copy()  # outlives the open file
    if orientation in _TRANSPOSE:
        small = small.transpose(_TRANSPOSE[orientation])
    return small


def _write_atomically(small: Image.Image, target: Path) -> None:
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            if target.suffix == ".webp":
                small.save(out, "WEBP", quality=WEBP_QUALITY, method=0)
            else:
                small.save(out, "JPEG", quality=JPEG_QUALITY)
        os.replace(temp, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp)
        raise
