"""History's thumbnails against real files: size, the disk cache and its keys, broken files, deletion, the scanner."""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

from webui.outputs import thumbnails as thumbnails_mod
from webui.outputs.history import HistoryIndex, _scan
from webui.outputs.infotext import format_infotext
from webui.outputs.saving import save_image
from webui.outputs.thumbnails import MAX_SIDE, THUMBNAIL_DIR, Thumbnails
from webui.ui.history_tab import gallery_tiles
from webui.ui.progress import file_link


def _image(folder: Path, name: str, size: tuple[int, int], colour=(200, 30, 30), mode: str = "RGB") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.new(mode, size, colour).save(path)
    return path


def _saved(root: Path, prompt: str, seed: int, size: tuple[int, int] = (512, 384)) -> Path:
    text = format_infotext(prompt, "", {"Steps": 20, "Seed": seed, "Size": f"{size[0]}x{size[1]}"})
    path = save_image(Image.new("RGB", size, (seed % 256, 90, 160)), root, "txt2img", seed, text)
    os.utime(path, (1_700_000_000 + seed, 1_700_000_000 + seed))
    return path


def _thumb_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / THUMBNAIL_DIR).rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("size", "expected"),
    [((1024, 512), (256, 128)), ((300, 600), (128, 256)), ((512, 512), (256, 256)), ((64, 48), (64, 48))],
)
def test_a_thumbnail_fits_256_pixels_keeps_the_aspect_and_never_enlarges(
    tmp_path: Path, size: tuple[int, int], expected: tuple[int, int]
) -> None:
    source = _image(tmp_path / "txt2img-images", "00001-1.png", size)
    thumb = Thumbnails(tmp_path).get(source)
    assert thumb is not None and thumb.suffix == ".jpg"
    assert thumb.parent.parent == tmp_path / THUMBNAIL_DIR  # hidden, inside the outputs folder
    with Image.open(thumb) as small:
        assert small.format == "JPEG" and small.size == expected and max(small.size) <= MAX_SIDE
        red, green, blue = small.convert("RGB").getpixel((small.width // 2, small.height // 2))
    assert abs(red - 200) < 12 and green < 45 and blue < 45  # the picture, not a blank
    assert thumb.stat().st_size < 10_000


def test_transparency_is_kept_in_a_webp_thumbnail_and_exif_rotation_applied(tmp_path: Path) -> None:
    clear = _image(tmp_path, "clear.png", (400, 200), (0, 0, 255, 0), mode="RGBA")
    thumb = Thumbnails(tmp_path).get(clear)
    assert thumb is not None and thumb.suffix == ".webp"
    with Image.open(thumb) as small:
        assert small.mode == "RGBA" and small.size == (256, 128) and small.getpixel((10, 10))[3] == 0

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    turned = tmp_path / "photo.jpg"
    Image.new("RGB", (600, 300), (10, 200, 10)).save(turned, exif=exif)
    with Image.open(Thumbnails(tmp_path).get(turned)) as small:
        assert small.size == (128, 256)  # upright, as a browser shows the full image


def test_a_cached_thumbnail_is_reused_not_made_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _image(tmp_path / "txt2img-images", "00001-1.png", (512, 512))
    cache = Thumbnails(tmp_path)
    calls: list[Path] = []
    real = thumbnails_mod._shrink
    monkeypatch.setattr(thumbnails_mod, "_shrink", lambda path, side: calls.append(path) or real(path, side))
    assert cache.cached(source) is None  # asking without making makes nothing
    first = cache.get(source)
    assert first is not None and calls == [source]
    written = first.stat().st_mtime_ns
    time.sleep(0.01)
    assert cache.get(source) == first and cache.cached(source) == first
    assert Thumbnails(tmp_path).many([source, source]) == [first, first]  # a new instance finds the files
    assert calls == [source] and first.stat().st_mtime_ns == written
    assert _thumb_files(tmp_path) == [first]


def test_a_replaced_image_gets_a_fresh_thumbnail_and_the_old_one_goes(tmp_path: Path) -> None:
    source = _image(tmp_path / "txt2img-images", "00001-1.png", (512, 512), (255, 0, 0))
    cache = Thumbnails(tmp_path)
    old = cache.get(source)
    assert old is not None
    replacement = _image(tmp_path, "new.png", (512, 256), (0, 0, 255))
    os.replace(replacement, source)  # same path, other picture (other size and mtime)
    new = cache.get(source)
    assert new is not None and new != old
    assert not old.exists() and _thumb_files(tmp_path) == [new]
    with Image.open(new) as small:
        assert small.size == (256, 128)
        assert small.convert("RGB").getpixel((128, 64))[2] > 200  # blue now


@pytest.mark.parametrize("damage", ["not an image", "truncated", "empty"])
def test_a_file_that_cannot_be_decoded_has_no_thumbnail(tmp_path: Path, damage: str) -> None:
    broken = _image(tmp_path / "txt2img-images", "00001-1.png", (512, 512))
    data = broken.read_bytes()
    broken.write_bytes({"not an image": b"hello" * 100, "truncated": data[: len(data) // 3], "empty": b""}[damage])
    cache = Thumbnails(tmp_path)
    assert cache.get(broken) is None
    assert cache.many([broken, tmp_path / "missing.png"]) == [None, None]
    assert _thumb_files(tmp_path) == []
    assert not list((tmp_path / THUMBNAIL_DIR).rglob(".*"))  # no temp file left either


def test_a_failed_write_leaves_nothing_behind_and_shows_the_image_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _image(tmp_path / "txt2img-images", "00001-1.png", (512, 512))

    def disk_full(self: Image.Image, fp, *args, **kwargs) -> None:
        fp.write(b"half a jpeg")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    assert Thumbnails(tmp_path).get(source) == source  # History still shows it, just heavier
    assert _thumb_files(tmp_path) == [] and not list((tmp_path / THUMBNAIL_DIR).rglob(".*"))
    monkeypatch.undo()
    assert Thumbnails(tmp_path).get(source) != source  # made once the disk has room


def test_many_makes_a_cold_page_in_order_and_keeps_unreadable_ones_as_none(tmp_path: Path) -> None:
    folder = tmp_path / "txt2img-images"
    sources = [_image(folder, f"{i:05d}-{i}.png", (300 + i, 200), (i * 20, 0, 0)) for i in range(8)]
    (folder / "00003-3.png").write_bytes(b"broken")
    made = Thumbnails(tmp_path).many(sources)
    assert made[3] is None and all(made[i] is not None for i in range(8) if i != 3)
    for i, thumb in enumerate(made):
        if thumb is not None:
            with Image.open(thumb) as small:
                assert small.width == 256 and abs(small.convert("RGB").getpixel((5, 5))[0] - i * 20) < 12


def test_gallery_tiles_show_thumbnails_but_select_the_full_image(tmp_path: Path) -> None:
    index = HistoryIndex(tmp_path)
    good = [_saved(tmp_path, f"picture {i}", i) for i in range(3)]
    index.sync()
    good[1].write_bytes(b"damaged after it was indexed")
    tiles, kept = gallery_tiles(index, index.page().entries)
    assert [path for path, _ in kept] == [str(good[2]), str(good[0])]  # newest first; the damaged one has no tile
    assert [caption for _, caption in tiles] == ["picture 2", "picture 0"]
    for (thumb, _), (full, infotext) in zip(tiles, kept, strict=True):
        assert Path(thumb).parent.parent == tmp_path / THUMBNAIL_DIR and Path(thumb) != Path(full)
        with Image.open(thumb) as small:
            assert small.size == (256, 192)
        assert infotext.startswith("picture ") and "Seed:" in infotext
    link = file_link(kept[0][0])  # the selected tile's link: the full file, whatever its name holds
    assert f'href="/gradio_api/file={quote(kept[0][0])}"' in link and THUMBNAIL_DIR not in link
    assert file_link('/out/a"b<c>.png').endswith('download="a&quot;b&lt;c&gt;.png">📄 a&quot;b&lt;c&gt;.png</a>')


def test_deleting_an_image_through_history_deletes_its_thumbnail(tmp_path: Path) -> None:
    index = HistoryIndex(tmp_path)
    keep, drop = _saved(tmp_path, "keep", 1), _saved(tmp_path, "drop", 2)
    index.sync()
    kept_thumb, dropped_thumb = index.thumbnails.many([keep, drop])
    assert kept_thumb is not None and dropped_thumb is not None
    assert index.delete(drop) is True
    assert not drop.exists() and not dropped_thumb.exists()
    assert kept_thumb.exists() and _thumb_files(tmp_path) == [kept_thumb]
    # A file removed behind History's back loses its thumbnail when the index notices.
    keep.unlink()
    assert index.sync().removed == 1
    assert _thumb_files(tmp_path) == []


def test_the_history_scan_never_indexes_thumbnails(tmp_path: Path) -> None:
    index = HistoryIndex(tmp_path)
    sources = [_saved(tmp_path, f"p{i}", i) for i in range(3)]
    assert index.sync().added == 3
    index.thumbnails.many(sources)
    Image.new("RGBA", (8, 8)).save(tmp_path / "clear.png")
    index.thumbnails.get(tmp_path / "clear.png")  # a .webp one too
    assert {p.suffix for p in _thumb_files(tmp_path)} == {".jpg", ".webp"}
    (tmp_path / "clear.png").unlink()
    scanned = [rel for rel, _ in _scan(tmp_path)]
    assert len(scanned) == 3 and not any(THUMBNAIL_DIR in rel for rel in scanned)
    assert HistoryIndex(tmp_path).sync().added == 0 and index.count() == 3


def test_warm_up_and_make_later_have_the_newest_thumbnails_ready(tmp_path: Path) -> None:
    index = HistoryIndex(tmp_path)
    sources = [_saved(tmp_path, f"p{i}", i) for i in range(5)]
    index.sync()
    assert index.warm_thumbnails(count=3) == 3  # the newest three
    assert [index.thumbnails.cached(p) is not None for p in sources] == [False, False, True, True, True]
    assert index.warm_thumbnails(count=3) == 0  # nothing left to make

    fresh = _saved(tmp_path, "just saved", 9)
    index.add(fresh)  # as the service does after saving: the thumbnail is made on a background thread
    deadline = time.monotonic() + 10
    while index.thumbnails.cached(fresh) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert index.thumbnails.cached(fresh) is not None
