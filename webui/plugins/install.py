"""Installing an extension into the extensions folder: from a local folder (copied) or a git URL (cloned).

The page's Extensions tab calls ``install``; the rules live here, without Gradio:
- installing runs someone else's code at the next start, so the page offers it only when Easel listens on this
  machine alone, or when it was started with ``--allow-extension-install`` (``install_refusal``);
- a local folder must hold an ``extension.toml``; a git URL is cloned with ``git clone --depth 1`` (no shell, no
  password prompt, a time limit) into a hidden temporary folder, checked, then renamed into place, so a failed or
  interrupted install never leaves a half extension the next start would try to load;
- the new folder is named as the extension will load: its manifest's name, else the source folder's or the URL's
  last part sanitised to letters, digits and ``. _ -`` (the plugin host's rules, ``webui.plugins.manager``); a
  name already in the folder, or already an extension's, is refused.
Nothing is loaded now: the extension loads at the next start.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from webui.errors import InvalidRequest
from webui.plugins.manager import MANIFEST, NAME, manifest_name, read_manifest

FIELD = "source"  # what errors name: the page's "local folder path or git URL" box
LOOPBACK = ("127.0.0.1", "localhost", "::1")
GIT_TIMEOUT = 120.0
_URL_SCHEMES = ("https://", "http://", "git://", "ssh://", "file://")
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:(?!//)")  # git@github.com:owner/repo.git
_IGNORED = shutil.ignore_patterns("__pycache__", ".git")


@dataclass(frozen=True)
class Installed:
    name: str
    path: Path
    how: str  # "copied" or "cloned"

    @property
    def message(self) -> str:
        return f"Installed '{self.name}' ({self.how} into {self.path}). It will load at the next start."


def install_refusal(host: str, allowed: bool) -> str | None:
    """None when the page may install extensions; else the sentence saying why it may not."""
    if allowed or host in LOOPBACK:
        return None
    return (
        f"Installing from the page is off: Easel listens on {host}, beyond this machine, and an extension runs code "
        "here. Copy the extension into the extensions folder yourself, or restart with --allow-extension-install."
    )


def is_git_url(source: str) -> bool:
    return source.startswith(_URL_SCHEMES) or bool(_SCP_LIKE.match(source))


def sanitise(text: str) -> str:
    """``text`` as an extension name: letters, digits and ``. _ -`` (others become ``-``), starting with a letter or
    digit, at most 64 characters; ``InvalidRequest`` when nothing is left."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).lstrip("._-")[:64].rstrip(".-")
    if not NAME.match(name):
        raise InvalidRequest(FIELD, f"cannot make an extension name from {text!r}")
    return name


def name_from_url(url: str) -> str:
    """The folder a clone of ``url`` goes into, as ``git clone`` would name it: the URL's last part without
    ``.git`` (``https://host/me/sd-easel-foo.git`` -> ``sd-easel-foo``), sanitised."""
    path = urlparse(url).path if "://" in url else url.split(":", 1)[-1]
    last = path.rstrip("/").rsplit("/", 1)[-1]
    last = last.removesuffix(".git")
    if not last:
        raise InvalidRequest(FIELD, f"cannot tell the extension's name from the URL {url!r}")
    return sanitise(last)


def install(
    source: str,
    folder: Path | None,
    *,
    taken: Iterable[str] = (),
    timeout: float = GIT_TIMEOUT,
    git: str = "git",
) -> Installed:
    """Install ``source`` (a local folder path or a git URL) into ``folder``. ``taken``: the names of the extensions
    Easel knows (loaded or not), refused as new names. Raises ``InvalidRequest`` naming ``source`` with the reason;
    nothing is left behind then."""
    source = (source or "").strip()
    if not source:
        raise InvalidRequest(FIELD, "give a local folder path or a git URL")
    if folder is None:
        raise InvalidRequest(FIELD, "Easel has no extensions folder (started with --disable-extensions?)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    taken = set(taken)
    if is_git_url(source):
        return _clone(source, folder, taken, timeout, git)
    return _copy(Path(source).expanduser(), folder, taken)


def _free(name: str, folder: Path, taken: set[str]) -> Path:
    target = folder / name
    if name in taken:
        raise InvalidRequest(FIELD, f"an extension named '{name}' already exists")
    if target.exists():
        raise InvalidRequest(FIELD, f"{target} already exists")
    return target


def _loads_as(path: Path, fallback: str) -> str:
    """The name the extension in ``path`` will load under: its manifest's, else ``fallback``, by the host's rule."""
    try:
        data = read_manifest(path / MANIFEST)
    except Exception as exc:
        raise InvalidRequest(FIELD, f"its {MANIFEST} does not parse: {exc}") from None
    try:
        return manifest_name(data, fallback)
    except ValueError as exc:
        raise InvalidRequest(FIELD, str(exc)) from None


def _staged(
    source: str, folder: Path, taken: set[str], fallback: str, fill: Callable[[Path], None]
) -> tuple[str, Path]:
    """Install ``source`` through a hidden staging folder in ``folder`` (never loaded as an extension): ``fill`` puts
    the extension into the path it is given, which is then named as it will load (``_loads_as``) and renamed into
    place. (name, path); whatever fails, nothing is left behind."""
    staging = Path(tempfile.mkdtemp(prefix=".install-", dir=folder))
    try:
        work = staging / fallback
        fill(work)
        if not (work / MANIFEST).is_file():
            raise InvalidRequest(FIELD, f"{source} has no {MANIFEST} at its top, so it is not an Easel extension")
        name = _loads_as(work, fallback)
        target = _free(name, folder, taken)
        try:
            work.rename(target)
        except OSError as exc:
            raise InvalidRequest(FIELD, f"could not move it into {target}: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return name, target


def _copy(path: Path, folder: Path, taken: set[str]) -> Installed:
    if not path.is_absolute():
        raise InvalidRequest(FIELD, f"give the folder's full path, not {str(path)!r}")
    if not path.is_dir():
        raise InvalidRequest(FIELD, f"{path} is not a folder (or a git URL: https://, ssh://, git://, file://)")
    if not (path / MANIFEST).is_file():
        raise InvalidRequest(FIELD, f"{path} has no {MANIFEST}, so it is not an Easel extension")
    if folder.resolve().is_relative_to(path.resolve()):
        raise InvalidRequest(FIELD, f"{path} holds the extensions folder itself")

    def copy(work: Path) -> None:
        try:
            shutil.copytree(path, work, symlinks=True, ignore=_IGNORED)
        except OSError as exc:
            raise InvalidRequest(FIELD, f"could not copy {path}: {exc}") from None

    name, target = _staged(str(path), folder, taken, sanitise(path.name), copy)
    return Installed(name, target, "copied")


def _clone(url: str, folder: Path, taken: set[str], timeout: float, git: str) -> Installed:
    program = shutil.which(git)
    if program is None:
        raise InvalidRequest(FIELD, "git is not installed, so a URL cannot be cloned; give a local folder instead")
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": ""}

    def clone(work: Path) -> None:
        returncode, stderr = _run([program, "clone", "--depth", "1", "--", url, str(work)], env, timeout)
        if returncode is None:
            raise InvalidRequest(FIELD, f"git clone took longer than {timeout:g} s; nothing was installed")
        if returncode != 0:
            lines = [line for line in stderr.splitlines() if line.strip()]
            why = lines[-1].strip() if lines else f"exit status {returncode}"
            raise InvalidRequest(FIELD, f"git clone {url} failed: {why}"[:500])

    name, target = _staged(url, folder, taken, name_from_url(url), clone)
    return Installed(name, target, "cloned")


def _run(command: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """(exit status, stderr) of ``command``, or (None, ...) when it ran past ``timeout``: then it is killed with
    the processes it started (git runs helpers that would otherwise hold its pipes open, and the clone, past it)."""
    with subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, to stop all of it
    ) as process:
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            if hasattr(os, "killpg"):
                os.killpg(process.pid, signal.SIGKILL)
            else:  # pragma: no cover - Windows
                process.kill()
            process.communicate()
            return None, ""
    return process.returncode, stderr or ""
