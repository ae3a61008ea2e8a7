"""A1111's ``/sdapi/v1`` through HTTP on a running ``python app.py`` (tiny random-weight SD1 checkpoint).

Random weights cannot draw a prompt, so these check what a client relies on: status codes, JSON shapes, PNGs
with their infotext, that options persist and overrides last one call, that bad input names its field and
leaves the server working, and that images and the queue behave (interrupt, progress, inpaint paste-back).
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.fixtures.tiny_models import make_embedding, make_lora, make_vae
from tests.test_ui_browser import Server, _serve

SIZE = 64
FAST = {"prompt": "a red circle", "steps": 2, "width": SIZE, "height": SIZE, "seed": 11, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_sd1_ckpt: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("api")
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_sd1_ckpt, root / "models" / "Stable-diffusion" / "tiny-sd1.safetensors")
    make_vae(root / "models" / "VAE" / "redder.safetensors", red=1.5)
    make_lora(root / "models" / "Lora" / "detail.safetensors", seed=1)
    make_embedding(root / "models" / "embeddings" / "bluish.pt", "blue")
    make_embedding(root / "models" / "embeddings" / "toowide.pt", "blue", width=768)
    with _serve(root, "--no-demo-model", "--max-body-mb", "8") as running:
        yield running


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url.rstrip("/") + "/sdapi/v1", timeout=120) as client:
        yield client


def _b64(image: Image.Image, fmt: str = "PNG", prefix: bool = False) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    text = base64.b64encode(buffer.getvalue()).decode()
    return f"data:image/{fmt.lower()};base64,{text}" if prefix else text


def _image(text: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(text)))
    image.load()
    return image


def _scene() -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), (20, 40, 200))
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=(220, 30, 30))
    return image


def _error(response: httpx.Response, status: int, field: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["field"] == field, body
    assert field in body["detail"]
    return body


# -- generation ---------------------------------------------------------------------------------------------
def test_txt2img_returns_pngs_with_infotext_parameters_and_info(api: httpx.Client, server: Server) -> None:
    before = server.pngs()
    response = api.post("/txt2img", json={**FAST, "batch_size": 2, "negative_prompt": "blue"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"images", "parameters", "info"}
    images = [_image(i) for i in body["images"]]
    assert [i.size for i in images] == [(SIZE, SIZE)] * 2 and all(i.format == "PNG" for i in images)
    assert "Seed: 11," in images[0].info["parameters"] and "Seed: 12," in images[1].info["parameters"]
    info = json.loads(body["info"])
    assert info["all_seeds"] == [11, 12] and info["seed"] == 11 and info["steps"] == 2
    assert info["sd_model_name"] == "tiny-sd1" and len(info["sd_model_hash"]) == 10
    assert info["infotexts"][1] == images[1].info["parameters"]
    assert info["negative_prompt"] == "blue" and info["sampler_name"] == "Euler"
    assert body["parameters"]["prompt"] == "a red circle" and body["parameters"]["batch_size"] == 2
    assert server.pngs() == before  # the API does not save unless asked (A1111's save_images=false)
    again = api.post("/txt2img", json={**FAST, "batch_size": 2, "negative_prompt": "blue"}).json()
    assert again["images"] == body["images"]  # same seed, same pixels


def test_save_images_saves_and_send_images_false_sends_none(api: httpx.Client, server: Server) -> None:
    before = server.pngs()
    body = api.post("/txt2img", json={**FAST, "seed": 21, "save_images": True, "send_images": False}).json()
    assert body["images"] == []
    (saved,) = server.pngs() - before
    assert saved.name.endswith("-21.png") and "Seed: 21," in Image.open(saved).info["parameters"]


def test_img2img_and_inpaint_keep_what_they_should(api: httpx.Client) -> None:
    scene = _scene()
    outputs = []
    for image in (scene, Image.eval(scene, lambda v: 255 - v)):
        body = {**FAST, "init_images": [_b64(image, prefix=True)], "denoising_strength": 0.1, "resize_mode": 1}
        response = api.post("/img2img", json=body)
        assert response.status_code == 200, response.text
        outputs.append(np.asarray(_image(response.json()["images"][0]).convert("RGB"), dtype=np.int16))
    assert np.abs(outputs[0] - outputs[1]).mean() > 5  # the init image shapes the result (random weights: no more)

    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)  # left half
    body = {**FAST, "init_images": [_b64(scene)], "mask": _b64(mask), "denoising_strength": 1.0, "mask_blur": 0}
    body |= {"inpainting_fill": 1, "inpaint_full_res": False}
    response = api.post("/img2img", json=body)
    assert response.status_code == 200, response.text
    painted = np.asarray(_image(response.json()["images"][0]).convert("RGB"), dtype=np.int16)
    right = (slice(None), slice(36, None))
    assert np.abs(painted[right] - np.asarray(scene, dtype=np.int16)[right]).max() <= 2  # unmasked: pasted back
    assert "Mask blur: 0" in json.loads(response.json()["info"])["infotexts"][0]


def test_override_settings_apply_to_one_call_and_infotext_fills_unset_fields(api: httpx.Client) -> None:
    overridden = api.post(
        "/txt2img", json={**FAST, "override_settings": {"CLIP_stop_at_last_layers": 2, "sd_vae": "redder.safetensors"}}
    )
    assert overridden.status_code == 200, overridden.text
    text = json.loads(overridden.json()["info"])["infotexts"][0]
    assert "Clip skip: 2" in text and "VAE: redder.safetensors" in text
    plain = json.loads(api.post("/txt2img", json=FAST).json()["info"])["infotexts"][0]
    assert "Clip skip" not in plain and "VAE:" not in plain

    pasted = "a blue square\nNegative prompt: red\nSteps: 3, Sampler: Euler a, CFG scale: 4.5, Seed: 77, Size: 64x64"
    info = json.loads(api.post("/txt2img", json={"infotext": pasted, "steps": 2}).json()["info"])
    assert (info["prompt"], info["negative_prompt"], info["seed"], info["cfg_scale"]) == (
        "a blue square",
        "red",
        77,
        4.5,
    )
    assert info["steps"] == 2  # set explicitly: the infotext does not override it


def test_loras_in_the_prompt_apply_are_hashed_and_found_again_after_a_rename(api: httpx.Client, server: Server) -> None:
    plain = api.post("/txt2img", json=FAST).json()
    with_lora = api.post("/txt2img", json={**FAST, "prompt": "a red circle <lora:detail:0.8>"}).json()
    assert with_lora["images"] != plain["images"]
    text = json.loads(with_lora["info"])["infotexts"][0]
    assert text.startswith("a red circle <lora:detail:0.8>\n") and 'Lora hashes: "detail: ' in text
    _error(api.post("/txt2img", json={**FAST, "prompt": "x <lora:nope:1>"}), 404, "lora")
    # disable_extra_networks leaves the tags unused, as A1111 does: the same pixels as no LoRA, no hash written.
    unused = api.post(
        "/txt2img", json={**FAST, "prompt": "a red circle <lora:detail:0.8>", "disable_extra_networks": True}
    )
    pixels = [np.asarray(_image(r["images"][0]).convert("RGB")) for r in (unused.json(), plain)]
    assert (pixels[0] == pixels[1]).all()
    assert "Lora hashes" not in json.loads(unused.json()["info"])["infotexts"][0]
    _error(api.post("/txt2img", json={**FAST, "prompt": "x <lora::1>"}), 422, "prompt")

    folder = server.outputs.parent / "models" / "Lora"
    (folder / "detail.safetensors").rename(folder / "renamed.safetensors")
    try:
        api.post("/refresh-loras")
        again = api.post("/txt2img", json={"infotext": text}).json()
        pixels = [np.asarray(_image(r["images"][0]).convert("RGB")) for r in (again, with_lora)]
        assert (pixels[0] == pixels[1]).all()  # found by its hash under the new name
        assert "<lora:renamed:0.8>" in json.loads(again["info"])["prompt"]
    finally:
        (folder / "renamed.safetensors").rename(folder / "detail.safetensors")
        api.post("/refresh-loras")


# -- options ------------------------------------------------------------------------------------------------
def test_options_read_set_persist_and_refuse_bad_values(api: httpx.Client, server: Server) -> None:
    options = api.get("/options").json()
    assert options["sd_vae"] == "Automatic" and options["CLIP_stop_at_last_layers"] == 1
    assert options["sd_model_checkpoint"].startswith("tiny-sd1.safetensors")
    try:
        assert api.post("/options", json={"CLIP_stop_at_last_layers": 2, "samples_format": "webp"}).status_code == 200
        options = api.get("/options").json()
        assert options["CLIP_stop_at_last_layers"] == 2 and options["samples_format"] == "webp"
        saved = json.loads((server.outputs / "easel-settings.json").read_text())
        assert saved["clip_skip"] == 2 and saved["output_format"] == "webp"
        text = json.loads(api.post("/txt2img", json=FAST).json()["info"])["infotexts"][0]
        assert "Clip skip: 2" in text  # the option is the default for later calls

        _error(api.post("/options", json={"CLIP_stop_at_last_layers": 99}), 422, "CLIP_stop_at_last_layers")
        _error(api.post("/options", json={"samples_format": "gif"}), 422, "samples_format")
        _error(api.post("/options", json={"sd_vae": "nope.safetensors"}), 404, "sd_vae")
        _error(api.post("/options", json={"sd_model_checkpoint": "../../etc/passwd"}), 404, "sd_model_checkpoint")
        _error(api.post("/options", json={"sd_model_checkpoint": 7}), 422, "sd_model_checkpoint")
        assert api.get("/options").json()["CLIP_stop_at_last_layers"] == 2  # a refused call changed nothing
    finally:
        api.post("/options", json={"CLIP_stop_at_last_layers": 1, "samples_format": "png"})


def test_setting_the_checkpoint_option_loads_it(api: httpx.Client, server: Server, tiny_sd1_ckpt: Path) -> None:
    other = server.outputs.parent / "models" / "Stable-diffusion" / "zz-other.safetensors"
    shutil.copy(tiny_sd1_ckpt, other)
    try:
        assert api.post("/refresh-checkpoints").status_code == 200
        titles = [m["title"] for m in api.get("/sd-models").json()]
        assert any(t.startswith("zz-other.safetensors") for t in titles)
        assert api.post("/options", json={"sd_model_checkpoint": "zz-other.safetensors"}).status_code == 200
        assert api.get("/options").json()["sd_model_checkpoint"].startswith("zz-other.safetensors [")
        info = json.loads(api.post("/txt2img", json=FAST).json()["info"])
        assert info["sd_model_name"] == "zz-other"
    finally:
        api.post("/options", json={"sd_model_checkpoint": "tiny-sd1.safetensors"})
        other.unlink()
        api.post("/refresh-checkpoints")


@pytest.fixture
def other_checkpoint(api: httpx.Client, server: Server, tiny_sd1_ckpt: Path) -> Iterator[str]:
    """A second checkpoint, ``zz-other``, listed for one test; the options are put back afterwards."""
    other = server.outputs.parent / "models" / "Stable-diffusion" / "zz-other.safetensors"
    shutil.copy(tiny_sd1_ckpt, other)
    assert api.post("/refresh-checkpoints").status_code == 200
    try:
        yield "zz-other.safetensors"
    finally:
        api.post("/options", json={"sd_model_checkpoint": "tiny-sd1.safetensors", "CLIP_stop_at_last_layers": 1})
        other.unlink()
        api.post("/refresh-checkpoints")


def _model_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return json.loads(response.json()["info"])["sd_model_name"]


def test_an_override_checkpoint_lasts_one_call(api: httpx.Client, server: Server, other_checkpoint: str) -> None:
    once = {**FAST, "override_settings": {"sd_model_checkpoint": other_checkpoint}}
    assert _model_of(api.post("/txt2img", json=once)) == "zz-other"
    assert api.get("/options").json()["sd_model_checkpoint"].startswith("tiny-sd1.safetensors")
    assert _model_of(api.post("/txt2img", json=FAST)) == "tiny-sd1"  # the option again, not the last one loaded
    assert _model_of(api.post("/txt2img", json=once)) == "zz-other"
    jobs = httpx.Client(base_url=server.url.rstrip("/") + "/easel/v1", timeout=60)
    with jobs:
        job = jobs.post("/jobs", json=FAST).json()
        deadline = time.monotonic() + 60
        while jobs.get(f"/jobs/{job['id']}").json()["state"] not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(0.05)
        info = json.loads(jobs.get(f"/jobs/{job['id']}/results").json()["info"])
    assert info["sd_model_name"] == "tiny-sd1"  # the jobs API uses the same option

    kept = {**once, "override_settings_restore_afterwards": False}
    kept["override_settings"] = {**once["override_settings"], "CLIP_stop_at_last_layers": 2}
    assert _model_of(api.post("/txt2img", json=kept)) == "zz-other"
    options = api.get("/options").json()
    assert (
        options["sd_model_checkpoint"].startswith("zz-other.safetensors") and options["CLIP_stop_at_last_layers"] == 2
    )
    plain = api.post("/txt2img", json=FAST)
    assert _model_of(plain) == "zz-other" and "Clip skip: 2" in json.loads(plain.json()["info"])["infotexts"][0]

    refused = {**kept, "override_settings": {"sd_model_checkpoint": "tiny-sd1.safetensors", "sd_vae": "nope.pt"}}
    _error(api.post("/txt2img", json=refused), 404, "override_settings.sd_vae")
    assert api.get("/options").json()["sd_model_checkpoint"].startswith("zz-other.safetensors")  # nothing kept


def test_a_checkpoint_option_whose_file_went_is_named_as_the_option(
    api: httpx.Client, server: Server, other_checkpoint: str
) -> None:
    folder = server.outputs.parent / "models" / "Stable-diffusion"
    aside = server.outputs.parent / "aside.safetensors"
    assert api.post("/options", json={"sd_model_checkpoint": other_checkpoint}).status_code == 200
    (folder / other_checkpoint).rename(aside)
    api.post("/refresh-checkpoints")
    try:
        _error(api.post("/txt2img", json=FAST), 404, "sd_model_checkpoint")
        assert api.get("/options").json()["sd_model_checkpoint"] == other_checkpoint
    finally:
        aside.rename(folder / other_checkpoint)
        api.post("/refresh-checkpoints")


def test_info_has_every_key_a1111_sends(api: httpx.Client) -> None:
    """``Processed.js()`` in A1111 1.10 (../shared/reference/a1111-compat.md §3.2); Easel adds two."""
    a1111_keys = {
        "prompt", "all_prompts", "negative_prompt", "all_negative_prompts", "seed", "all_seeds", "subseed",
        "all_subseeds", "subseed_strength", "width", "height", "sampler_name", "cfg_scale", "steps", "batch_size",
        "restore_faces", "face_restoration_model", "sd_model_name", "sd_model_hash", "sd_vae_name", "sd_vae_hash",
        "seed_resize_from_w", "seed_resize_from_h", "denoising_strength", "extra_generation_params",
        "index_of_first_image", "infotexts", "styles", "job_timestamp", "clip_skip",
        "is_using_inpainting_conditioning", "version",
    }  # fmt: skip
    for path, body in (("/txt2img", FAST), ("/img2img", {**FAST, "init_images": [_b64(_scene())]})):
        info = json.loads(api.post(path, json=body).json()["info"])
        assert set(info) - {"scheduler", "notes"} == a1111_keys, path
        assert len(info["all_prompts"]) == len(info["infotexts"]) == len(info["all_seeds"]) == 1
        assert isinstance(info["extra_generation_params"], dict) and isinstance(info["job_timestamp"], str)


def test_webuiapi_style_defaults_for_unsupported_fields_are_accepted(api: httpx.Client) -> None:
    """Clients send "off" values for everything they know; only a real value of an unsupported field is refused."""
    off = [
        {"seed_resize_from_h": 0, "seed_resize_from_w": 0},  # webuiapi's
        {"seed_resize_from_h": -1, "seed_resize_from_w": -1},  # A1111's
        {"refiner_checkpoint": None, "refiner_switch_at": None},
        {"refiner_checkpoint": "None", "refiner_switch_at": 0.8},  # without a refiner, A1111 ignores switch_at too
        {"refiner_checkpoint": "", "disable_extra_networks": False},
        {"disable_extra_networks": True},  # no tags in the prompt: nothing to leave unused
    ]
    for fields in off:
        assert api.post("/txt2img", json={**FAST, **fields}).status_code == 200, fields
    extras = {
        "upscaler_2": "None",
        "extras_upscaler_2_visibility": 0,
        "gfpgan_visibility": 0,
        "codeformer_visibility": 0,
    }
    response = api.post("/extra-single-image", json={"image": _b64(_scene()), "upscaler_1": "Nearest", **extras})
    assert response.status_code == 200, response.text


# -- lists --------------------------------------------------------------------------------------------------
def test_the_lists_have_a1111s_shapes(api: httpx.Client) -> None:
    (model,) = api.get("/sd-models").json()
    assert set(model) >= {"title", "model_name", "hash", "sha256", "filename", "config"}
    assert model["model_name"] == "tiny-sd1" and model["title"].startswith("tiny-sd1.safetensors")
    assert api.get("/sd-vae").json()[0]["model_name"] == "redder.safetensors"
    samplers = api.get("/samplers").json()
    assert {"Euler a", "DPM++ 2M", "DDIM"} <= {s["name"] for s in samplers}
    assert all(set(s) == {"name", "aliases", "options"} for s in samplers)
    assert {"Karras", "Automatic"} <= {s["label"] for s in api.get("/schedulers").json()}
    assert {"None", "Lanczos", "Nearest"} == {u["name"] for u in api.get("/upscalers").json()}
    (lora,) = api.get("/loras").json()
    assert lora["name"] == "detail" and lora["path"].endswith("detail.safetensors")
    assert lora["metadata"]["ss_network_dim"] == "4"
    assert api.get("/prompt-styles").json() == []
    assert api.post("/txt2img", json={**FAST, "prompt": "bluish toowide"}).status_code == 200  # loaded when named
    embeddings = api.get("/embeddings").json()
    assert embeddings["loaded"]["bluish"]["shape"] == 32 and embeddings["loaded"]["bluish"]["vectors"] == 1
    assert "768 wide" in embeddings["skipped"]["toowide"]["reason"]
    extensions = {e["name"]: e["enabled"] for e in api.get("/extensions").json()}  # the repo's examples
    assert extensions == {"image-stats": True, "latent-mirror": True, "watermark": True}
    assert api.get("/scripts").json() == {
        "txt2img": [],
        "img2img": ["sd upscale"],
    }
    for path in ("/refresh-vae", "/refresh-loras", "/refresh-embeddings"):
        assert api.post(path).status_code == 200
    memory = api.get("/memory").json()
    assert memory["ram"]["total"] > memory["ram"]["free"] > 0 and "cuda" in memory
    flags = api.get("/cmd-flags").json()
    assert flags["max_body_mb"] == 8 and "auth" not in flags


# -- images -------------------------------------------------------------------------------------------------
def test_png_info_reads_our_infotext_and_extras_upscales(api: httpx.Client) -> None:
    generated = api.post("/txt2img", json=FAST).json()["images"][0]
    info = api.post("/png-info", json={"image": generated}).json()
    assert info["info"].startswith("a red circle\nSteps: 2, Sampler: Euler")
    assert info["parameters"]["Seed"] == 11 and info["parameters"]["Size-1"] == SIZE
    plain = api.post("/png-info", json={"image": _b64(_scene())}).json()
    assert plain["info"] == "" and plain["parameters"] == {}

    scaled = api.post("/extra-single-image", json={"image": generated, "upscaler_1": "Lanczos", "upscaling_resize": 2})
    assert scaled.status_code == 200, scaled.text
    assert _image(scaled.json()["image"]).size == (2 * SIZE, 2 * SIZE)
    _error(api.post("/extra-single-image", json={"image": generated, "upscaler_1": "ESRGAN_4x"}), 422, "upscaler_1")


# -- progress and control -----------------------------------------------------------------------------------
def test_progress_shows_the_running_job_with_a_preview_and_interrupt_stops_it(api: httpx.Client) -> None:
    api.post("/options", json={"show_progress_every_n_steps": 1})
    answers: list[httpx.Response] = []
    body = {**FAST, "steps": 150, "width": 256, "height": 256, "n_iter": 3}
    worker = threading.Thread(target=lambda: answers.append(api.post("/txt2img", json=body)))
    worker.start()
    try:
        deadline = time.monotonic() + 60
        progress: dict[str, Any] = {}
        while time.monotonic() < deadline:
            progress = api.get("/progress").json()
            if progress["state"]["sampling_step"] >= 2 and progress["current_image"]:
                break
            time.sleep(0.2)
        assert progress["state"]["sampling_steps"] == 150 and 0 < progress["progress"] < 1
        assert _image(progress["current_image"]).size == (256, 256)
        assert api.get("/progress", params={"skip_current_image": True}).json()["current_image"] is None
        assert api.post("/interrupt").json() == {}
        worker.join(30)
        assert not worker.is_alive()
    finally:
        api.post("/options", json={"show_progress_every_n_steps": 4})
    (answer,) = answers
    assert answer.status_code == 200 and answer.json()["images"] == []  # stopped in its first image
    idle = api.get("/progress").json()
    assert idle["progress"] == 0 and idle["current_image"] is None
    assert api.post("/txt2img", json=FAST).status_code == 200  # the queue is free


def test_skip_drops_the_image_being_made_and_the_batch_goes_on(api: httpx.Client) -> None:
    answers: list[httpx.Response] = []
    body = {**FAST, "seed": 50, "steps": 150, "width": 256, "height": 256, "n_iter": 2}
    worker = threading.Thread(target=lambda: answers.append(api.post("/txt2img", json=body)))
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = api.get("/progress").json()["state"]
        if state["job_no"] == 0 and state["sampling_step"] >= 2:
            break
        time.sleep(0.1)
    assert api.post("/skip").json() == {}
    worker.join(120)
    (answer,) = answers
    assert answer.status_code == 200, answer.text
    info = json.loads(answer.json()["info"])
    assert info["all_seeds"] == [51]  # the first image was skipped, the second made
    assert "skipped image 1 of 2" in info["notes"]


# -- bad input: 4xx JSON naming the field, and the server keeps working --------------------------------------
def _bomb() -> str:
    """A valid 1 KB PNG that claims 100,000 x 100,000 pixels (10 GB decoded)."""
    side = 100_000

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    raw = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + chunk(b"IEND", b"")
    )
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/img2img", {**FAST, "init_images": ["not base64 at all!"]}, 422, "init_images"),
        (
            "/img2img",
            {**FAST, "init_images": [base64.b64encode(b"plain text, not an image").decode()]},
            422,
            "init_images",
        ),
        ("/img2img", {**FAST, "init_images": [_bomb()]}, 422, "init_images"),
        ("/img2img", {**FAST, "init_images": []}, 422, "init_images"),
        ("/img2img", {**FAST, "init_images": [_b64(_scene())], "mask": "%%%"}, 422, "mask"),
        ("/txt2img", {**FAST, "steps": 0}, 422, "steps"),
        ("/txt2img", {**FAST, "steps": 100_000}, 422, "steps"),
        ("/txt2img", {**FAST, "width": 513}, 422, "width"),
        ("/txt2img", {**FAST, "height": -64}, 422, "height"),
        ("/txt2img", {**FAST, "cfg_scale": "high"}, 422, "cfg_scale"),
        ("/txt2img", {**FAST, "batch_size": 10_000}, 422, "batch_size"),
        ("/txt2img", {**FAST, "prompt": "x" * 100_000}, 422, "prompt"),
        ("/txt2img", {**FAST, "prompt": "a (red:1.2.3) circle"}, 422, "prompt"),
        ("/txt2img", {**FAST, "negative_prompt": "(" * 500 + "blur"}, 422, "negative_prompt"),
        ("/txt2img", {**FAST, "sampler_name": "Euler Ultra"}, 400, "sampler_name"),
        ("/txt2img", {**FAST, "sampler_name": None, "sampler_index": "Euler Ultra"}, 400, "sampler_index"),
        ("/txt2img", {"infotext": "a cat\nSteps: 2, Sampler: Euler Ultra, Seed: 1, Size: 64x64"}, 400, "infotext"),
        ("/txt2img", {**FAST, "script_name": "x/y/z plot"}, 422, "script_name"),
        ("/txt2img", {**FAST, "alwayson_scripts": {"NoSuchScript": {"args": []}}}, 422, "alwayson_scripts"),
        ("/txt2img", {**FAST, "enable_hr": True, "hr_checkpoint_name": "other.safetensors"}, 422, "hr_checkpoint_name"),
        ("/txt2img", {**FAST, "enable_hr": True, "hr_scale": 9}, 422, "hr_scale"),
        (
            "/txt2img",
            {**FAST, "override_settings": {"sd_model_checkpoint": "../../../etc/passwd"}},
            404,
            "override_settings.sd_model_checkpoint",
        ),
        ("/txt2img", {**FAST, "override_settings": {"sd_vae": "..\\..\\secret.pt"}}, 404, "override_settings.sd_vae"),
        (
            "/txt2img",
            {**FAST, "override_settings": {"CLIP_stop_at_last_layers": 99}},
            422,
            "override_settings.CLIP_stop_at_last_layers",
        ),
        (
            "/txt2img",
            {
                **FAST,
                "override_settings": {"CLIP_stop_at_last_layers": 99},
                "override_settings_restore_afterwards": False,
            },
            422,
            "override_settings.CLIP_stop_at_last_layers",
        ),
        ("/txt2img", {"infotext": "a cat\nSteps: 2, Seed: 1, Size: 64x64, Model: nope"}, 404, "infotext"),
        ("/txt2img", {"infotext": "a cat\nSteps: 2, Seed: 1, Size: 64x64, Clip skip: 40"}, 422, "infotext"),
        # A1111 fields Easel does not have: refused at a real value, never ignored
        ("/img2img", {**FAST, "init_images": [_b64(_scene())] * 2}, 422, "init_images"),
        ("/txt2img", {**FAST, "refiner_checkpoint": "sdxl_refiner.safetensors"}, 422, "refiner_checkpoint"),
        ("/txt2img", {**FAST, "seed_resize_from_h": 512, "seed_resize_from_w": 512}, 422, "seed_resize_from_w"),
        ("/txt2img", {**FAST, "seed_resize_from_h": 512}, 422, "seed_resize_from_h"),
        ("/extra-single-image", {"image": _b64(_scene()), "upscaler_2": "Lanczos"}, 422, "upscaler_2"),
        (
            "/extra-single-image",
            {"image": _b64(_scene()), "extras_upscaler_2_visibility": 0.5},
            422,
            "extras_upscaler_2_visibility",
        ),
        ("/extra-single-image", {"image": _b64(_scene()), "gfpgan_visibility": 1}, 422, "gfpgan_visibility"),
        ("/extra-single-image", {"image": _b64(_scene()), "codeformer_visibility": 0.5}, 422, "codeformer_visibility"),
        # images: never a URL, bombs and non-images refused by every route that takes one
        ("/img2img", {**FAST, "init_images": ["http://127.0.0.1:9/cat.png"]}, 422, "init_images"),
        ("/img2img", {**FAST, "init_images": ["file:///etc/passwd"]}, 422, "init_images"),
        ("/img2img", {**FAST, "init_images": [_b64(_scene())], "mask": "https://example.com/m.png"}, 422, "mask"),
        ("/png-info", {"image": "http://127.0.0.1:9/cat.png"}, 422, "image"),
        ("/png-info", {"image": _bomb()}, 422, "image"),
        ("/png-info", {"image": base64.b64encode(b"GIF89a but not really").decode()}, 422, "image"),
        ("/extra-single-image", {"image": _bomb(), "upscaler_1": "Lanczos"}, 422, "image"),
        ("/extra-single-image", {"image": base64.b64encode(b"\x00" * 64).decode()}, 422, "image"),
        ("/extra-single-image", {"image": "https://example.com/x.png"}, 422, "image"),
        ("/png-info", {"image": "@@@"}, 422, "image"),
        ("/png-info", {}, 422, "image"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field_and_the_server_keeps_working(
    api: httpx.Client, path: str, body: dict[str, Any], status: int, field: str
) -> None:
    _error(api.post(path, json=body), status, field)
    assert api.get("/options").status_code == 200


def test_an_image_given_as_a_file_path_is_refused_not_read(api: httpx.Client, server: Server) -> None:
    """A path to a real PNG on the server would decode if Easel opened paths: it is refused as not base64."""
    path = server.outputs.parent / "secret scene.png"
    _scene().save(path)
    for route, body, field in (
        ("/img2img", {**FAST, "init_images": [str(path)]}, "init_images"),
        ("/img2img", {**FAST, "init_images": [_b64(_scene())], "mask": str(path)}, "mask"),
        ("/png-info", {"image": str(path)}, "image"),
        ("/extra-single-image", {"image": str(path)}, "image"),
        ("/extra-single-image", {"image": path.as_uri()}, "image"),
    ):
        _error(api.post(route, json=body), 422, field)


def test_a_lora_name_cannot_leave_the_lora_folder(api: httpx.Client, server: Server) -> None:
    """``<lora:../../x:1>`` would be the real LoRA ``ROOT/x.safetensors`` if names were joined onto the folder."""
    root = server.outputs.parent
    make_lora(root / "x.safetensors", seed=3)
    make_lora(root / "models" / "x.safetensors", seed=3)
    for tag in ("<lora:../../x:1>", "<lora:../x:1>", f"<lora:{root / 'x'}:1>", "<lora:..\\..\\x:1>"):
        body = _error(api.post("/txt2img", json={**FAST, "prompt": f"a cat {tag}"}), 404, "lora")
        assert "not found" in body["detail"], tag
    assert [lora["name"] for lora in api.get("/loras").json()] == ["detail"]
    hashes = root / "models" / ".easel-cache" / "hashes.json"
    assert "x.safetensors" not in (hashes.read_text() if hashes.exists() else "")  # never opened to be hashed


def _chunked(total: int) -> Iterator[bytes]:
    """A JSON body of about ``total`` bytes sent in pieces, so httpx streams it chunked, without Content-Length."""
    yield b'{"prompt": "'
    for _ in range(total // 65536):
        yield b"x" * 65536
    yield b'"}'


def test_malformed_json_and_oversized_bodies_are_refused(api: httpx.Client) -> None:
    broken = api.post("/txt2img", content=b'{"prompt": ', headers={"Content-Type": "application/json"})
    assert broken.status_code == 422 and broken.json()["error"] == "InvalidRequest"
    big = api.post("/txt2img", content=b'{"prompt": "' + b"x" * (9 * 1024 * 1024) + b'"}')
    assert big.status_code == 413 and "8 MB" in big.json()["detail"]
    for path in ("/txt2img", "/png-info"):
        streamed = api.post(path, content=_chunked(9 * 1024 * 1024), headers={"Content-Type": "application/json"})
        assert (
            "content-length" not in streamed.request.headers
            and streamed.request.headers["transfer-encoding"] == "chunked"
        )
        assert streamed.status_code == 413 and "8 MB" in streamed.json()["detail"], streamed.text
    small = api.post(
        "/png-info", content=iter([b'{"image": ', b'"@@@"}']), headers={"Content-Type": "application/json"}
    )
    assert small.status_code == 422 and small.json()["field"] == "image"  # under the limit: read and judged
    assert api.post("/txt2img", json=FAST).status_code == 200


# -- the webuiapi client from PyPI, used as its README shows ---------------------------------------------------
@pytest.fixture(scope="module")
def webui_client(server: Server):
    import webuiapi

    port = int(server.url.rstrip("/").rsplit(":", 1)[1])
    return webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler a", steps=2)


def test_webuiapi_txt2img_img2img_and_inpaint(webui_client) -> None:
    import webuiapi

    result = webui_client.txt2img(
        prompt="a red circle", negative_prompt="blue", seed=5, cfg_scale=7, width=SIZE, height=SIZE
    )
    assert isinstance(result, webuiapi.WebUIApiResult)
    assert result.image.size == (SIZE, SIZE) and "Seed: 5," in result.image.info["parameters"]
    assert result.info["all_seeds"] == [5] and result.info["sampler_name"] == "Euler a"

    scene = _scene()
    result = webui_client.img2img(
        images=[scene], prompt="a blue circle", seed=6, denoising_strength=0.5, width=SIZE, height=SIZE
    )
    assert result.image.size == (SIZE, SIZE) and "Denoising strength: 0.5" in result.info["infotexts"][0]

    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)
    result = webui_client.img2img(
        images=[scene], mask_image=mask, inpainting_fill=1, inpaint_full_res=False, mask_blur=0, prompt="green",
        seed=7, denoising_strength=1.0, width=SIZE, height=SIZE,
    )  # fmt: skip
    painted = np.asarray(result.image.convert("RGB"), dtype=np.int16)
    assert np.abs(painted[:, 36:] - np.asarray(scene, dtype=np.int16)[:, 36:]).max() <= 2
    assert "Mask blur: 0" in result.info["infotexts"][0]


def test_webuiapi_options_models_and_interrupt(webui_client, api: httpx.Client) -> None:
    options = webui_client.get_options()
    assert options["sd_model_checkpoint"].startswith("tiny-sd1.safetensors")
    webui_client.set_options({"CLIP_stop_at_last_layers": 2})
    try:
        assert webui_client.get_options()["CLIP_stop_at_last_layers"] == 2
    finally:
        webui_client.set_options({"CLIP_stop_at_last_layers": 1})
    (title,) = webui_client.util_get_model_names()
    assert title.startswith("tiny-sd1.safetensors")
    webui_client.util_set_model("tiny-sd1")  # its fuzzy match, then POST /options
    assert "Euler a" in webui_client.util_get_sampler_names()

    results: list[Any] = []
    worker = threading.Thread(
        target=lambda: results.append(webui_client.txt2img(prompt="long", steps=150, width=256, height=256, seed=1))
    )
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and api.get("/progress").json()["state"]["sampling_step"] < 1:
        time.sleep(0.1)
    assert webui_client.interrupt() == {}
    worker.join(30)
    assert not worker.is_alive() and results[0].images == []
