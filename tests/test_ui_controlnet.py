"""ControlNet units, hires fix and SD upscale in the page, without a browser: widget values to requests, errors named
as the page numbers units, previews, the gallery's detected maps, the ControlNet tab's buttons and filling the form
back from an infotext."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.test_service import FakeEngine
from webui.choices import ResizeMode
from webui.controlnet.units import DEFAULT_RESOLUTION, MAX_UNITS, ControlMode, ControlNetUnit, HiresOption
from webui.errors import InvalidRequest
from webui.outputs.infotext import format_infotext, parse_infotext
from webui.preferences import Preferences
from webui.service.service import GenerationService
from webui.settings import Settings
from webui.types import Mode
from webui.ui import controlnet_panel as panel
from webui.ui import forms
from webui.ui.generate_tab import RUN_OUTPUTS, gallery_selection, run_job, selected_image
from webui.ui.page import send_selected, txt2img_fill
from webui.ui.widgets import FieldSlider

KEEP = {"__type__": "update"}
TXT2IMG = {
    "prompt": "a red circle",
    "negative_prompt": "",
    "sampler_name": "Euler a",
    "scheduler": "Automatic",
    "steps": 2.0,
    "width": 64.0,
    "height": 64.0,
    "n_iter": 1.0,
    "batch_size": 1.0,
    "cfg_scale": 7.0,
    "seed": 3.0,
}


def _square(size: int = 64) -> Image.Image:
    """A white square on black: canny finds its four edges."""
    image = Image.new("RGB", (size, size), (0, 0, 0))
    ImageDraw.Draw(image).rectangle((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=(255, 255, 255))
    return image


def _unit(**change: Any) -> dict[str, Any]:
    """One unit's widget values as the browser sends them (sliders as floats), canny on a square."""
    values = {
        "enabled": True,
        "image": _square(),
        "module": "canny",
        "model": "control_tiny.safetensors",
        "weight": 0.8,
        "guidance_start": 0.1,
        "guidance_end": 0.9,
        "control_mode": "My prompt is more important",
        "resize_mode": "Just Resize",
        "pixel_perfect": False,
        "processor_res": 256.0,
        "threshold_a": 50.0,
        "threshold_b": 150.0,
        "hr_option": "Low res only",
    }
    return {**values, **change}


def _form(*units: dict[str, Any], **change: Any) -> dict[str, Any]:
    """The txt2img form's values with ``units`` (a disabled default for each one not given)."""
    values = {**TXT2IMG, **change}
    for index, unit in enumerate(units):
        values.update({forms.unit_key(index, name): value for name, value in unit.items()})
    return values


# -- widgets to a request ---------------------------------------------------------------------------------------


def test_only_enabled_units_go_into_the_request_with_their_widget_values_read() -> None:
    off = _unit(enabled=False, threshold_a=999.0, model="None")  # leftovers of a disabled unit block nothing
    request = forms.build_request(Mode.TXT2IMG, _form(off, _unit()))
    (unit,) = request.controlnet_units
    assert (unit.module, unit.model, unit.weight, unit.guidance_start, unit.guidance_end) == (
        "canny",
        "control_tiny.safetensors",
        0.8,
        0.1,
        0.9,
    )
    assert unit.resize_mode is ResizeMode.JUST_RESIZE and unit.control_mode is ControlMode.PROMPT
    assert unit.hr_option is HiresOption.LOW_RES_ONLY and unit.processor_res == 256
    assert isinstance(unit.processor_res, int) and (unit.threshold_a, unit.threshold_b) == (50.0, 150.0)
    assert unit.image is not None and unit.image.size == (64, 64)
    assert forms.build_request(Mode.TXT2IMG, _form(off)).controlnet_units == []


def test_a_preprocessor_sends_minus_one_for_the_settings_it_does_not_have() -> None:
    """The hidden sliders keep the last preprocessor's values; the request (and so the infotext) gets the extension's
    -1 ("not used") for them."""
    (invert,) = forms.build_request(Mode.TXT2IMG, _form(_unit(module="invert"))).controlnet_units
    assert (invert.processor_res, invert.threshold_a, invert.threshold_b) == (256, -1, -1)
    (none,) = forms.build_request(Mode.TXT2IMG, _form(_unit(module="none"))).controlnet_units
    assert (none.processor_res, none.threshold_a, none.threshold_b) == (-1, -1, -1)
    (blur,) = forms.build_request(Mode.TXT2IMG, _form(_unit(module="blur_gaussian", threshold_a=3.5))).controlnet_units
    assert (blur.threshold_a, blur.threshold_b) == (3.5, -1)


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        ({"threshold_a": 300.0}, "controlnet_units[1].threshold_a", "Canny Low Threshold of 'canny' must be between 1"),
        ({"weight": 2.5}, "controlnet_units[1].weight", "between 0 and 2"),
        ({"guidance_start": 0.95}, "controlnet_units[1].guidance_start", "must not be after guidance_end"),
        ({"processor_res": 32.0}, "controlnet_units[1].processor_res", "between 64 and 2048"),
        ({"processor_res": 100.5}, "controlnet_units[1].processor_res", "integer"),
        ({"control_mode": "Louder"}, "controlnet_units[1].control_mode", "'Balanced'"),
        ({"resize_mode": "Stretch"}, "controlnet_units[1].resize_mode", "'Crop and Resize'"),
        ({"model": "None"}, "controlnet_units[1].model", "choose a ControlNet model"),
        ({"image": None}, "controlnet_units[1].image", "a control image is required in txt2img"),
        ({"module": "sharpen"}, "controlnet_units[1].module", "unknown preprocessor 'sharpen'"),
        ({"weight": None}, "controlnet_units[1].weight", "a number is required"),
    ],
)
def test_a_bad_unit_value_names_the_field_of_the_unit_as_the_page_numbers_it(
    change: dict[str, Any], field: str, text: str
) -> None:
    """Unit 1 is the request's first unit (unit 0 is off), but the message names the unit the user sees."""
    with pytest.raises(InvalidRequest) as err:
        forms.build_request(Mode.TXT2IMG, _form(_unit(enabled=False), _unit(**change)))
    assert err.value.field == field and text in str(err.value), str(err.value)


def test_img2img_units_use_the_input_image_and_have_no_hires_option() -> None:
    assert "hr_option" not in forms.unit_fields(Mode.IMG2IMG) and "hr_option" in forms.unit_fields(Mode.TXT2IMG)
    assert forms.unit_key(2, "threshold_a") in forms.fields_for(Mode.INPAINT, 3)
    unit = {k: v for k, v in _unit(image=None).items() if k != "hr_option"}
    values = {**_form(unit), "init_image": _square(), "resize_mode": "Just resize", "denoising_strength": 0.5}
    (only,) = forms.build_request(Mode.IMG2IMG, values).controlnet_units
    assert only.image is None  # the engine gives it img2img's input, as the extension does


def test_page_unit_names_turn_request_numbers_into_the_pages() -> None:
    text = "controlnet_units[0].module: preprocessor 'openpose' needs x; controlnet_units[1].weight"
    assert forms.page_unit_names(text, [2, 5]) == (
        "controlnet_units[2].module: preprocessor 'openpose' needs x; controlnet_units[5].weight"
    )
    assert forms.page_unit_names("controlnet_units[3].model", [1]) == "controlnet_units[3].model"  # not one of ours


# -- hires fix and SD upscale --------------------------------------------------------------------------------------

HIRES = {
    "enable_hr": True,
    "hr_upscaler": "Latent (bicubic)",
    "hr_second_pass_steps": 3.0,
    "denoising_strength": 0.55,
    "hr_scale": 1.5,
    "hr_resize_x": 0.0,
    "hr_resize_y": 0.0,
    "hr_sampler_name": "Use same sampler",
    "hr_scheduler": "Uniform",
    "hr_prompt": "",
    "hr_negative_prompt": "blurry",
}


def test_hires_fix_fields_go_into_the_request_only_when_enabled() -> None:
    request = forms.build_request(Mode.TXT2IMG, {**TXT2IMG, **HIRES})
    assert request.enable_hr and (request.hr_upscaler, request.hr_second_pass_steps) == ("Latent (bicubic)", 3)
    assert (request.denoising_strength, request.hr_scale, request.hr_resize_x) == (0.55, 1.5, 0)
    assert (request.hr_sampler_name, request.hr_scheduler, request.hr_negative_prompt) == ("", "Uniform", "blurry")
    assert request.hires_plan() is not None and (request.hires_plan().width, request.hires_plan().height) == (96, 96)
    off = forms.build_request(Mode.TXT2IMG, {**TXT2IMG, **HIRES, "enable_hr": False, "hr_scale": 99.0})
    assert not off.enable_hr and off.hires_plan() is None  # a leftover out-of-range value in a closed section
    with pytest.raises(InvalidRequest) as err:
        forms.build_request(Mode.TXT2IMG, {**TXT2IMG, **HIRES, "hr_scale": 5.0})
    assert err.value.field == "hr_scale"


@pytest.mark.parametrize(
    ("size", "text"),
    [
        ((512, 512, 2, 0, 0), "from 512x512 to 1024x1024"),
        ((64, 64, 2.0, 0.0, 0.0), "from 64x64 to 128x128"),
        ((512, 768, 2, 1024, 0), "from 512x768 to 1024x1536"),  # one side given: the aspect ratio stays
        ((512, 768, 2, 1024, 1024), "from 512x768 to 1024x1024 (cropped to fill)"),
        ((None, 512, 2, 0, 0), ""),
    ],
)
def test_the_hires_size_line_follows_the_engines_rule(size: tuple, text: str) -> None:
    assert forms.hires_size_text(*size) == text


def test_the_script_dropdown_turns_sd_upscale_on() -> None:
    base = {**TXT2IMG, "init_image": _square(), "resize_mode": "Just resize", "denoising_strength": 0.3}
    upscale = {"sd_upscale_overlap": 16.0, "sd_upscale_scale": 2.0, "sd_upscale_upscaler": "Nearest"}
    assert not forms.build_request(Mode.IMG2IMG, {**base, **upscale, "sd_upscale": "None"}).sd_upscale
    request = forms.build_request(Mode.IMG2IMG, {**base, **upscale, "sd_upscale": "SD upscale"})
    assert request.sd_upscale and (request.sd_upscale_overlap, request.sd_upscale_upscaler) == (16, "Nearest")
    assert request.sd_upscale_size() == (128, 128)
    with pytest.raises(InvalidRequest) as err:  # more than half the 64 px tile
        forms.build_request(Mode.IMG2IMG, {**base, **upscale, "sd_upscale": "SD upscale", "sd_upscale_overlap": 48.0})
    assert err.value.field == "sd_upscale_overlap"


# -- the preprocessor's sliders ------------------------------------------------------------------------------------


def test_the_sliders_follow_the_preprocessor() -> None:
    res, a, b = panel.slider_updates("canny")
    assert res["visible"] and res["value"] == 512
    assert (a["label"], a["minimum"], a["maximum"], a["value"], a["step"], a["visible"]) == (
        "Canny Low Threshold",
        1,
        255,
        100,
        1,
        True,
    )
    assert (b["label"], b["value"]) == ("Canny High Threshold", 200)
    _, sigma, hidden = panel.slider_updates("blur_gaussian", threshold_a=3.0)
    assert (sigma["label"], sigma["step"], sigma["value"], hidden) == ("Sigma", 0.01, 3.0, {**KEEP, "visible": False})
    res, a, b = panel.slider_updates("none")
    assert not res["visible"] and not a["visible"] and not b["visible"]
    assert not panel.slider_updates("canny", pixel_perfect=True)[0]["visible"]  # pixel perfect derives it
    shown = panel.slider_updates("canny", processor_res=384, pixel_perfect=True)[0]  # pixel perfect's toggle
    assert (shown["visible"], shown["value"]) == (False, 384)  # its value kept for when it is unticked
    assert panel.slider_updates("sharpen", threshold_a=7) == (KEEP, {**KEEP, "value": 7}, KEEP)  # unknown: values only


def test_the_field_slider_leaves_range_checks_to_the_request() -> None:
    slider = FieldSlider(1, 255, value=100, step=1, render=False)
    assert slider.preprocess(300) == 300 and slider.get_block_name() == "slider"
    assert FieldSlider(0, 10, step=1, precision=0, render=False).preprocess(3.0) == 3


# -- handlers on a service -----------------------------------------------------------------------------------------


@dataclass
class MapEngine(FakeEngine):
    """The fake engine of tests/test_service.py, with a ControlNet folder and a detected map per enabled unit."""

    controlnets: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.weights.controlnets = self.controlnets
        self.weights.upscalers = SimpleNamespace(check=lambda name, field: None, names=lambda: ["None", "Lanczos"])

    def generate(self, request, on_step=None, notes=None, maps=None):
        for unit in request.controlnet_units:
            if maps is not None and unit.enabled:
                maps.append(Image.new("RGB", (request.width, request.height), (255, 255, 255)))
        yield from super().generate(request, on_step, notes, maps)


@pytest.fixture
def controlnet_folder(tmp_path: Path) -> Path:
    """A ControlNet folder listing one model (a small safetensors file; nothing here loads it)."""
    from safetensors.numpy import save_file

    folder = tmp_path / "models" / "ControlNet"
    folder.mkdir(parents=True)
    save_file(
        {"input_hint_block.0.weight": np.zeros((4, 3, 3, 3), np.float32)}, str(folder / "control_tiny.safetensors")
    )
    return folder


@pytest.fixture
def service(tmp_path: Path, controlnet_folder: Path) -> Iterator[GenerationService]:
    from webui.controlnet.models import ControlNetLibrary
    from webui.weights.hashing import HashCache

    library = ControlNetLibrary(controlnet_folder, HashCache(tmp_path / "hashes.json"))
    library.registry.refresh()
    settings = Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "out")
    running = GenerationService(settings, MapEngine(controlnets=library)).start()
    yield running
    running.stop()


def _run(service: GenerationService, values: dict[str, Any]) -> list[dict[str, Any]]:
    names = list(values)
    updates = run_job(service, Mode.TXT2IMG, names, "me", None, None, 1, [values[n] for n in names])
    return [dict(zip(RUN_OUTPUTS, update, strict=True)) for update in updates]


def test_generate_shows_the_detected_maps_after_the_images_and_they_carry_no_infotext(
    service: GenerationService,
) -> None:
    last = _run(service, _form(_unit(enabled=False), _unit(), n_iter=2.0))[-1]
    assert "Done in" in last["progress"], last["progress"]
    *images, detected = last["gallery"]
    assert len(images) == 2 and all(Path(path).is_file() for path, _ in images)
    assert detected[1] == "ControlNet 0 detected map" and isinstance(detected[0], Image.Image)
    kept = last["results"]
    assert len(kept) == 2  # images only: the info, link and send buttons never see a map
    assert gallery_selection(kept, 2) == ("", "", 2)
    info, link, index = gallery_selection(kept, 1)
    assert info == kept[1][1] and Path(kept[1][0]).name in link and index == 1
    assert selected_image(kept, 2) is None and selected_image(kept, 1) == kept[1][0]
    with pytest.warns(UserWarning, match="detected maps are not sent"):
        assert send_selected(kept, 2, "img2img", str) == (KEEP, KEEP)
    value, tabs = send_selected(kept, 0, "img2img", str)
    assert value == kept[0][0] and tabs.selected == "img2img"


def test_generate_with_a_bad_unit_names_it_and_starts_nothing(service: GenerationService) -> None:
    with pytest.warns(UserWarning, match=r"controlnet_units\[2\]\.threshold_b"):
        (only,) = _run(service, _form(_unit(enabled=False), _unit(enabled=False), _unit(threshold_b=0.0)))
    assert "easel-error" in only["progress"] and "controlnet_units[2].threshold_b" in only["progress"]
    assert only["job_id"] is None and service.engine.runs == []


def test_a_model_missing_from_the_folder_is_named_as_the_page_numbers_the_unit(service: GenerationService) -> None:
    with pytest.warns(UserWarning):
        (only,) = _run(service, _form(_unit(enabled=False), _unit(model="gone.safetensors")))
    assert "controlnet_units[1].model: &#x27;gone.safetensors&#x27; not found" in only["progress"], only["progress"]


def test_a_unit_error_during_the_job_is_named_as_the_page_numbers_the_unit(service: GenerationService) -> None:
    service.engine.fail_with = InvalidRequest("controlnet_units[0].module", "preprocessor 'openpose' needs a file")
    last = _run(service, _form(_unit(enabled=False), _unit()))[-1]
    assert "controlnet_units[1].module: preprocessor" in last["progress"] and "easel-error" in last["progress"]


def test_preview_shows_the_units_map_at_the_tabs_size(service: GenerationService) -> None:
    update, message = panel.preview_unit(service, Mode.TXT2IMG, 0, _unit(), 96.0, 64.0, {})
    shown = update["value"]
    assert update["visible"] and shown.size == (96, 64)
    pixels = np.asarray(shown.convert("L"))
    assert set(np.unique(pixels)) == {0, 255} and 0 < (pixels == 255).mean() < 0.2  # edges, not a filled square
    assert "Detected map (canny): 96x64, preprocessor resolution 256" in message


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"image": None}, "controlnet_units[1].image: no control image"),
        ({"threshold_a": 0.0}, "controlnet_units[1].threshold_a"),
        ({"module": "openpose"}, "needs body_pose_model.pth in"),
    ],
)
def test_preview_errors_name_the_field_and_keep_the_last_map(
    service: GenerationService, change: dict[str, Any], text: str
) -> None:
    with pytest.warns(UserWarning):
        update, message = panel.preview_unit(service, Mode.TXT2IMG, 1, _unit(**change), 64, 64, {})
    assert update == KEEP and "easel-error" in message and text in message, message


def test_preview_in_img2img_uses_the_tabs_image_and_in_inpaint_its_mask(service: GenerationService) -> None:
    update, _ = panel.preview_unit(service, Mode.IMG2IMG, 0, _unit(image=None), 64, 64, {"init_image": _square()})
    assert np.asarray(update["value"].convert("L")).max() == 255
    mask = np.zeros((64, 64, 4), np.uint8)
    mask[:32] = 255  # the brush over the top half
    editor = {"background": _square(), "layers": [Image.fromarray(mask, "RGBA")], "composite": _square()}
    unit = _unit(image=None, module="inpaint")
    update, _ = panel.preview_unit(service, Mode.INPAINT, 0, unit, 64, 64, _inpaint_inputs(editor))
    marked = np.asarray(update["value"].convert("L"))
    assert marked[:32].max() == 0 and marked[32:].max() == 255  # the masked half is black, as the extension shows


def _inpaint_inputs(editor: dict[str, Any], area: str = "Whole picture") -> dict[str, Any]:
    """The inpaint tab's widgets a unit without an image reads, as the browser sends them."""
    return {
        "editor": editor,
        "mask_upload": None,
        "inpainting_mask_invert": "Inpaint masked",
        "inpaint_full_res": area,
        "inpaint_full_res_padding": 8.0,
        "mask_blur": 0.0,
    }


def test_preview_in_inpaint_only_masked_shows_the_area_the_job_denoises(service: GenerationService) -> None:
    grey = Image.new("RGB", (64, 64), (128, 128, 128))
    mask = np.zeros((64, 64, 4), np.uint8)
    mask[8:24, 8:24] = 255  # a 16 px square; with 8 px padding the job denoises (0, 0, 32, 32) at 64x64
    editor = {"background": grey, "layers": [Image.fromarray(mask, "RGBA")], "composite": grey}
    unit = _unit(image=None, module="inpaint")
    black = {}
    for area in ("Whole picture", "Only masked"):
        update, _ = panel.preview_unit(service, Mode.INPAINT, 0, unit, 64, 64, _inpaint_inputs(editor, area))
        black[area] = (np.asarray(update["value"].convert("L")) < 64).mean()  # grey is 128
    assert black["Whole picture"] == pytest.approx(1 / 16)  # the mask as painted
    assert black["Only masked"] == pytest.approx(1 / 4, abs=0.01)  # the crop, stretched to the tab's size


def test_the_controlnet_tab_previews_and_hands_its_setting_to_a_unit(
    service: GenerationService, tmp_path: Path
) -> None:
    path = tmp_path / "square.png"
    _square().save(path)
    detected, message = panel.tab_preview(service, str(path), "canny", 512.0, 80.0, 160.0, 128.0, 64.0)
    assert detected.size == (128, 64) and "Detected map (canny): 128x64" in message
    with pytest.warns(UserWarning, match="upload a control image first"):
        assert panel.tab_preview(service, None, "canny", 512, 80, 160, 64, 64)[0] == KEEP
    image, enabled, perfect, module, res, a, b = panel.use_in_unit(str(path), "canny", 384.0, 80.0, 160.0)
    assert (image, enabled, perfect, module["value"]) == (str(path), True, False, "canny")
    assert (res["value"], a["value"], a["label"], b["value"]) == (384.0, 80.0, "Canny Low Threshold", 160.0)
    assert panel.use_in_unit(None, "none", 512, 1, 1)[0] == KEEP  # no image: the unit keeps its own


def test_preprocessors_that_need_files_say_which_and_stay_listed(service: GenerationService) -> None:
    choices = dict((value, label) for label, value in panel.preprocessor_choices(service))
    assert choices["canny"] == "canny" and next(iter(choices)) == "none"
    assert choices["openpose"] == "openpose (needs body_pose_model.pth in models/annotators)"
    assert panel.model_choices(service) == [("None", "None"), ("control_tiny.safetensors", "control_tiny.safetensors")]


def test_a_controlnet_that_comes_with_easel_says_so(tmp_path: Path, controlnet_folder: Path) -> None:
    from webui.controlnet.models import ControlNetLibrary
    from webui.weights.hashing import HashCache

    shipped = tmp_path / "package" / "easel-demo-canny.safetensors"
    shipped.parent.mkdir()
    shutil.copy(controlnet_folder / "control_tiny.safetensors", shipped)
    library = ControlNetLibrary(controlnet_folder, HashCache(tmp_path / "hashes.json"), builtins=[shipped])
    library.registry.refresh()
    engine = MapEngine(controlnets=library)
    service = GenerationService(Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "out"), engine)
    assert service.controlnet_model_choices() == [
        ("control_tiny.safetensors", "control_tiny.safetensors"),
        ("easel-demo-canny.safetensors (built-in demo)", "easel-demo-canny.safetensors"),
    ]


def test_the_model_rescan_lists_a_new_file(service: GenerationService, controlnet_folder: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(1, np.float32)}, str(controlnet_folder / "control_new.safetensors"))
    assert len(service.controlnet_model_choices()) == 1  # not rescanned yet
    names = [name for _, name in service.controlnet_model_choices(refresh=True)]
    assert names == ["control_new.safetensors", "control_tiny.safetensors"]
    assert service.controlnet_model_name("control_new") == "control_new.safetensors"


def test_the_preprocessor_menus_are_refreshed_by_a_fresh_page_and_the_rescan(tmp_path: Path) -> None:
    from webui.service.factory import create_service
    from webui.ui.page import build_ui

    (tmp_path / "models" / "Stable-diffusion").mkdir(parents=True)
    settings = Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "out", demo_model=False)
    service = create_service(settings, start=False)
    page = build_ui(service)
    (load,) = [f for f in page.fns.values() if getattr(f.fn, "__name__", "") == "on_load"]
    menus = ("txt2img_controlnet_0_module", "inpaint_controlnet_2_module", "controlnet_module")

    def openpose_labels() -> list[str]:
        filled = {o.elem_id: v for o, v in zip(load.outputs, load.fn(None), strict=True)}
        return [dict((value, label) for label, value in filled[menu]["choices"])["openpose"] for menu in menus]

    assert all("(needs body_pose_model.pth" in label for label in openpose_labels())
    service.settings.annotators_path.mkdir(parents=True, exist_ok=True)
    (service.settings.annotators_path / "body_pose_model.pth").write_bytes(b"")  # copied in while Easel runs
    assert openpose_labels() == ["openpose"] * 3


# -- an infotext back into the form --------------------------------------------------------------------------------


def _infotext(*units: ControlNetUnit, **params: Any) -> str:
    base = {"Steps": 2, "Sampler": "Euler a", "CFG scale": 7, "Seed": 5, "Size": "64x64"}
    for number, unit in enumerate(units):
        base[f"ControlNet {number}"] = unit.infotext("control_tiny [0123456789]", 512)
    return format_infotext("a red circle", "", {**base, **params})


def _values(text: str, units: int = 0) -> dict[str, Any]:
    return forms.values_from_infotext(parse_infotext(text), units=units)


def test_an_infotext_fills_units_and_disables_the_others() -> None:
    canny = ControlNetUnit(
        module="canny",
        model="m",
        weight=0.6,
        threshold_a=40,
        guidance_end=0.5,
        control_mode="ControlNet is more important",
    )
    blur = ControlNetUnit(module="blur_gaussian", model="m", resize_mode="Resize and Fill", pixel_perfect=True)
    values = _values(_infotext(canny, blur), units=3)
    key = forms.unit_key
    assert values[key(0, "enabled")] and values[key(1, "enabled")] and values[key(2, "enabled")] is False
    assert (values[key(0, "module")], values[key(0, "model")], values[key(0, "weight")]) == (
        "canny",
        "control_tiny [0123456789]",
        0.6,
    )
    assert (values[key(0, "threshold_a")], values[key(0, "threshold_b")], values[key(0, "guidance_end")]) == (
        40,
        200,
        0.5,
    )
    assert values[key(0, "control_mode")] == "ControlNet is more important"
    assert values[key(0, "resize_mode")] == "Crop and Resize" and values[key(0, "processor_res")] == 512
    assert (values[key(1, "threshold_a")], values[key(1, "resize_mode")], values[key(1, "pixel_perfect")]) == (
        9.0,  # the text's -1 is the preprocessor's default
        "Resize and Fill",
        True,
    )
    assert key(0, "image") not in values  # a picture cannot come back from a text
    assert _values(_infotext(canny), units=0).keys().isdisjoint({key(0, "enabled")})
    unknown = forms.unit_widget_values({"module": "sharpen", "threshold_a": 7.0})  # not Easel's: as the text says
    assert (unknown["module"], unknown["threshold_a"], unknown["threshold_b"], unknown["processor_res"]) == (
        "sharpen",
        7.0,
        -1,
        DEFAULT_RESOLUTION,
    )
    old = _infotext(canny).replace("Crop and Resize", "Inner Fit (Scale to Fit)")  # the extension's old label
    assert _values(old, units=1)[key(0, "resize_mode")] == "Crop and Resize"


def test_an_infotext_sets_hires_fix_on_with_a1111s_defaults_for_what_it_leaves_out_or_off() -> None:
    params = {"Denoising strength": 0.45, "Hires upscale": 2, "Hires upscaler": "Latent", "Hires prompt": "sharp"}
    values = _values(_infotext(**params))
    assert values["enable_hr"] and (values["hr_scale"], values["hr_upscaler"], values["denoising_strength"]) == (
        2.0,
        "Latent",
        0.45,
    )
    assert (values["hr_sampler_name"], values["hr_scheduler"], values["hr_prompt"]) == (
        "Use same sampler",
        "Use same scheduler",
        "sharp",
    )
    assert (values["hr_second_pass_steps"], values["hr_resize_x"], values["hr_negative_prompt"]) == (0, 0, "")
    resized = _values(_infotext(**{"Hires resize": "128x96", "Hires sampler": "Euler"}))
    assert (resized["hr_resize_x"], resized["hr_resize_y"], resized["hr_sampler_name"]) == (128, 96, "Euler")
    assert _values(_infotext())["enable_hr"] is False


def test_send_to_txt2img_fills_units_with_the_listed_model_and_the_preprocessors_sliders(
    service: GenerationService,
) -> None:
    names = list(forms.fields_for(Mode.TXT2IMG, 2))
    canny = ControlNetUnit(module="canny", model="m", threshold_a=300)  # out of range: kept, for Generate to name
    text = _infotext(canny).replace("control_tiny [0123456789]", "control_tiny [ffffffffff]")
    *fields, _, tabs, hires, controlnet, _ = txt2img_fill(service, names, text, 2)
    filled = dict(zip(names, fields, strict=True))
    key = forms.unit_key
    assert filled[key(0, "enabled")]["value"] is True and filled[key(1, "enabled")]["value"] is False
    assert filled[key(0, "model")]["value"] == "control_tiny.safetensors"  # a stale hash, found by the stem
    assert (
        filled[key(0, "threshold_a")]["value"] == 300
        and filled[key(0, "threshold_a")]["label"] == "Canny Low Threshold"
    )
    assert filled[key(0, "processor_res")]["visible"] is True and filled[key(0, "image")] == KEEP
    assert filled["enable_hr"]["value"] is False and tabs.selected == "txt2img"
    form = {**_form(), **{n: u.get("value") for n, u in filled.items() if "value" in u}, key(0, "image"): _square()}
    with pytest.raises(InvalidRequest) as err:  # Generate then names what to correct
        forms.build_request(Mode.TXT2IMG, form)
    assert err.value.field == "controlnet_units[0].threshold_a"
    assert hires == KEEP and controlnet == {**KEEP, "open": True}  # opened to show what was filled in
    _, _, hires, controlnet, _ = txt2img_fill(service, names, _infotext(**{"Hires upscale": 2}), 2)[-5:]
    assert hires == {**KEEP, "open": True, "label": "Hires. fix (on)"} and controlnet == KEEP


# -- the unit count ------------------------------------------------------------------------------------------------


def test_the_unit_count_is_a_setting_applied_when_the_page_is_built(tmp_path: Path) -> None:
    import gradio as gr

    from webui.service.factory import create_service
    from webui.ui.page import build_ui
    from webui.ui.settings_tab import FIELDS, save_settings

    assert (
        Preferences().controlnet_units == 3 and Preferences.model_fields["controlnet_units"].metadata[1].le == MAX_UNITS
    )
    (tmp_path / "models" / "Stable-diffusion").mkdir(parents=True)
    settings = Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "out", demo_model=False)
    service = create_service(settings, start=False)
    names = [name for name, _ in FIELDS]
    form = {name: getattr(service.preferences.current, name) for name in names}
    status, *_ = save_settings(service, names, list({**form, "controlnet_units": 2}.values()), built_units=3)
    assert "The tabs get 2 ControlNet unit(s) at the next start." in status
    again = save_settings(service, names, list({**form, "controlnet_units": 2}.values()), built_units=3)
    assert "The tabs get 2 ControlNet unit(s) at the next start." in again[0]  # the page still shows 3
    built_with_two = save_settings(service, names, list({**form, "controlnet_units": 2}.values()), built_units=2)
    assert "next start" not in built_with_two[0]
    page = build_ui(service)
    units = [b.label for b in page.blocks.values() if isinstance(b, gr.Tab) and b.label.startswith("ControlNet Unit")]
    assert units == ["ControlNet Unit 0", "ControlNet Unit 1"] * 3
    sliders = [b for b in page.blocks.values() if getattr(b, "elem_id", None) == "txt2img_controlnet_1_threshold_a"]
    assert len(sliders) == 1 and isinstance(sliders[0], FieldSlider)


def test_reload_fills_the_model_and_upscaler_menus(tmp_path: Path, controlnet_folder: Path) -> None:
    """A page opened after files were added lists them (the page's load rescans, as the top bar's 🔄 does)."""
    from webui.service.factory import create_service
    from webui.ui.page import build_ui

    (tmp_path / "models" / "Stable-diffusion").mkdir(parents=True)
    settings = Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "out", demo_model=False)
    service = create_service(settings, start=False)
    page = build_ui(service)
    (controlnet_folder / "control_tiny.safetensors").rename(controlnet_folder / "control_renamed.safetensors")
    (load,) = [f for f in page.fns.values() if getattr(f.fn, "__name__", "") == "on_load"]
    filled = {o.elem_id: v for o, v in zip(load.outputs, load.fn(None), strict=True)}
    expected = [("None", "None"), ("control_renamed.safetensors", "control_renamed.safetensors")]
    for tab in ("txt2img", "img2img", "inpaint"):
        for index in range(3):
            assert filled[f"{tab}_controlnet_{index}_model"]["choices"] == expected
    assert (
        filled["txt2img_hr_upscaler"]["choices"][0] == "Latent"
        and "Lanczos" in filled["img2img_sd_upscale_upscaler"]["choices"]
    )
