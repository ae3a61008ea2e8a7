"""The Settings tab's values: validated, persisted atomically, applied to saving and previews."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from webui.errors import InvalidRequest
from webui.outputs.infotext import read_infotext
from webui.preferences import FILE_NAME, Preferences, PreferencesStore
from webui.service.service import GenerationService
from webui.settings import Settings
from webui.types import GenerationRequest


def test_changes_are_saved_and_read_back_by_a_new_store(tmp_path: Path) -> None:
    store = PreferencesStore(tmp_path)
    assert store.current == Preferences()  # no file yet: the defaults
    store.update(output_format="jpg", jpeg_quality=80, preview_every=0, default_sampler="euler a")
    again = PreferencesStore(tmp_path).current
    assert (again.output_format, again.jpeg_quality, again.preview_every) == ("jpg", 80, 0)
    assert again.default_sampler == "Euler a"  # A1111's aliases are stored by their canonical name
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        ({"jpeg_quality": 0}, "jpeg_quality", "greater than or equal to 1"),
        ({"output_format": "gif"}, "output_format", "'png', 'jpg' or 'webp'"),
        ({"txt2img_folder": "/etc"}, "txt2img_folder", "inside the data folder"),
        ({"img2img_folder": "../../home"}, "img2img_folder", "inside the data folder"),
        ({"img2img_folder": "C:/Users"}, "img2img_folder", "inside the data folder"),
        ({"preview_every": 1000}, "preview_every", "less than or equal to 100"),
        ({"default_sampler": "Euler z"}, "default_sampler", "Euler z"),
        ({"colour_scheme": "dark"}, "colour_scheme", "is not a setting"),
        ({"controlnet_units": 0}, "controlnet_units", "greater than or equal to 1"),
        ({"controlnet_units": 9}, "controlnet_units", "less than or equal to 8"),
    ],
)
def test_a_bad_value_names_the_setting_and_changes_nothing(tmp_path: Path, change: dict, field: str, text: str) -> None:
    store = PreferencesStore(tmp_path)
    store.update(jpeg_quality=70)
    before = (tmp_path / FILE_NAME).read_bytes()
    with pytest.raises(InvalidRequest) as err:
        store.update(**change, default_steps=9)
    assert err.value.field == field and text in str(err.value)
    assert store.current.default_steps == 20 and (tmp_path / FILE_NAME).read_bytes() == before


def test_a_broken_file_is_set_aside_and_a_bad_value_in_it_is_dropped_alone(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_text("{not json")
    assert PreferencesStore(tmp_path).current == Preferences()
    assert list(tmp_path.glob(f"{FILE_NAME}.broken-*"))
    (tmp_path / FILE_NAME).write_text(
        json.dumps({"jpeg_quality": 5000, "output_format": "webp", "txt2img_folder": ".."})
    )
    loaded = PreferencesStore(tmp_path).current
    assert (loaded.output_format, loaded.jpeg_quality, loaded.txt2img_folder) == ("webp", 90, "txt2img-images")


def test_saving_follows_the_format_folder_and_infotext_settings(tmp_path: Path) -> None:
    from tests.test_service import FakeEngine

    service = GenerationService(Settings(outputs_dir=tmp_path / "data"), FakeEngine()).start()
    try:
        service.update_preferences(output_format="webp", txt2img_folder="mine/pictures")
        request = GenerationRequest.build(prompt="a fox", width=64, height=64, steps=2, seed=3)
        (path,) = service.generate(request, timeout=10).paths
        assert path.suffix == ".webp" and path.parent.parent == tmp_path / "data" / "mine" / "pictures"
        assert read_infotext(Image.open(path)).startswith("a fox\n")
        assert service.history.page().entries[0].path == path

        service.update_preferences(output_format="jpg", save_infotext=False)
        (bare,) = service.generate(request, timeout=10).paths
        assert bare.suffix == ".jpg" and read_infotext(Image.open(bare)) is None

        service.update_preferences(preview_every=0)
        job = service.submit(GenerationRequest.build(prompt="x", width=64, height=64, steps=4, save_images=False))
        assert all(event.preview is None for event in job.updates(timeout=10))
    finally:
        service.stop()


def test_a_folder_that_is_a_symlink_out_of_the_data_folder_is_refused(tmp_path: Path) -> None:
    """``..`` and absolute paths are refused by their text; a subfolder linked elsewhere looks innocent as text, so
    the real path is what is checked (a link that stays inside is fine)."""
    data, outside = tmp_path / "data", tmp_path / "elsewhere"
    (data / "inside").mkdir(parents=True)
    outside.mkdir()
    (data / "escape").symlink_to(outside, target_is_directory=True)
    (data / "alias").symlink_to(data / "inside", target_is_directory=True)
    store = PreferencesStore(data)
    for value in ("escape", "escape/deeper"):
        with pytest.raises(InvalidRequest) as err:
            store.update(txt2img_folder=value, default_steps=9)
        assert err.value.field == "txt2img_folder" and "inside the data folder" in str(err.value)
        assert str(outside) in str(err.value)
    assert store.current.txt2img_folder == "txt2img-images" and not (data / FILE_NAME).exists()
    assert store.update(img2img_folder="alias/pictures").img2img_folder == "alias/pictures"


def test_a_default_folder_linked_to_another_disk_by_the_admin_keeps_working(tmp_path: Path) -> None:
    data, disk = tmp_path / "data", tmp_path / "big-disk"
    data.mkdir()
    disk.mkdir()
    (data / "txt2img-images").symlink_to(disk, target_is_directory=True)
    store = PreferencesStore(data)
    saved = store.update(txt2img_folder="txt2img-images", jpeg_quality=70)  # the form sends every value back
    assert (saved.txt2img_folder, saved.jpeg_quality) == ("txt2img-images", 70)
    with pytest.raises(InvalidRequest) as err:
        store.update(img2img_folder="txt2img-images")  # but no other setting may be pointed at the link
    assert err.value.field == "img2img_folder"
