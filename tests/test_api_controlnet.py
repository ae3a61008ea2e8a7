"""The ControlNet extension's API, hires fix, SD upscale and model upscalers through HTTP on a running
``python app.py`` (tiny random checkpoint, tiny ControlNet, tiny ESRGAN), and through the real ``webuiapi``
client as its README shows it."""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.fixtures.tiny_controlnets import make_controlnet
from tests.fixtures.tiny_upscalers import save_upscaler, tiny_rrdb
from tests.test_ui_browser import Server, _serve

SIZE = 64
FAST = {"prompt": "a red circle", "steps": 2, "width": SIZE, "height": SIZE, "seed": 11, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_sd1_ckpt: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("api-cn")
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_sd1_ckpt, root / "models" / "Stable-diffusion" / "tiny-sd1.safetensors")
    make_controlnet(root / "models" / "ControlNet", "sd1", seed=1, name="control_tiny_canny.safetensors")
    save_upscaler(tiny_rrdb(4, seed=1), root / "models" / "ESRGAN" / "4x-Tiny.pth", "original")
    with _serve(root, "--no-demo-model") as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url.rstrip("/"), timeout=120) as http:
        yield http


def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _image(text: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(text)))
    image.load()
    return image


def _square() -> Image.Image:
    pixels = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    pixels[16:48, 16:48] = 255
    return Image.fromarray(pixels)


def _unit(**fields: Any) -> dict[str, Any]:
    return {"enabled": True, "image": _b64(_square()), "module": "canny", "model": "control_tiny_canny", **fields}


def _error(response: httpx.Response, status: int, field: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["field"] == field, body
    return body


def test_controlnet_units_in_alwayson_scripts_shape_the_image_and_come_back_with_the_map(client: httpx.Client) -> None:
    plain = client.post("/sdapi/v1/txt2img", json=FAST).json()
    body = {**FAST, "alwayson_scripts": {"ControlNet": {"args": [_unit(), {"enabled": False}]}}}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    images = response.json()["images"]
    assert len(images) == 2  # the image, then unit 0's detected map (the disabled unit has none)
    generated, detected = _image(images[0]), _image(images[1])
    assert 'ControlNet 0: "Module: canny, Model: control_tiny_canny' in generated.info["parameters"]
    assert (
        np.abs(np.asarray(generated, dtype=np.int16) - np.asarray(_image(plain["images"][0]), dtype=np.int16)).mean()
        > 1
    )
    edges = np.asarray(detected.convert("L")) > 127
    assert edges.any() and not edges[24:40, 24:40].any()
    quiet = {**FAST, "alwayson_scripts": {"controlnet": {"args": [_unit(save_detected_map=False)]}}}
    assert len(client.post("/sdapi/v1/txt2img", json=quiet).json()["images"]) == 1


def test_img2img_units_use_the_init_image_when_they_have_none(client: httpx.Client) -> None:
    body = {
        **FAST,
        "init_images": [_b64(_square())],
        "denoising_strength": 0.8,
        "alwayson_scripts": {"controlnet": {"args": [_unit(image="")]}},
    }
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    assert "ControlNet 0" in json.loads(response.json()["info"])["infotexts"][0]


@pytest.mark.parametrize(
    ("unit", "status", "field"),
    [
        (_unit(weight=3), 422, "alwayson_scripts.controlnet.args[0].weight"),
        (_unit(guidance_start=0.9, guidance_end=0.1), 422, "alwayson_scripts.controlnet.args[0].guidance_start"),
        (_unit(model="nope"), 404, "alwayson_scripts.controlnet.args[0].model"),
        (_unit(model="None"), 422, "alwayson_scripts.controlnet.args[0].model"),
        (_unit(module="telepathy"), 422, "alwayson_scripts.controlnet.args[0].module"),
        (_unit(image="not base64!"), 422, "alwayson_scripts.controlnet.args[0].image"),
        (_unit(image="/etc/passwd"), 422, "alwayson_scripts.controlnet.args[0].image"),
        (_unit(control_mode="Loudest"), 422, "alwayson_scripts.controlnet.args[0].control_mode"),
        ({**_unit(), "image": None}, 422, "alwayson_scripts.controlnet.args[0].image"),
    ],
)
def test_bad_units_name_their_field_and_the_server_keeps_working(
    client: httpx.Client, unit: dict[str, Any], status: int, field: str
) -> None:
    body = {**FAST, "alwayson_scripts": {"controlnet": {"args": [unit]}}}
    _error(client.post("/sdapi/v1/txt2img", json=body), status, field)
    assert client.post("/sdapi/v1/txt2img", json=FAST).status_code == 200


def test_other_alwayson_scripts_are_refused_and_a_clients_default_thresholds_are_accepted(client: httpx.Client) -> None:
    _error(
        client.post("/sdapi/v1/txt2img", json={**FAST, "alwayson_scripts": {"ADetailer": {"args": []}}}),
        422,
        "alwayson_scripts",
    )
    # webuiapi sends 64 for both thresholds whatever the module; the extension then uses the module's default.
    unit = _unit(module="tile_resample", threshold_a=64, threshold_b=64)
    response = client.post("/sdapi/v1/txt2img", json={**FAST, "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    assert response.status_code == 200, response.text
    assert "Threshold A: 1.0" in json.loads(response.json()["info"])["infotexts"][0]


def test_the_extension_routes(client: httpx.Client) -> None:
    assert client.get("/controlnet/version").json()["version"] >= 2
    models = client.get("/controlnet/model_list").json()["model_list"]
    assert models and models[0].startswith("control_tiny_canny")
    modules = client.get("/controlnet/module_list").json()
    assert {"none", "canny", "tile_resample", "openpose"} <= set(modules["module_list"])
    assert modules["module_detail"]["openpose"]["missing_files"] == ["body_pose_model.pth"]
    assert modules["module_detail"]["canny"]["sliders"][1]["name"] == "Canny Low Threshold"
    assert client.get("/controlnet/settings").json()["control_net_unit_count"] == 3  # the setting's default
    assert "canny" in client.get("/controlnet/control_types").json()["control_types"]["All"]["module_list"]


def test_detect_returns_the_map_at_the_preprocessor_resolution(client: httpx.Client) -> None:
    body = {"controlnet_module": "canny", "controlnet_input_images": [_b64(_square())], "controlnet_processor_res": 128}
    response = client.post("/controlnet/detect", json=body)
    assert response.status_code == 200, response.text
    (detected,) = [_image(i) for i in response.json()["images"]]
    assert detected.size == (128, 128)
    edges = np.asarray(detected.convert("L")) > 127
    assert edges[30:34, 32:96].any() and not edges[48:80, 48:80].any()
    _error(client.post("/controlnet/detect", json={**body, "controlnet_module": "depth"}), 422, "controlnet_module")
    _error(
        client.post("/controlnet/detect", json={**body, "controlnet_input_images": []}), 422, "controlnet_input_images"
    )
    bad = {**body, "controlnet_input_images": ["@@@"]}
    _error(client.post("/controlnet/detect", json=bad), 422, "controlnet_input_images[0]")


def test_hires_fix_through_the_api(client: httpx.Client) -> None:
    body = {**FAST, "enable_hr": True, "hr_scale": 2, "hr_upscaler": "4x-Tiny", "denoising_strength": 0.5}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    image = _image(response.json()["images"][0])
    assert image.size == (2 * SIZE, 2 * SIZE)
    assert "Hires upscale: 2" in image.info["parameters"] and "Hires upscaler: 4x-Tiny" in image.info["parameters"]
    _error(client.post("/sdapi/v1/txt2img", json={**body, "hr_upscaler": "R-ESRGAN 4x+"}), 422, "hr_upscaler")


def test_sd_upscale_script_and_model_upscalers(client: httpx.Client) -> None:
    names = [u["name"] for u in client.get("/sdapi/v1/upscalers").json()]
    assert names[:3] == ["None", "Lanczos", "Nearest"] and "4x-Tiny" in names
    assert next(m["name"] for m in client.get("/sdapi/v1/latent-upscale-modes").json()) == "Latent"
    body = {
        **FAST,
        "init_images": [_b64(_square())],
        "denoising_strength": 0.3,
        "script_name": "SD upscale",
        "script_args": ["", 16, names.index("4x-Tiny"), 2],
    }
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    image = _image(response.json()["images"][0])
    assert image.size == (2 * SIZE, 2 * SIZE) and "SD upscale upscaler: 4x-Tiny" in image.info["parameters"]
    _error(client.post("/sdapi/v1/img2img", json={**body, "script_args": ["", 16, 99, 2]}), 422, "script_args[2]")
    _error(client.post("/sdapi/v1/img2img", json={**body, "script_args": ["", 16, 1, 9]}), 422, "script_args[3]")
    _error(client.post("/sdapi/v1/txt2img", json={**FAST, "script_name": "SD upscale"}), 422, "script_name")
    extras = {"image": _b64(_square()), "upscaler_1": "4x-Tiny", "upscaling_resize": 3}
    response = client.post("/sdapi/v1/extra-single-image", json=extras)
    assert response.status_code == 200, response.text
    assert _image(response.json()["image"]).size == (3 * SIZE, 3 * SIZE)
    _error(client.post("/sdapi/v1/extra-single-image", json={**extras, "upscaler_1": "4x-Nope"}), 422, "upscaler_1")


def test_webuiapi_controlnet_and_hires_as_its_readme_shows(server: Server) -> None:
    import webuiapi

    host, port = server.url.removeprefix("http://").rstrip("/").split(":")
    api = webuiapi.WebUIApi(host=host, port=int(port), sampler="Euler", steps=2)
    assert api.controlnet_version() >= 2
    model = api.controlnet_model_list()[0]
    assert "canny" in api.controlnet_module_list()
    unit = webuiapi.ControlNetUnit(image=_square(), module="canny", model=model)
    result = api.txt2img(prompt="a red circle", width=SIZE, height=SIZE, seed=3, controlnet_units=[unit])
    assert len(result.images) == 2 and "ControlNet 0" in result.info["infotexts"][0]
    detected = api.controlnet_detect(images=[_square()], module="canny")  # webuiapi's data-URI images, old field name
    assert len(detected.images) == 1 and detected.image.size == (512, 512)
    hires = api.txt2img(
        prompt="a red circle", width=SIZE, height=SIZE, seed=3, enable_hr=True, hr_scale=2,
        hr_upscaler=webuiapi.HiResUpscaler.Latent, denoising_strength=0.5,
    )  # fmt: skip
    assert hires.image.size == (2 * SIZE, 2 * SIZE)
