"""Output files: A1111's folder scheme and numbering, unique numbers under concurrency, atomic writes, cleanup."""

from __future__ import annotations

import errno
import os
import threading
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from webui.errors import GenerationFailed
from webui.outputs import saving
from webui.outputs.saving import cleanup_temp_files, save_image
from webui.types import Mode

WHEN = datetime(2024, 5, 17, 13, 45)
INFOTEXT = "a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1"


def _image() -> Image.Image:
    return Image.new("RGB", (16, 16), (200, 10, 10))


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_folder_scheme_and_numbering(tmp_path: Path) -> None:
    first = save_image(_image(), tmp_path, Mode.TXT2IMG, 1234, INFOTEXT, when=WHEN)
    second = save_image(_image(), tmp_path, Mode.TXT2IMG, 99, INFOTEXT, when=WHEN)
    assert first == tmp_path / "txt2img-images" / "2024-05-17" / "00000-1234.png"
    assert second.name == "00001-99.png"
    with Image.open(first) as image:
        assert image.info["parameters"] == INFOTEXT
        assert image.size == (16, 16)


@pytest.mark.parametrize("mode", [Mode.IMG2IMG, Mode.INPAINT])
def test_img2img_and_inpaint_share_a1111_folder(tmp_path: Path, mode: Mode) -> None:
    path = save_image(_image(), tmp_path, mode, 5, INFOTEXT, when=WHEN)
    assert path == tmp_path / "img2img-images" / "2024-05-17" / "00000-5.png"


def test_numbering_continues_after_max_and_ignores_other_names(tmp_path: Path) -> None:
    folder = tmp_path / "txt2img-images" / "2024-05-17"
    folder.mkdir(parents=True)
    for name in ("00007-1.png", "00003-2.png", "notes.txt", "abc-00099.png", "grid-0042.png", "123abc.png"):
        (folder / name).write_bytes(b"x")
    path = save_image(_image(), tmp_path, Mode.TXT2IMG, 8, INFOTEXT, when=WHEN)
    assert path.name == "00008-8.png"


def test_days_get_their_own_folders(tmp_path: Path) -> None:
    save_image(_image(), tmp_path, Mode.TXT2IMG, 1, INFOTEXT, when=WHEN)
    other = save_image(_image(), tmp_path, Mode.TXT2IMG, 1, INFOTEXT, when=datetime(2024, 5, 18))
    assert other == tmp_path / "txt2img-images" / "2024-05-18" / "00000-1.png"


def test_concurrent_saves_get_unique_numbers(tmp_path: Path) -> None:
    results: list[Path] = []
    barrier = threading.Barrier(8)

    def worker(seed: int) -> None:
        barrier.wait()
        for i in range(3):
            results.append(save_image(_image(), tmp_path, Mode.TXT2IMG, seed * 10 + i, INFOTEXT, when=WHEN))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    numbers = sorted(int(p.name.split("-")[0]) for p in results)
    assert numbers == list(range(24))
    assert len(_files(results[0].parent)) == 24


def test_separate_path_objects_still_never_share_a_number(tmp_path: Path) -> None:
    """Two ``OutputPaths`` (as in two processes) racing: the O_EXCL claim alone keeps numbers unique."""
    a, b = saving.OutputPaths(tmp_path), saving.OutputPaths(tmp_path)
    fd1, temp1, final1 = a.claim(Mode.TXT2IMG, 1, WHEN)
    fd2, temp2, final2 = b.claim(Mode.TXT2IMG, 2, WHEN)
    os.close(fd1)
    os.close(fd2)
    assert (final1.name, final2.name) == ("00000-1.png", "00001-2.png")
    assert temp1 != temp2


def test_claim_skips_a_number_finished_by_another_process(tmp_path: Path, monkeypatch) -> None:
    """The scan saw nothing, but by the time the temp file exists another process has renamed 00000 into place."""
    paths = saving.OutputPaths(tmp_path)
    folder = paths.folder(Mode.TXT2IMG, WHEN)
    folder.mkdir(parents=True)
    real = saving._numbers_in
    calls = {"n": 0}

    def racing_scan(target: Path, skip: str = "") -> set[int]:
        calls["n"] += 1
        if calls["n"] == 1:
            (folder / "00000-77.png").write_bytes(b"done by someone else")
            return set()
        return real(target, skip)

    monkeypatch.setattr(saving, "_numbers_in", racing_scan)
    fd, _temp, final = paths.claim(Mode.TXT2IMG, 3, WHEN)
    os.close(fd)
    assert final.name == "00001-3.png"
    assert ".00000.png.tmp" not in _files(folder)


def _disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_enospc_at_fsync_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(saving.os, "fsync", _disk_full)
    with pytest.raises(GenerationFailed, match=r"could not save image.*No space left on device"):
        save_image(_image(), tmp_path, Mode.TXT2IMG, 1234, INFOTEXT, when=WHEN)
    assert _files(tmp_path / "txt2img-images" / "2024-05-17") == []


def test_enospc_in_the_middle_of_writing_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    real_save = Image.Image.save

    def half_written(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG\r\n\x1a\n partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", half_written)
    with pytest.raises(GenerationFailed) as caught:
        save_image(_image(), tmp_path, Mode.TXT2IMG, 1234, INFOTEXT, when=WHEN)
    assert "disk full" in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)
    folder = tmp_path / "txt2img-images" / "2024-05-17"
    assert _files(folder) == []

    # Once space is back the same number is free again, and the file is whole.
    monkeypatch.setattr(Image.Image, "save", real_save)
    path = save_image(_image(), tmp_path, Mode.TXT2IMG, 1234, INFOTEXT, when=WHEN)
    assert path.name == "00000-1234.png"
    with Image.open(path) as image:
        image.load()


def test_rename_failure_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(saving.os, "replace", _disk_full)
    with pytest.raises(GenerationFailed):
        save_image(_image(), tmp_path, Mode.TXT2IMG, 1, INFOTEXT, when=WHEN)
    assert _files(tmp_path / "txt2img-images" / "2024-05-17") == []


def test_unwritable_root_is_generation_failed(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(GenerationFailed, match="could not save image"):
        save_image(_image(), blocker, Mode.TXT2IMG, 1, INFOTEXT, when=WHEN)


def test_cleanup_temp_files(tmp_path: Path) -> None:
    folder = tmp_path / "txt2img-images" / "2024-05-17"
    folder.mkdir(parents=True)
    (folder / ".00003.png.tmp").write_bytes(b"half")
    (folder / ".00004.png.tmp").write_bytes(b"half")
    (folder / "00002-1.png").write_bytes(b"kept")
    (folder / "notes.tmp").write_bytes(b"kept: not hidden, not ours")
    assert cleanup_temp_files(tmp_path) == 2
    assert _files(folder) == ["00002-1.png", "notes.tmp"]
    assert cleanup_temp_files(tmp_path) == 0
    assert cleanup_temp_files(tmp_path / "missing") == 0


def test_leftover_temp_numbers_are_skipped_until_cleanup(tmp_path: Path) -> None:
    folder = tmp_path / "txt2img-images" / "2024-05-17"
    folder.mkdir(parents=True)
    (folder / ".00000.png.tmp").write_bytes(b"crash leftover")
    path = save_image(_image(), tmp_path, Mode.TXT2IMG, 1, INFOTEXT, when=WHEN)
    assert path.name == "00001-1.png"
