"""Installing an extension from a local folder or a git URL (webui/plugins/install.py), with a real git for clones
(a ``file://`` URL of a repository made here)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from webui.errors import InvalidRequest
from webui.plugins.install import install, install_refusal, is_git_url, name_from_url, sanitise
from webui.plugins.manager import PluginHost

CODE = """
from webui import plugin_api as easel

@easel.hookimpl
def easel_settings():
    return [easel.Setting("colour", "Colour", "str", "red")]
"""


def _extension(root: Path, folder: str, name: str | None = None) -> Path:
    path = root / folder
    path.mkdir(parents=True)
    (path / "extension.toml").write_text(f'name = "{name or folder}"\nversion = "0.2"\napi = "1.0"\n', encoding="utf-8")
    (path / "extension.py").write_text(CODE, encoding="utf-8")
    (path / "__pycache__").mkdir()
    (path / "__pycache__" / "extension.cpython-311.pyc").write_bytes(b"stale")
    return path


def _repository(root: Path, folder: str, *, manifest: bool = True, name: str | None = None) -> str:
    """A git repository with one commit, as a ``file://`` URL; its manifest names it ``name`` (default: the URL's)."""
    path = _extension(root, folder, name or folder.removesuffix(".git")) if manifest else root / folder
    path.mkdir(parents=True, exist_ok=True)
    (path / "README").write_text("hello\n", encoding="utf-8")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(path)], check=True)
    subprocess.run([*git, "-C", str(path), "add", "extension.toml", "extension.py", "README"] if manifest else [*git, "-C", str(path), "add", "README"], check=True)  # fmt: skip
    subprocess.run([*git, "-C", str(path), "commit", "-q", "-m", "first"], check=True)
    return path.as_uri()


def test_install_is_offered_on_loopback_or_when_allowed_and_says_why_not_otherwise() -> None:
    for host in ("127.0.0.1", "localhost", "::1"):
        assert install_refusal(host, allowed=False) is None
    assert install_refusal("0.0.0.0", allowed=True) is None
    refusal = install_refusal("0.0.0.0", allowed=False)
    assert refusal is not None and "0.0.0.0" in refusal and "--allow-extension-install" in refusal


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://github.com/someone/sd-easel-mirror.git", "sd-easel-mirror"),
        ("https://github.com/someone/sd-easel-mirror/", "sd-easel-mirror"),
        ("git@github.com:someone/easel_thing.git", "easel_thing"),
        ("file:///tmp/repos/My Extension!", "My-Extension"),
        ("ssh://host/path/..hidden.v2.git", "hidden.v2"),
    ],
)
def test_the_name_comes_from_the_url_sanitised(url: str, name: str) -> None:
    assert is_git_url(url)
    assert name_from_url(url) == name


def test_names_that_sanitise_to_nothing_are_refused() -> None:
    for bad in ("https://host/.git", "https://host/", "file:///tmp/___"):
        with pytest.raises(InvalidRequest) as err:
            name_from_url(bad)
        assert err.value.field == "source"
    assert sanitise("a/b\\c d") == "a-b-c-d" and len(sanitise("x" * 100)) == 64
    assert not is_git_url("/home/me/extension") and not is_git_url("C:/extension")


def test_a_local_folder_is_copied_under_its_manifests_name_and_then_loads(tmp_path: Path) -> None:
    source = _extension(tmp_path / "elsewhere", "my-folder", name="colour-picker")
    folder = tmp_path / "extensions"
    done = install(str(source), folder)
    assert (done.name, done.path, done.how) == ("colour-picker", folder / "colour-picker", "copied")
    assert "next start" in done.message and "colour-picker" in done.message
    assert (done.path / "extension.py").read_text(encoding="utf-8") == CODE
    assert not (done.path / "__pycache__").exists()
    assert [p.name for p in folder.iterdir()] == ["colour-picker"]  # no staging folder left
    host = PluginHost(folder, tmp_path / "data", entry_points=False)
    (ext,) = host.load()
    assert (ext.name, ext.status, ext.version) == ("colour-picker", "enabled", "0.2")
    assert host.settings_of("colour-picker") == {"colour": "red"}
    assert host.installed_since_start() == []
    later = install(str(_extension(tmp_path / "elsewhere", "later")), folder)
    (folder / ".install-leftover").mkdir()  # hidden: never an extension
    assert host.installed_since_start() == [later.path]  # listed until the next start loads it


def test_a_folder_without_a_manifest_a_relative_path_or_a_taken_name_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "extensions"
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "extension.py").write_text(CODE, encoding="utf-8")
    source = _extension(tmp_path / "src", "stats")
    cases = [
        (str(plain), "has no extension.toml"),
        ("relative/path", "full path"),
        (str(tmp_path / "missing"), "is not a folder"),
        ("   ", "give a local folder path or a git URL"),
    ]
    for given, words in cases:
        with pytest.raises(InvalidRequest) as err:
            install(given, folder)
        assert err.value.field == "source" and words in err.value.message, err.value.message
    with pytest.raises(InvalidRequest, match="an extension named 'stats' already exists"):
        install(str(source), folder, taken={"stats"})  # loaded from elsewhere (a package) under that name
    install(str(source), folder)
    with pytest.raises(InvalidRequest, match="already exists"):
        install(str(source), folder)  # now in the folder
    with pytest.raises(InvalidRequest, match="no extensions folder"):
        install(str(source), None)
    assert sorted(p.name for p in folder.iterdir()) == ["stats"]


def test_a_folder_holding_the_extensions_folder_is_refused(tmp_path: Path) -> None:
    outer = _extension(tmp_path, "outer")
    with pytest.raises(InvalidRequest, match="holds the extensions folder"):
        install(str(outer), outer / "extensions")


def test_a_file_url_is_cloned_with_depth_one_and_named_from_the_url(tmp_path: Path) -> None:
    url = _repository(tmp_path / "repos", "easel-colour.git")
    folder = tmp_path / "extensions"
    done = install(url, folder)
    assert (done.name, done.how, done.path) == ("easel-colour", "cloned", folder / "easel-colour")
    assert (done.path / "extension.toml").is_file() and (done.path / "README").is_file()
    shallow = subprocess.run(
        ["git", "-C", str(done.path), "rev-parse", "--is-shallow-repository"], capture_output=True, text=True
    )
    assert shallow.stdout.strip() == "true"
    assert [p.name for p in folder.iterdir()] == ["easel-colour"]
    with pytest.raises(InvalidRequest, match="already exists"):
        install(url, folder)


def test_a_clone_is_named_by_its_manifest_as_a_copy_is(tmp_path: Path) -> None:
    url = _repository(tmp_path / "repos", "sd-easel-colour.git", name="colour-picker")
    folder = tmp_path / "extensions"
    with pytest.raises(InvalidRequest, match="an extension named 'colour-picker' already exists"):
        install(url, folder, taken={"colour-picker"})
    done = install(url, folder)
    assert (done.name, done.path) == ("colour-picker", folder / "colour-picker")
    assert [p.name for p in folder.iterdir()] == ["colour-picker"]
    (ext,) = PluginHost(folder, tmp_path / "data", entry_points=False).load()
    assert (ext.name, ext.path, ext.status) == ("colour-picker", done.path, "enabled")


def test_a_manifest_with_a_name_that_is_not_plain_is_refused_with_the_hosts_words(tmp_path: Path) -> None:
    source = _extension(tmp_path / "src", "odd", name="an odd/name")
    with pytest.raises(InvalidRequest, match=r"its name 'an odd/name' is not a plain name"):
        install(str(source), tmp_path / "extensions")
    assert list((tmp_path / "extensions").iterdir()) == []


def test_a_failed_clone_or_a_repository_without_a_manifest_leaves_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "extensions"
    with pytest.raises(InvalidRequest) as err:
        install((tmp_path / "nowhere.git").as_uri(), folder)
    assert err.value.field == "source" and "git clone" in err.value.message and "failed" in err.value.message
    bare = _repository(tmp_path / "repos", "not-an-extension", manifest=False)
    with pytest.raises(InvalidRequest, match=r"has no extension\.toml"):
        install(bare, folder)
    with pytest.raises(InvalidRequest, match="git is not installed"):
        install(bare, folder, git="no-such-git-here")
    assert list(folder.iterdir()) == []


def test_a_clone_that_takes_too_long_is_stopped_and_removed(tmp_path: Path) -> None:
    slow = tmp_path / "slow-git"
    slow.write_text("#!/bin/sh\nsleep 30\n", encoding="utf-8")
    slow.chmod(0o755)
    folder = tmp_path / "extensions"
    started = time.monotonic()
    with pytest.raises(InvalidRequest, match=r"took longer than 0\.5 s"):
        install("https://example.invalid/me/slow.git", folder, timeout=0.5, git=str(slow))
    assert time.monotonic() - started < 10
    assert list(folder.iterdir()) == []
