"""The user's settings from the Settings tab, kept in ``easel-settings.json`` in the data folder.

Flags (``webui.settings``) say what the server may do; these say how the user likes it. Every value is
checked, so a bad value gets a message naming it and the file keeps its last good state; a file that cannot be
read (hand-edited, half-written by a crash of something else) is set aside and the defaults are used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from webui import samplers
from webui.errors import InvalidRequest, from_validation_error

log = logging.getLogger(__name__)

FILE_NAME = "easel-settings.json"
FORMATS = ("png", "jpg", "webp")
FOLDER_FIELDS = ("txt2img_folder", "img2img_folder")


class Preferences(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    # saving
    save_images: bool = True  # A1111's "Always save all generated images"
    output_format: Literal["png", "jpg", "webp"] = "png"
    jpeg_quality: int = Field(90, ge=1, le=100)  # jpg and webp
    save_infotext: bool = True  # write the parameters into the file (PNG text chunk, EXIF UserComment)
    txt2img_folder: str = "txt2img-images"  # inside the data folder
    img2img_folder: str = "img2img-images"  # img2img and inpaint, as in A1111
    # live preview
    preview_every: int = Field(4, ge=0, le=100)  # steps between previews; 0 turns them off
    # models
    ckpt_cache: int = Field(0, ge=0, le=16)  # checkpoints kept in RAM after a switch (the --ckpt-cache flag is a floor)
    # ControlNet: units per generation tab (the extension's "Multi-ControlNet" count); the page is built with it,
    # so a change shows at the next start. 8 is ``webui.controlnet.units.MAX_UNITS`` (not imported: no OpenCV here)
    controlnet_units: int = Field(3, ge=1, le=8)
    # what API requests use when they do not say (A1111's options of the same meaning)
    sd_vae: str = Field("Automatic", min_length=1, max_length=500)  # checked against models/VAE by the service
    clip_skip: int = Field(1, ge=1, le=12)  # A1111's CLIP_stop_at_last_layers
    # form defaults for a model that states none
    default_steps: int = Field(20, ge=1, le=150)
    default_cfg_scale: float = Field(7.0, ge=1.0, le=30.0)
    default_sampler: str = samplers.DEFAULT_SAMPLER
    default_negative_prompt: str = Field("", max_length=20_000)

    @field_validator("txt2img_folder", "img2img_folder")
    @classmethod
    def _inside_data_folder(cls, value: str) -> str:
        """A relative folder below the data folder: no absolute path, no ``..``, no drive letter."""
        text = value.strip().replace("\\", "/")
        path = PurePosixPath(text)
        if not text or path.is_absolute() or ".." in path.parts or ":" in text or text.startswith("~"):
            raise ValueError(f"must be a folder inside the data folder (like 'txt2img-images'), got {value!r}")
        return str(path)

    @field_validator("default_sampler")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        return samplers.resolve(value, "Automatic")[0].name


class PreferencesStore:
    """Loads once, validates every change, writes atomically (temp file, fsync, rename)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self._lock = threading.Lock()
        self._current = self._load()

    @property
    def current(self) -> Preferences:
        return self._current

    def check(self, **changes: Any) -> Preferences:
        """The preferences ``changes`` would give; ``InvalidRequest`` names the first bad one. Nothing is saved."""
        unknown = sorted(set(changes) - set(Preferences.model_fields))
        if unknown:
            raise InvalidRequest(unknown[0], f"is not a setting (known: {', '.join(Preferences.model_fields)})")
        try:
            checked = Preferences.model_validate({**self._current.model_dump(), **changes})
        except ValidationError as exc:
            raise from_validation_error(exc, fallback="settings") from None
        for name in FOLDER_FIELDS:
            if getattr(checked, name) != getattr(self._current, name):
                self._check_stays_inside(name, getattr(checked, name))
        return checked

    def update(self, **changes: Any) -> Preferences:
        """Apply and save ``changes``; ``InvalidRequest`` names the first bad one and nothing is changed."""
        with self._lock:
            updated = self.check(**changes)
            self._write(updated)
            self._current = updated
            return updated

    def _check_stays_inside(self, name: str, folder: str) -> None:
        """The text rule (no ``..``, not absolute) cannot see the disk: a subfolder that is a symlink (or has one
        on its way) to elsewhere would still send images out of the data folder, so the real path is checked.

        Only a folder being changed is checked: an admin who links the default ``txt2img-images`` to a bigger disk
        keeps it working, while nobody can point a setting at such a link from the Settings tab or the API.
        """
        data = self.path.parent.resolve()
        real = (data / folder).resolve()
        if real != data and data not in real.parents:
            raise InvalidRequest(name, f"must be a folder inside the data folder, but {folder!r} leads to {real}")

    def _load(self) -> Preferences:
        if not self.path.is_file():
            return Preferences()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            self._set_aside(f"unreadable ({exc})")
            return Preferences()
        good: dict[str, Any] = {}
        for name, value in data.items():  # keep every good value, drop (and report) each bad one
            if name not in Preferences.model_fields:
                continue
            try:
                Preferences.model_validate({**good, name: value})
            except (ValidationError, InvalidRequest) as exc:
                log.warning("settings file %s: ignoring %s (%s)", self.path, name, exc)
                continue
            good[name] = value
        return Preferences.model_validate(good)

    def _set_aside(self, why: str) -> None:
        target = self.path.with_name(f"{self.path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        log.warning("settings file %s is %s; moved to %s, using defaults", self.path, why, target.name)
        with contextlib.suppress(OSError):
            self.path.replace(target)

    def _write(self, preferences: Preferences) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            with open(temp, "w", encoding="utf-8") as handle:
                json.dump(preferences.model_dump(), handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise InvalidRequest("settings", f"cannot save settings to {self.path}: {exc.strerror or exc}") from exc
