"""Extensions: found, checked, loaded, called one by one, and kept from taking Easel down.

An extension is a folder ``extensions/NAME/`` with a manifest (``extension.toml``: name, version, the plugin API
version it needs, description, the module file) and that module, or an installed package that registers a module
under the ``easel.extensions`` entry-point group (its manifest is the module's ``EASEL_EXTENSION`` dict).

Isolation, as the plugin API promises it:
- a manifest asking for another API major version or a newer minor is refused at load, with both versions named;
- a module that fails to import, or implements a hook with argument names the specification does not have, or a
  hook that does not exist, is disabled and listed with the error; Easel starts anyway;
- every hook is called extension by extension (``_call``), so one extension's exception is attributed to it:
  shaping hooks fail the job naming the extension, observers are logged, start-up hooks disable the extension;
- what a job hook returns is checked before it is used, and applies to that job only.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from webui.errors import EaselError, InvalidRequest
from webui.plugin_api import API_VERSION, PROJECT, App, Job, ModelInfo, PluginError, Preprocessor, Setting, Step, Tab
from webui.plugins import hookspecs

log = logging.getLogger(__name__)

MANIFEST = "extension.toml"
ENTRY_POINT_GROUP = "easel.extensions"
STATE_FILE = "easel-extensions.json"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a plain extension name (the installer's rule too)


class ExtensionFailed(EaselError):
    """An extension's hook raised while shaping a job: the job fails with this message, naming the extension."""

    def __init__(self, name: str, hook: str, exc: BaseException) -> None:
        self.extension = name
        self.hook = hook
        detail = str(exc) if isinstance(exc, EaselError | PluginError) else f"{type(exc).__name__}: {exc}"
        super().__init__(f"extension '{name}' failed in {hook}: {detail}")


@dataclass
class Extension:
    """One extension as listed in the Extensions tab: where it came from and whether it runs."""

    name: str
    version: str = ""
    api: str = ""
    description: str = ""
    path: Path | None = None  # its folder (None: an installed package)
    source: str = "folder"  # "folder" or "package"
    status: str = "enabled"  # enabled | disabled | failed | refused
    error: str = ""
    tab_error: str = ""  # set by the page when building one of its tabs raised (the extension keeps running)
    module: ModuleType | None = None
    settings: list[Setting] = field(default_factory=list)
    arguments: list[Setting] = field(default_factory=list)
    tabs: list[Tab] = field(default_factory=list)
    preprocessors: list[Preprocessor] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.status == "enabled"


def api_compatible(needed: str, have: str = API_VERSION) -> str | None:
    """None when an extension asking for plugin API ``needed`` can run on ``have``; else why not."""
    try:
        need_major, need_minor = (int(p) for p in str(needed).strip().split(".")[:2])
        have_major, have_minor = (int(p) for p in have.split(".")[:2])
    except ValueError:
        return f"its manifest's api '{needed}' is not a version like '1.0'"
    if need_major != have_major or need_minor > have_minor:
        return f"it needs plugin API {needed}; this Easel has {have}"
    return None


def read_manifest(path: Path) -> dict[str, Any]:
    """The table in a manifest file (``extension.toml``); raises (``OSError``, ``tomllib.TOMLDecodeError``) when it
    cannot be read or does not parse."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads(path.read_text(encoding="utf-8"))


def manifest_name(data: Mapping[str, Any], fallback: str) -> str:
    """The name an extension loads under: its manifest's ``name``, else ``fallback``; a ``ValueError`` saying why
    when that is not a plain name."""
    name = str(data.get("name", fallback))
    if not NAME.match(name):
        raise ValueError(f"its name {name!r} is not a plain name (letters, digits, . _ -)")
    return name


def check_value(setting: Setting, value: Any, where: str) -> Any:
    """``value`` as ``setting`` wants it, or an ``InvalidRequest`` naming ``where`` and the allowed range."""
    kind = setting.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise InvalidRequest(where, f"must be true or false, got {value!r}")
        return value
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRequest(where, f"must be a number, got {value!r}")
        if kind == "int":
            if float(value) != int(value):
                raise InvalidRequest(where, f"must be a whole number, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        low, high = setting.minimum, setting.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise InvalidRequest(where, f"must be between {low:g} and {high:g}, got {value:g}")
        return value
    if not isinstance(value, str):
        raise InvalidRequest(where, f"must be text, got {value!r}")
    if kind == "choice" and value not in setting.choices:
        raise InvalidRequest(where, f"must be one of {', '.join(setting.choices)}, got {value!r}")
    if len(value) > 10_000:
        raise InvalidRequest(where, f"must be at most 10000 characters, got {len(value)}")
    return value


class PluginHost:
    """The loaded extensions and the one way Easel calls them."""

    def __init__(self, folder: Path, data_dir: Path, *, enabled: bool = True, entry_points: bool = True) -> None:
        self.folder = Path(folder)
        self.data_dir = Path(data_dir)
        self.enabled = enabled
        self.entry_points = entry_points
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs.EaselHooks)
        self.extensions: list[Extension] = []
        self._lock = threading.Lock()
        self._state = self._read_state()
        self._found_folders: set[str] = set()  # the folders ``load`` looked at

    # -- discovery and loading ---------------------------------------------------------------------------------
    def load(self) -> list[Extension]:
        """Find every extension, load the enabled ones, ask each for its settings, arguments, tabs and
        preprocessors. Never raises for an extension's fault: it is listed with its error."""
        if not self.enabled:
            log.info("extensions disabled (--disable-extensions)")
            return []
        found = [*self._folders(), *self._packages()]
        seen: set[str] = set()
        for ext in found:
            if ext.name in seen:
                ext.status, ext.error = "refused", f"another extension is already named '{ext.name}'"
            seen.add(ext.name)
            if ext.status == "enabled" and ext.name in self._state.get("disabled", []):
                ext.status = "disabled"
            if ext.status == "enabled":
                self._register(ext)
            self.extensions.append(ext)
        from webui.controlnet import preprocessors

        preprocessors.unregister_extensions()  # a host before this one (tests) leaves none behind
        for ext in self.active:
            self._startup(ext)
            self._register_preprocessors(ext)
        for ext in self.extensions:
            if ext.error:
                log.warning("extension %s: %s", ext.name, ext.error)
        return self.extensions

    def _folders(self) -> Iterable[Extension]:
        folders = self._extension_folders()
        self._found_folders = {path.name for path in folders}
        for path in folders:
            yield self._from_folder(path)

    def _extension_folders(self) -> list[Path]:
        """The folders in the extensions folder that are extensions' (not hidden, not ``_``-prefixed), sorted."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))

    def installed_since_start(self) -> list[Path]:
        """Extension folders that appeared after ``load`` (installed since the start): they load at the next one."""
        return [path for path in self._extension_folders() if path.name not in self._found_folders]

    def _from_folder(self, path: Path) -> Extension:
        ext = Extension(name=path.name, path=path)
        manifest = path / MANIFEST
        if not manifest.is_file():
            ext.status, ext.error = "failed", f"no {MANIFEST} in {path.name}/"
            return ext
        try:
            data = read_manifest(manifest)
        except Exception as exc:  # a malformed manifest must not stop Easel
            ext.status, ext.error = "failed", f"{MANIFEST} does not parse: {exc}"
            return ext
        self._apply_manifest(ext, data)
        if ext.status == "enabled":
            entry = path / str(data.get("module", "extension.py"))
            if not entry.resolve().is_relative_to(path.resolve()) or not entry.is_file():
                ext.status, ext.error = "failed", f"its module {entry.name} is not a file in {path.name}/"
            else:
                ext.module = _import_file(ext.name, entry, ext)
        return ext

    def _packages(self) -> Iterable[Extension]:
        if not self.entry_points:
            return
        for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            ext = Extension(name=point.name, source="package")
            try:
                module = point.load()
            except Exception as exc:
                ext.status, ext.error = "failed", f"its package does not import: {type(exc).__name__}: {exc}"
                yield ext
                continue
            self._apply_manifest(ext, dict(getattr(module, "EASEL_EXTENSION", {}) or {}))
            ext.module = module if ext.status == "enabled" else None
            yield ext

    def _apply_manifest(self, ext: Extension, data: Mapping[str, Any]) -> None:
        try:
            ext.name = manifest_name(data, ext.name)
        except ValueError as exc:
            ext.status, ext.error = "failed", str(exc)
            return
        ext.version = str(data.get("version", ""))
        ext.description = str(data.get("description", ""))
        ext.api = str(data.get("api", ""))
        if not ext.api:
            ext.status, ext.error = "refused", "its manifest does not say which plugin API version it needs (api)"
            return
        problem = api_compatible(ext.api)
        if problem:
            ext.status, ext.error = "refused", problem

    def _register(self, ext: Extension) -> None:
        if ext.module is None:
            if ext.status == "enabled":
                ext.status = "failed"
            return
        try:
            self.pm.register(ext.module, name=ext.name)
        except pluggy.PluginValidationError as exc:
            ext.status, ext.error = "failed", f"wrong hook: {exc}"
            return
        unknown = [
            name
            for name in dir(ext.module)
            if name.startswith("easel_")
            and callable(getattr(ext.module, name))
            and not hasattr(hookspecs.EaselHooks, name)
        ]
        if unknown:
            self.pm.unregister(ext.module)
            ext.status, ext.error = "failed", f"{', '.join(unknown)}: no such hook in plugin API {API_VERSION}"

    def _startup(self, ext: Extension) -> None:
        """Ask a registered extension for what it adds; any exception disables it."""
        try:
            ext.settings = _settings_list(self._one(ext, "easel_settings"), "easel_settings")
            ext.arguments = _settings_list(self._one(ext, "easel_job_arguments"), "easel_job_arguments")
            ext.preprocessors = list(self._one(ext, "easel_controlnet_preprocessors") or [])
            for pre in ext.preprocessors:
                if not isinstance(pre, Preprocessor):
                    raise TypeError(f"easel_controlnet_preprocessors returned {type(pre).__name__}, not Preprocessor")
        except Exception as exc:
            self._disable(ext, exc)

    def _register_preprocessors(self, ext: Extension) -> None:
        """List an extension's preprocessors with Easel's; a taken name is refused and logged, the rest stay."""
        from webui.controlnet import preprocessors

        def slider(value: Any) -> preprocessors.Slider | None:
            if value is None:
                return None
            return preprocessors.Slider(value.label, value.default, value.minimum, value.maximum)

        if not ext.active:
            return
        for pre in ext.preprocessors:
            try:
                preprocessors.register(ext.name, pre.name, pre.run, slider(pre.threshold_a), slider(pre.threshold_b))
            except ValueError as exc:
                log.warning("extension %s: preprocessor not added: %s", ext.name, exc)

    def _disable(self, ext: Extension, exc: BaseException) -> None:
        ext.status, ext.error = "failed", f"{type(exc).__name__}: {exc}"
        if ext.module is not None and self.pm.is_registered(ext.module):
            self.pm.unregister(ext.module)
        log.error("extension %s disabled: %s", ext.name, ext.error)

    # -- calling ------------------------------------------------------------------------------------------------
    @property
    def active(self) -> list[Extension]:
        return [e for e in self.extensions if e.active]

    def get(self, name: str) -> Extension | None:
        return next((e for e in self.extensions if e.name == name), None)

    def _one(self, ext: Extension, hook: str, **kwargs: Any) -> Any:
        """Call one extension's implementation of ``hook`` (None when it has none) with the arguments it takes."""
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            if impl.plugin is ext.module:
                return impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
        return None

    def _observe(self, hook: str, make_kwargs: Callable[[Extension], dict[str, Any]]) -> None:
        """Call an observer hook on every extension; an exception is logged with the extension's name."""
        for ext in list(self.active):
            if not self._implements(ext, hook):
                continue
            try:
                self._one(ext, hook, **make_kwargs(ext))
            except Exception:
                log.exception("extension %s failed in %s (ignored: it only observes)", ext.name, hook)

    # -- settings and arguments ---------------------------------------------------------------------------------
    def settings_of(self, name: str) -> dict[str, Any]:
        """An extension's saved settings, defaults filled in."""
        ext = self.get(name)
        if ext is None:
            return {}
        saved = self._state.get("settings", {}).get(name, {})
        return {s.key: saved.get(s.key, s.default) for s in ext.settings}

    def update_settings(self, name: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Check and save an extension's settings; ``InvalidRequest`` names a bad one and nothing is saved."""
        ext = self.get(name)
        if ext is None:
            raise InvalidRequest("extension", f"no extension named '{name}'")
        specs = {s.key: s for s in ext.settings}
        checked = {}
        for key, value in values.items():
            if key not in specs:
                raise InvalidRequest(f"{name}.{key}", f"is not a setting of {name} ({', '.join(specs) or 'none'})")
            checked[key] = check_value(specs[key], value, f"{name}.{key}")
        with self._lock:
            settings = self._state.setdefault("settings", {})
            settings[name] = {**settings.get(name, {}), **checked}
            self._write_state()
        return self.settings_of(name)

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Remember an extension as enabled or disabled; it takes effect at the next start."""
        if self.get(name) is None:
            raise InvalidRequest("extension", f"no extension named '{name}'")
        with self._lock:
            disabled = set(self._state.get("disabled", []))
            (disabled.discard if enabled else disabled.add)(name)
            self._state["disabled"] = sorted(disabled)
            self._write_state()

    def is_enabled_at_next_start(self, name: str) -> bool:
        return name not in self._state.get("disabled", [])

    def check_arguments(self, given: Mapping[str, Any], prefix: str = "extension_args") -> dict[str, dict[str, Any]]:
        """Per-job arguments by extension name, checked against each one's ``easel_job_arguments``."""
        checked: dict[str, dict[str, Any]] = {}
        for name, values in given.items():
            ext = self.get(name)
            where = f"{prefix}.{name}"
            if ext is None or not ext.active:
                known = ", ".join(e.name for e in self.active) or "none"
                raise InvalidRequest(where, f"no enabled extension named '{name}' (enabled: {known})")
            if not isinstance(values, Mapping):
                raise InvalidRequest(where, "must be an object of argument names and values")
            specs = {s.key: s for s in ext.arguments}
            out = {}
            for key, value in values.items():
                if key not in specs:
                    raise InvalidRequest(
                        f"{where}.{key}", f"is not an argument of {name} ({', '.join(specs) or 'none'})"
                    )
                out[key] = check_value(specs[key], value, f"{where}.{key}")
            checked[name] = out
        return checked

    def job(self, ext: Extension, job_id: str, request: Any) -> Job:
        """The read-only view of a request one extension gets, with its own arguments and settings."""
        values = request.model_dump(exclude={"init_image", "mask", "controlnet_units", "extension_args"})
        given = (request.extension_args or {}).get(ext.name, {})
        args = {s.key: given.get(s.key, s.default) for s in ext.arguments}
        return Job(
            id=job_id,
            mode=request.mode.value,
            values=_frozen(values),
            args=_frozen(args),
            settings=_frozen(self.settings_of(ext.name)),
        )

    # -- job hooks ------------------------------------------------------------------------------------------------
    def before_generation(self, job_id: str, request: Any) -> Any:
        """The request after every extension's changes (checked as any request; each sees the previous one's)."""
        for ext in list(self.active):
            changes = None
            for result in self._only(
                ext, "easel_before_generation", lambda e, r=request: {"job": self.job(e, job_id, r)}
            ):
                changes = result
            if changes is None:
                continue
            if not isinstance(changes, Mapping):
                raise ExtensionFailed(
                    ext.name, "easel_before_generation", TypeError(f"returned {type(changes).__name__}, not a dict")
                )
            request = self._changed(ext, request, changes)
        return request

    def _only(self, ext: Extension, hook: str, make_kwargs: Callable[[Extension], dict[str, Any]]) -> Iterable[Any]:
        """One shaping call: yields the extension's result (nothing when it does not implement ``hook``); its
        exception becomes ``ExtensionFailed`` naming it, which fails the job."""
        if not self._implements(ext, hook):
            return
        try:
            yield self._one(ext, hook, **make_kwargs(ext))
        except Exception as exc:
            log.exception("extension %s failed in %s", ext.name, hook)
            raise ExtensionFailed(ext.name, hook, exc) from exc

    @staticmethod
    def _changed(ext: Extension, request: Any, changes: Mapping[str, Any]) -> Any:
        from webui.types import GenerationRequest

        if "extension_args" in changes or "mode" in changes:
            raise ExtensionFailed(
                ext.name,
                "easel_before_generation",
                InvalidRequest("mode", "the mode and extension_args cannot be changed"),
            )
        fields = {**dict(request), **dict(changes)}
        try:
            return GenerationRequest.build(**fields)
        except InvalidRequest as exc:
            raise ExtensionFailed(ext.name, "easel_before_generation", exc) from exc

    def step_hook(self, job_id: str, request: Any) -> Callable[..., Any] | None:
        """The engine's per-step bridge: None when no extension implements ``easel_denoising_step``."""
        users = [e for e in self.active if self._implements(e, "easel_denoising_step")]
        if not users:
            return None
        views = {e.name: self.job(e, job_id, request) for e in users}

        def on_step(index: int, total: int, image_index: int, timestep: float, latents: Any) -> Any:
            replaced = None
            for ext in users:
                step = Step(views[ext.name], index, total, image_index, timestep, latents)
                for result in self._only(ext, "easel_denoising_step", lambda e, s=step: {"step": s}):
                    if result is None:
                        continue
                    if getattr(result, "shape", None) != getattr(latents, "shape", None):
                        raise ExtensionFailed(
                            ext.name,
                            "easel_denoising_step",
                            ValueError(
                                f"returned latents of shape {getattr(result, 'shape', None)}, need {tuple(latents.shape)}"
                            ),
                        )
                    latents = replaced = result.to(latents.dtype)
            return replaced

        return on_step

    def postprocess(self, job_id: str, request: Any, image: Any) -> Any:
        """The image through every extension's ``easel_postprocess_image`` (a chain)."""
        from PIL import Image

        for ext in list(self.active):
            for result in self._only(
                ext, "easel_postprocess_image", lambda e, im=image: {"image": im, "job": self.job(e, job_id, request)}
            ):
                if result is None:
                    continue
                if not isinstance(result, Image.Image):
                    raise ExtensionFailed(
                        ext.name,
                        "easel_postprocess_image",
                        TypeError(f"returned {type(result).__name__}, not a PIL image"),
                    )
                image = result
        return image

    def infotext_fields(self, job_id: str, request: Any, reserved: Iterable[str] = ()) -> dict[str, Any]:
        """Extra infotext fields from every extension; a key Easel writes itself is refused."""
        from webui.outputs.infotext import KEY_ORDER, TRAILING_KEYS

        taken = set(KEY_ORDER) | set(TRAILING_KEYS) | set(reserved) | {"Prompt", "Negative prompt"}
        fields: dict[str, Any] = {}
        for ext in list(self.active):
            for result in self._only(ext, "easel_infotext_fields", lambda e: {"job": self.job(e, job_id, request)}):
                if not result:
                    continue
                if not isinstance(result, Mapping):
                    raise ExtensionFailed(ext.name, "easel_infotext_fields", TypeError("must return a dict"))
                for key, value in result.items():
                    if key in taken or key in fields or not re.match(r"^\w[\w \-/]{0,60}$", str(key)):
                        raise ExtensionFailed(
                            ext.name, "easel_infotext_fields", ValueError(f"cannot write the key {key!r}")
                        )
                    fields[str(key)] = value
        return fields

    def infotext_read(self, fields: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Per-job arguments by extension, read back from a parsed infotext (bad values left out)."""
        found: dict[str, dict[str, Any]] = {}
        for ext in list(self.active):
            if not self._implements(ext, "easel_infotext_read"):
                continue
            try:
                args = self._one(ext, "easel_infotext_read", fields=dict(fields))
                if args:
                    found.update(self.check_arguments({ext.name: dict(args)}))
            except Exception:
                log.exception("extension %s failed in easel_infotext_read (ignored)", ext.name)
        return found

    # -- observers and start-up hooks -----------------------------------------------------------------------------
    def image_saved(self, job_id: str, request: Any, path: Path, infotext: str) -> None:
        self._observe(
            "easel_image_saved", lambda e: {"path": path, "infotext": infotext, "job": self.job(e, job_id, request)}
        )

    def model_loaded(self, info: Any, family: str) -> None:
        model = ModelInfo(name=info.name, title=info.title, family=family, short_hash=info.shorthash)
        self._observe("easel_model_loaded", lambda e: {"model": model})

    def app_started(self, mount: Callable[[str, Any], None]) -> None:
        """Give each extension its router; ``mount(prefix, router)`` serves it. An exception disables the extension."""
        from fastapi import APIRouter

        for ext in list(self.active):
            if not self._implements(ext, "easel_app_started"):
                continue
            router = APIRouter(tags=[f"extension: {ext.name}"])
            data_dir = self.data_dir / "extensions" / ext.name
            app = App(name=ext.name, router=router, data_dir=data_dir, settings=_frozen(self.settings_of(ext.name)))
            try:
                data_dir.mkdir(parents=True, exist_ok=True)
                self._one(ext, "easel_app_started", app=app)
            except Exception as exc:
                self._disable(ext, exc)
                continue
            mount(f"/easel/v1/ext/{ext.name}", router)

    def tabs(self) -> list[tuple[Extension, Tab]]:
        """Every active extension's tabs; an extension whose hook raises is listed as failed, without tabs."""
        found = []
        for ext in list(self.active):
            if not self._implements(ext, "easel_ui_tabs"):
                continue
            try:
                for tab in self._one(ext, "easel_ui_tabs") or []:
                    if not isinstance(tab, Tab):
                        raise TypeError(f"easel_ui_tabs returned {type(tab).__name__}, not Tab")
                    found.append((ext, tab))
            except Exception as exc:
                self._disable(ext, exc)
        return found

    def _implements(self, ext: Extension, hook: str) -> bool:
        return any(impl.plugin is ext.module for impl in getattr(self.pm.hook, hook).get_hookimpls())

    # -- state file ------------------------------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any]:
        path = self.data_dir / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s (%s); extensions start enabled with default settings", path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def _write_state(self) -> None:
        path = self.data_dir / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps(self._state, indent=2, sort_keys=True), encoding="utf-8")
        temp.replace(path)


def _settings_list(value: Any, hook: str) -> list[Setting]:
    items = list(value or [])
    keys = set()
    for item in items:
        if not isinstance(item, Setting):
            raise TypeError(f"{hook} returned {type(item).__name__}, not Setting")
        if item.key in keys:
            raise ValueError(f"{hook}: the key {item.key!r} is used twice")
        keys.add(item.key)
        check_value(item, item.default, f"{hook}:{item.key} default")
    return items


def _frozen(values: Mapping[str, Any]) -> Mapping[str, Any]:
    from types import MappingProxyType

    return MappingProxyType(dict(values))


def _import_file(name: str, entry: Path, ext: Extension) -> ModuleType | None:
    """Import an extension's module under its own name (``easel_extensions.NAME``); its folder is importable for
    its own helper modules. A failure is recorded on ``ext``, never raised."""
    module_name = "easel_extensions." + re.sub(r"\W", "_", name)
    folder = str(entry.parent)
    parent = sys.modules.get("easel_extensions")
    if parent is None:  # a namespace for every extension module, so they can be imported by name
        parent = sys.modules["easel_extensions"] = ModuleType("easel_extensions")
        parent.__path__ = []  # type: ignore[attr-defined]
    try:
        spec = importlib.util.spec_from_file_location(module_name, entry)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {entry.name}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        if folder not in sys.path:
            sys.path.insert(0, folder)
        spec.loader.exec_module(module)
        setattr(parent, module_name.rsplit(".", 1)[1], module)
        return module
    except BaseException as exc:  # SyntaxError, ImportError, SystemExit from a bad module: never take Easel down
        sys.modules.pop(module_name, None)
        ext.status, ext.error = "failed", f"{entry.name} does not import: {type(exc).__name__}: {exc}"
        return None
