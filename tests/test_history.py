"""The history index against real PNG files: paging, search and filters, and the files staying the truth."""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime
from pathlib import Path

from PIL import Image

from webui.outputs.history import INDEX_NAME, HistoryIndex
from webui.outputs.infotext import format_infotext
from webui.outputs.saving import save_image


def _save(root: Path, prompt: str, seed: int, *, mode: str = "txt2img", model: str = "tiny", when: float = 0.0) -> Path:
    params = {"Steps": 20, "Sampler": "Euler a", "CFG scale": 7, "Seed": seed, "Size": "64x48", "Model": model}
    if mode == "inpaint":
        params["Mask blur"] = 4
    text = format_infotext(prompt, "ugly", params)
    path = save_image(Image.new("RGB", (64, 48), (seed % 256, 0, 0)), root, mode, seed, text)
    if when:
        os.utime(path, (when, when))
    return path


def test_added_images_page_newest_first_with_their_parameters(tmp_path: Path) -> None:
    index = HistoryIndex(tmp_path)
    paths = [_save(tmp_path, f"a cat number {i}", seed=i, when=1_700_000_000 + i) for i in range(5)]
    for path in paths:
        index.add(path)
    first = index.page(0, per_page=2)
    assert first.total == 5 and first.pages == 3
    assert [e.seed for e in first.entries] == [4, 3]
    assert [e.seed for e in index.page(2, per_page=2).entries] == [0]
    entry = first.entries[0]
    assert entry.path == paths[4] and entry.mode == "txt2img"
    assert (entry.prompt, entry.negative_prompt, entry.model) == ("a cat number 4", "ugly", "tiny")
    assert (entry.width, entry.height, entry.sampler, entry.steps, entry.cfg_scale) == (64, 48, "Euler a", 20, 7.0)
    assert entry.when == datetime.fromtimestamp(1_700_000_004)


def test_search_and_filters_narrow_the_page_and_its_total(tmp_path: Path) -> None:
    index = HistoryIndex(tmp_path)
    day = 1_700_000_000.0
    for path in (
        _save(tmp_path, "a red fox in snow", 1, model="alpha", when=day),
        _save(tmp_path, "a red barn", 2, model="beta", when=day + 86400),
        _save(tmp_path, "blue sky 100%_done", 3, mode="img2img", model="alpha", when=day + 2 * 86400),
        _save(tmp_path, "a red rose", 4, mode="inpaint", model="beta", when=day + 3 * 86400),
    ):
        index.add(path)
    assert {e.seed for e in index.page(search="RED").entries} == {1, 2, 4}
    assert {e.seed for e in index.page(search="red barn").entries} == {2}  # every word must match
    assert {e.seed for e in index.page(search="100%_").entries} == {3}  # LIKE wildcards are literal
    assert index.page(search="ugly").total == 0  # the prompt only, not the negative
    assert {e.seed for e in index.page(model="alpha").entries} == {1, 3}
    assert {e.seed for e in index.page(mode="inpaint").entries} == {4}
    assert {e.seed for e in index.page(mode="img2img").entries} == {3}
    assert {e.seed for e in index.page(since=day + 86400, until=day + 3 * 86400).entries} == {2, 3}
    assert index.page(search="red", model="beta").total == 2
    assert index.models() == ["alpha", "beta"]


def test_a_missing_index_is_rebuilt_from_the_pngs_infotext(tmp_path: Path) -> None:
    _save(tmp_path, "first", 11)
    _save(tmp_path, "second", 12, mode="inpaint")
    (tmp_path / "txt2img-images" / "notes.txt").write_text("not an image")
    (tmp_path / "txt2img-images" / ".00009.png.tmp").write_bytes(b"half")  # a save in progress
    index = HistoryIndex(tmp_path)
    report = index.sync()
    assert (report.added, report.removed, report.rebuilt) == (2, 0, True)
    assert {(e.prompt, e.seed, e.mode) for e in index.page().entries} == {
        ("first", 11, "txt2img"),
        ("second", 12, "inpaint"),
    }
    assert index.sync() == type(report)(0, 0, False)  # nothing changed, nothing read again


def test_a_file_deleted_behind_its_back_never_shows_and_sync_drops_the_rest(tmp_path: Path) -> None:
    index = HistoryIndex(tmp_path)
    paths = [_save(tmp_path, f"p{i}", i, when=1_700_000_000 + i) for i in range(4)]
    for path in paths:
        index.add(path)
    paths[3].unlink()
    page = index.page(0, per_page=2)
    assert [e.seed for e in page.entries] == [2, 1] and page.total == 3
    paths[0].unlink()
    assert index.sync().removed == 1
    assert index.count() == 2


def test_a_corrupt_index_is_set_aside_and_rebuilt(tmp_path: Path) -> None:
    _save(tmp_path, "kept", 5)
    (tmp_path / INDEX_NAME).write_bytes(b"this is not a database" * 100)
    index = HistoryIndex(tmp_path)
    assert index.sync().added == 1
    assert [e.prompt for e in index.page().entries] == ["kept"]
    assert list(tmp_path.glob(f"{INDEX_NAME}.broken-*"))


def test_an_index_of_another_schema_version_is_rebuilt(tmp_path: Path) -> None:
    _save(tmp_path, "kept", 5)
    with sqlite3.connect(tmp_path / INDEX_NAME) as db:
        db.execute("CREATE TABLE images (path TEXT)")
        db.execute("PRAGMA user_version = 99")
    index = HistoryIndex(tmp_path)
    assert index.sync().added == 1 and index.count() == 1


def test_delete_removes_the_file_and_its_row_together_and_nothing_outside(tmp_path: Path) -> None:
    index = HistoryIndex(tmp_path / "outputs")
    keep, drop = _save(tmp_path / "outputs", "keep", 1), _save(tmp_path / "outputs", "drop", 2)
    index.sync()
    outside = tmp_path / "elsewhere.png"
    Image.new("RGB", (8, 8)).save(outside)
    assert index.delete(drop) is True
    assert not drop.exists() and keep.exists()
    assert [e.prompt for e in index.page().entries] == ["keep"]
    assert index.delete(outside) is False and outside.exists()
    assert index.delete(tmp_path / "outputs" / ".." / "elsewhere.png") is False and outside.exists()
