"""Installing an extension into the extensions folder: from a local folder (copied) or a git URL (cloned).

The page's Extensions tab calls ``install``; the rules live here, without Gradio:
- installing runs someone else's code at the next start, so the page offers it only when Easel listens on this
  machine alone, or when it was started with ``--allow-extension-install`` (``install_refusal``);
- a local folder must hold an ``extension.toml``; a git URL is cloned with ``git clone --depth 1`` (no shell, no
  password prompt, a time limit) into a hidden temporary folder, checked, then renamed into place, so a failed or
  interrupted install never leaves a half extension the next start would try to load;
- the new folder's name comes from the manifest (a folder) or the URL (git), sanitised to letters, digits and
  ``. _ -``; a name already in the folder, or already an extension's, is refused.
Nothing is loaded now: the extension loads at the next start.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from webui.errors import InvalidRequest
from webui.plugins.manager import MANIFEST

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

FIELD = "source"  # what errors name: the page's "local folder path or git URL" box
LOOPBACK = ("127.0.0.1", "localhost", "::1")
GIT_TIMEOUT = 120.0
_URL_SCHEMES = ("https://", "http://", "git://", "ssh://", "file://")
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:(?!//)")  # git@github.com:owner/repo.git
_IGNORED = shutil.ignore_patterns("__pycache__", ".git")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # as the plugin host accepts them


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
    if not _NAME.match(name):
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


def _manifest_name(path: Path, fallback: str) -> str:
    """The name the extension will load under: its manifest's, else its folder's."""
    try:
        data: dict[str, Any] = tomllib.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except Exception as exc:
        raise InvalidRequest(FIELD, f"its {MANIFEST} does not parse: {exc}") from None
    name = str(data.get("name", fallback))
    if not _NAME.match(name):
        raise InvalidRequest(FIELD, f"its {MANIFEST} names it {name!r}, not a plain name (letters, digits, . _ -)")
    return name


def _copy(path: Path, folder: Path, taken: set[str]) -> Installed:
    if not path.is_absolute():
        raise InvalidRequest(FIELD, f"give the folder's full path, not {str(path)!r}")
    if not path.is_dir():
        raise InvalidRequest(FIELD, f"{path} is not a folder (or a git URL: https://, ssh://, git://, file://)")
    if not (path / MANIFEST).is_file():
        raise InvalidRequest(FIELD, f"{path} has no {MANIFEST}, so it is not an Easel extension")
    name = _manifest_name(path, sanitise(path.name))
    target = _free(name, folder, taken)
    if folder.resolve().is_relative_to(path.resolve()):
        raise InvalidRequest(FIELD, f"{path} holds the extensions folder itself")
    staging = Path(tempfile.mkdtemp(prefix=".install-", dir=folder))
    try:
        shutil.copytree(path, staging / name, symlinks=True, ignore=_IGNORED)
        (staging / name).rename(target)
    except OSError as exc:
        raise InvalidRequest(FIELD, f"could not copy {path}: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Installed(name, target, "copied")


def _clone(url: str, folder: Path, taken: set[str], timeout: float, git: str) -> Installed:
    name = name_from_url(url)
    target = _free(name, folder, taken)
    program = shutil.which(git)
    if program is None:
        raise InvalidRequest(FIELD, "git is not installed, so a URL cannot be cloned; give a local folder instead")
    staging = Path(tempfile.mkdtemp(prefix=".install-", dir=folder))  # hidden: never loaded as an extension
    clone = staging / name
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": ""}
    try:
        returncode, stderr = _run([program, "clone", "--depth", "1", "--", url, str(clone)], env, timeout)
        if returncode is None:
            raise InvalidRequest(FIELD, f"git clone took longer than {timeout:g} s; nothing was installed")
        if returncode != 0:
            lines = [line for line in stderr.splitlines() if line.strip()]
            why = lines[-1].strip() if lines else f"exit status {returncode}"
            raise InvalidRequest(FIELD, f"git clone {url} failed: {why}"[:500])
        if not (clone / MANIFEST).is_file():
            raise InvalidRequest(FIELD, f"{url} has no {MANIFEST} at its top, so it is not an Easel extension")
        loads_as = _manifest_name(clone, name)
        if loads_as != name and loads_as in taken:
            raise InvalidRequest(FIELD, f"its {MANIFEST} names it '{loads_as}', and an extension by that name exists")
        try:
            clone.rename(target)
        except OSError as exc:
            raise InvalidRequest(FIELD, f"could not move the clone into {target}: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
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
