"""Image files on disk: A1111's folder and numbering scheme, written atomically so no half-written image survives."""

from __future__ import annotations

import errno
import logging
import os
import re
import threading
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from webui.errors import GenerationFailed
from webui.types import Mode

log = logging.getLogger(__name__)

# A1111 saves img2img and inpaint results together; keeping its layout lets users' scripts and habits carry over.
FOLDERS: dict[Mode, str] = {
    Mode.TXT2IMG: "txt2img-images",
    Mode.IMG2IMG: "img2img-images",
    Mode.INPAINT: "img2img-images",
}
TEMP_SUFFIX = ".tmp"
SAVE_FORMATS = ("png", "jpg", "webp")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_EXIF_IFD = 0x8769
_EXIF_USER_COMMENT = 0x9286
# A1111 numbers from the leading digits of any name; ``.NNNNN.png.tmp`` (or .jpg, .webp) is a save in progress (or
# a crash's leftover).
_NUMBERED = re.compile(r"^\.?(\d+)(?=[-.]|$)")
_TEMP = re.compile(r"^\..+\.tmp$")
_MAX_TRIES = 10_000
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class OutputPaths:
    """Hands out ``<root>/<mode>-images/YYYY-MM-DD/NNNNN-SEED.png`` names, each number to exactly one save.

    A number is claimed by creating its temp file ``.NNNNN.png.tmp`` with ``O_EXCL``, so two threads or two
    processes cannot both claim it; the lock only saves threads from racing into each other's retries.
    """

    def __init__(self, outputs_root: Path) -> None:
        self.root = Path(outputs_root)
        self._lock = threading.Lock()

    def folder(self, mode: Mode | str, when: datetime, name: str | None = None) -> Path:
        """``<root>/<name>/YYYY-MM-DD``; ``name`` (the user's folder setting, relative) defaults to A1111's."""
        return self.root / (name or FOLDERS[Mode(mode)]) / when.strftime("%Y-%m-%d")

    def claim(
        self, mode: Mode | str, seed: int, when: datetime, name: str | None = None, ext: str = "png"
    ) -> tuple[int, Path, Path]:
        """Reserve the next number; returns an open, empty temp file's descriptor, its path and the final path.

        Raises ``OSError`` when the folder cannot be created or written.
        """
        folder = self.folder(mode, when, name)
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
            number = max(_numbers_in(folder), default=-1) + 1
            for _ in range(_MAX_TRIES):
                temp = folder / f".{number:05d}.{ext}{TEMP_SUFFIX}"
                try:
                    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
                except FileExistsError:
                    number += 1
                    continue
                # Another process may have claimed, written and renamed this number between our scan and our
                # create; its finished file is visible now, so look once more before keeping the number.
                if number in _numbers_in(folder, skip=temp.name):
                    os.close(fd)
                    temp.unlink(missing_ok=True)
                    number += 1
                    continue
                return fd, temp, folder / f"{number:05d}-{seed}.{ext}"
        raise OSError(f"no free file number in {folder}")


def _numbers_in(folder: Path, skip: str = "") -> set[int]:
    """Leading numbers of the names in ``folder``; names without one (``notes.txt``) are ignored."""
    numbers = set()
    with os.scandir(folder) as entries:
        for entry in entries:
            match = _NUMBERED.match(entry.name)
            if match and entry.name != skip:
                numbers.add(int(match.group(1)))
    return numbers


_paths_by_root: dict[Path, OutputPaths] = {}
_paths_lock = threading.Lock()


def output_paths(outputs_root: Path) -> OutputPaths:
    """One ``OutputPaths`` per root, so every caller in the process shares its lock."""
    key = Path(outputs_root).resolve()
    with _paths_lock:
        return _paths_by_root.setdefault(key, OutputPaths(key))


def save_image(
    image: Image.Image,
    outputs_root: Path,
    mode: Mode | str,
    seed: int,
    infotext: str,
    *,
    when: datetime | None = None,
    folder_name: str | None = None,
    fmt: str = "png",
    quality: int = 90,
    embed_infotext: bool = True,
) -> Path:
    """Write an image with its infotext under A1111's layout; return the final (absolute) path.

    PNG keeps the infotext in a ``parameters`` text chunk, JPEG and WebP in EXIF UserComment, as A1111 writes
    them. Temp file, fsync, rename: after a crash or a full disk the final name either holds the whole image or
    does not exist. Any failure removes the temp file and is raised as ``GenerationFailed`` naming the folder.
    """
    if fmt not in SAVE_FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(SAVE_FORMATS)}, not {fmt!r}")
    when = when or datetime.now()
    paths = output_paths(outputs_root)
    folder = paths.folder(mode, when, folder_name)
    temp: Path | None = None
    done = False
    try:
        fd, temp, final = paths.claim(mode, seed, when, folder_name, fmt)
        with os.fdopen(fd, "wb") as handle:
            _encode(image, handle, fmt, infotext if embed_infotext else None, quality)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)
        done = True
    except Exception as exc:
        raise GenerationFailed(f"could not save image in {folder}: {_describe(exc)}") from exc
    finally:
        if not done and temp is not None:
            temp.unlink(missing_ok=True)
    _sync_directory(final.parent)
    return final


def _encode(image: Image.Image, handle: BinaryIO, fmt: str, infotext: str | None, quality: int) -> None:
    if fmt == "png":
        info = PngInfo()
        if infotext is not None:
            info.add_text("parameters", infotext)
        image.save(handle, format="PNG", pnginfo=info)
        return
    exif = Image.Exif()
    if infotext is not None:
        # A1111 (piexif) writes "UNICODE\0" and UTF-16 big-endian; readers of its files expect exactly that.
        exif.get_ifd(_EXIF_IFD)[_EXIF_USER_COMMENT] = b"UNICODE\0" + infotext.encode("utf-16-be")
    rgb = image.convert("RGB") if fmt == "jpg" else image
    rgb.save(handle, format="JPEG" if fmt == "jpg" else "WEBP", quality=quality, exif=exif.tobytes())


def _describe(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (" (is the disk full?)" if exc.errno in _DISK_FULL else "")
    return str(exc) or type(exc).__name__


def _sync_directory(folder: Path) -> None:
    """Make the rename itself durable; best effort, since some filesystems and platforms refuse it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        log.debug("fsync of directory %s not supported", folder)
    finally:
        os.close(fd)


def cleanup_temp_files(outputs_root: Path) -> int:
    """Delete the hidden ``.tmp`` files a crash left mid-save; returns how many. Run at start-up, before saving."""
    removed = 0
    root = Path(outputs_root)
    if not root.is_dir():
        return 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if _TEMP.match(name):
                try:
                    (Path(dirpath) / name).unlink()
                except FileNotFoundError:
                    continue
                except OSError as exc:  # one unremovable leftover must not stop the server starting
                    log.warning("cannot remove leftover %s: %s", Path(dirpath) / name, exc)
                    continue
                removed += 1
    return removed
