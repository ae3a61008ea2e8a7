"""A1111 infotext: exact writing, key order, quoting, parsing other tools' texts, round trips, reading from files."""

from __future__ import annotations

import io
import random
import time
from pathlib import Path

import pytest
from PIL import Image

from webui import samplers
from webui.outputs.infotext import (
    PARSE_DEFAULTS,
    decode_user_comment,
    format_infotext,
    infotext_for,
    parse_infotext,
    read_infotext,
    request_fields_from_infotext,
)
from webui.outputs.saving import save_image
from webui.types import GenerationRequest, MaskedContent, Mode

# Section 4 of the compatibility reference, verbatim.
A1111_EXAMPLE = (
    "masterpiece, 1girl, (blue eyes:1.2), <lora:add_detail:0.7>\n"
    "Negative prompt: easynegative, lowres\n"
    "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, "
    "VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.45, Clip skip: 2, Hires upscale: 2, "
    'Hires steps: 15, Hires upscaler: Latent, Lora hashes: "add_detail: 7c6bad76eb54", '
    'TI hashes: "easynegative: c74b4e810b03", Version: v1.10.1'
)

FORGE_EXAMPLE = (
    "score_9, score_8_up, 1girl, <lora:detail:0.8>\n"
    "Negative prompt: worst quality\n"
    "Steps: 30, Sampler: Euler a, Schedule type: Automatic, CFG scale: 5.5, Seed: 42, Size: 832x1216, "
    'Model hash: 1234567890, Model: ponyDiffusionV6XL, Lora hashes: "detail: abcdef123456, style: 0123456789ab", '
    "Hires Module 1: Use same choices, Hires CFG Scale: 5.5, Hires upscale: 1.5, Hires steps: 10, "
    "Hires upscaler: 4x-UltraSharp, Version: f2.0.1v1.10.1-previous-519-g44eb4ea8, Module 1: sdxl_vae"
)


def _image(size: tuple[int, int] = (64, 64), mode: str = "RGB") -> Image.Image:
    return Image.new(mode, size, 128)


def _txt2img(**overrides) -> GenerationRequest:
    fields = dict(prompt="a cat, best quality", negative_prompt="blurry", steps=20, width=512, height=768)
    fields.update(overrides)
    return GenerationRequest.build(**fields)


def _inpaint(**overrides) -> GenerationRequest:
    fields = dict(
        mode=Mode.INPAINT,
        prompt="a dog",
        init_image=_image(),
        mask=_image(mode="L"),
        denoising_strength=0.6,
        mask_blur=8,
        inpainting_fill=MaskedContent.LATENT_NOISE,
        inpaint_full_res=True,
        inpaint_full_res_padding=48,
        inpainting_mask_invert=True,
    )
    fields.update(overrides)
    return GenerationRequest.build(**fields)


def _write(request: GenerationRequest, seed: int = 1234, **kwargs) -> str:
    sampler, schedule = samplers.resolve(request.sampler_name, request.scheduler)
    args = dict(model_name="v1-5-pruned-emaonly", model_hash="6ce0161689", version="0.1.0")
    args.update(kwargs)
    return infotext_for(request, seed=seed, sampler=sampler.name, schedule=schedule, **args)


# -- writing ---------------------------------------------------------------------------------------------------


def test_txt2img_infotext_exact() -> None:
    text = _write(_txt2img(clip_skip=2))
    assert text == (
        "a cat, best quality\n"
        "Negative prompt: blurry\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, "
        "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, RNG: CPU, Version: easel-0.1.0"
    )


def test_img2img_infotext_exact_with_vae_and_extra() -> None:
    request = GenerationRequest.build(
        mode=Mode.IMG2IMG, prompt="a house", init_image=_image(), cfg_scale=7.5, denoising_strength=0.45
    )
    text = _write(
        request, seed=7, vae_name="vae-ft-mse.safetensors", vae_hash="735e4c3a44", extra={"Emphasis": "Original"}
    )
    assert text == (
        "a house\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 7, Size: 512x512, "
        "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, VAE: vae-ft-mse.safetensors, "
        "Denoising strength: 0.45, RNG: CPU, Emphasis: Original, Version: easel-0.1.0"
    )


def test_inpaint_infotext_exact() -> None:
    text = _write(_inpaint(), seed=99, model_hash=None)
    assert text == (
        "a dog\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 99, Size: 512x512, "
        "Model: v1-5-pruned-emaonly, Denoising strength: 0.6, RNG: CPU, Mask blur: 8, Inpaint area: Only masked, "
        "Masked area padding: 48, Masked content: latent noise, Mask mode: Inpaint not masked, Version: easel-0.1.0"
    )


def test_inpaint_defaults_left_to_the_parser() -> None:
    text = _write(_inpaint(inpaint_full_res=False, inpaint_full_res_padding=32, inpainting_mask_invert=False))
    assert "Inpaint area" not in text
    assert "Masked area padding" not in text
    assert "Mask mode" not in text
    assert "Mask blur: 8, Masked content: latent noise, Version" in text


def test_txt2img_has_no_img2img_keys() -> None:
    text = _write(_txt2img())
    for key in ("Denoising strength", "Mask blur", "Masked content", "Clip skip"):
        assert key not in text


def test_format_reproduces_reference_example_from_scrambled_params() -> None:
    params = {
        "Version": "v1.10.1",
        "Hires upscale": 2,
        "Clip skip": 2,
        "Seed": 1234567890,
        "Hires steps": 15,
        "Steps": 25,
        "VAE": "vae-ft-mse-840000-ema-pruned.safetensors",
        "Hires upscaler": "Latent",
        "Sampler": "DPM++ 2M",
        "CFG scale": 7.0,
        "Lora hashes": "add_detail: 7c6bad76eb54",
        "Size": "512x768",
        "Model": "v1-5-pruned-emaonly",
        "TI hashes": "easynegative: c74b4e810b03",
        "Denoising strength": 0.45,
        "Model hash": "6ce0161689",
        "Schedule type": "Karras",
        "VAE hash": "735e4c3a44",
        "Face restoration": None,
    }
    prompt, negative, _ = A1111_EXAMPLE.split("\n")
    assert format_infotext(prompt, negative.removeprefix("Negative prompt: "), params) == A1111_EXAMPLE


def test_key_order_fixed_then_extensions_then_version_user() -> None:
    params = {"User": "bob", "zeta": 1, "Tiling": True, "Version": "v", "alpha": 2, "RNG": "CPU", "Steps": 3}
    line = format_infotext("p", "", params).splitlines()[-1]
    keys = [part.split(":")[0] for part in line.split(", ")]
    assert keys == ["Steps", "RNG", "Tiling", "zeta", "alpha", "Version", "User"]


@pytest.mark.parametrize(
    ("value", "written", "read_back"),
    [
        ("a, b", '"a, b"', "a, b"),
        ("k: v", '"k: v"', "k: v"),
        ("two\nlines", '"two\\nlines"', "two\nlines"),
        ("日本, 語", '"日本, 語"', "日本, 語"),
        ('say "hi", ok', '"say \\"hi\\", ok"', 'say "hi", ok'),
        ('"quoted"', '"\\"quoted\\""', '"quoted"'),
        ("plain text", "plain text", "plain text"),
        (7.0, "7", 7),
        (7.5, "7.5", 7.5),
        (0.45, "0.45", 0.45),
        (1.0, "1", 1),
        (True, "True", "True"),
        (20, "20", 20),
    ],
)
def test_value_formatting_and_quoting(value, written, read_back) -> None:
    text = format_infotext("p", "", {"Steps": 1, "Extra": value, "Seed": 3})
    assert text.splitlines()[-1] == f"Steps: 1, Seed: 3, Extra: {written}"
    assert parse_infotext(text)["Extra"] == read_back


def test_none_values_and_empty_negative_are_omitted() -> None:
    text = format_infotext("p", "", {"Steps": 1, "Seed": None, "VAE": None})
    assert text == "p\nSteps: 1"


# -- parsing ---------------------------------------------------------------------------------------------------


def test_parse_reference_example() -> None:
    parsed = parse_infotext(A1111_EXAMPLE)
    assert parsed["Prompt"] == "masterpiece, 1girl, (blue eyes:1.2), <lora:add_detail:0.7>"
    assert parsed["Negative prompt"] == "easynegative, lowres"
    expected = {
        "Steps": 25,
        "Sampler": "DPM++ 2M",
        "Schedule type": "Karras",
        "CFG scale": 7,
        "Seed": 1234567890,
        "Size-1": 512,
        "Size-2": 768,
        "Model hash": "6ce0161689",
        "Model": "v1-5-pruned-emaonly",
        "VAE hash": "735e4c3a44",
        "VAE": "vae-ft-mse-840000-ema-pruned.safetensors",
        "Denoising strength": 0.45,
        "Clip skip": 2,
        "Hires upscale": 2,
        "Hires steps": 15,
        "Hires upscaler": "Latent",
        "Lora hashes": "add_detail: 7c6bad76eb54",
        "TI hashes": "easynegative: c74b4e810b03",
        "Version": "v1.10.1",
    }
    for key, value in expected.items():
        assert parsed[key] == value, key
    assert "Size" not in parsed
    assert parsed["RNG"] == "GPU"  # default: A1111 drew this noise on the GPU


def test_parse_forge_example_keeps_numeric_looking_hashes_as_text() -> None:
    parsed = parse_infotext(FORGE_EXAMPLE)
    assert parsed["Model hash"] == "1234567890"
    assert parsed["Lora hashes"] == "detail: abcdef123456, style: 0123456789ab"
    assert parsed["Hires CFG Scale"] == 5.5
    assert parsed["Version"] == "f2.0.1v1.10.1-previous-519-g44eb4ea8"
    assert parsed["Module 1"] == "sdxl_vae"
    assert parsed["Clip skip"] == 1
    fields = request_fields_from_infotext(parsed)
    assert fields["sampler_name"] == "Euler a"
    assert fields["cfg_scale"] == 5.5
    assert (fields["width"], fields["height"]) == (832, 1216)
    assert fields["checkpoint"] == "ponyDiffusionV6XL"


def test_parse_without_negative_prompt() -> None:
    parsed = parse_infotext("a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 512x512")
    assert parsed["Prompt"] == "a cat"
    assert parsed["Negative prompt"] == ""
    assert parsed["Seed"] == 5


def test_parse_multiline_prompt_with_key_value_lookalikes() -> None:
    text = (
        "style: anime, mood: calm, light: soft\n"
        "second line\n"
        "Negative prompt: bad: hands,\n"
        "more negative\n"
        "Steps: 12, Sampler: Euler, CFG scale: 4, Seed: 5, Size: 640x512"
    )
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == "style: anime, mood: calm, light: soft\nsecond line"
    assert parsed["Negative prompt"] == "bad: hands,\nmore negative"
    assert "style" not in parsed
    assert parsed["Steps"] == 12


def test_parse_last_line_with_fewer_than_three_pairs_is_prompt() -> None:
    parsed = parse_infotext("just a prompt\nwith: colons, and: two pairs")
    assert parsed["Prompt"] == "just a prompt\nwith: colons, and: two pairs"
    assert "with" not in parsed
    assert {k: parsed[k] for k in PARSE_DEFAULTS} == PARSE_DEFAULTS


def test_parse_legacy_combined_sampler_name() -> None:
    parsed = parse_infotext("x\nSteps: 20, Sampler: DPM++ 2M SDE Karras, CFG scale: 7, Seed: 1, Size: 512x512")
    fields = request_fields_from_infotext(parsed)
    assert (fields["sampler_name"], fields["scheduler"]) == ("DPM++ 2M SDE", "Karras")


def test_parse_windows_line_endings() -> None:
    parsed = parse_infotext("a cat\r\nNegative prompt: dog\r\nSteps: 20, Sampler: Euler, Seed: 3\r\n")
    assert (parsed["Prompt"], parsed["Negative prompt"], parsed["Seed"]) == ("a cat", "dog", 3)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "\n\n\n",
        "\x00\xff\ufffd",
        "Negative prompt:",
        '"""',
        "Steps: ,,,:::, : : ,",
        'a: "x, b: "y, c: "z',
        'a: "\\", b: "\\u12", c: "\\ud800"',
        "a: 1, b: 2x3, c: 99999999999999999999999999, d: 1e400, e: 00012",
        "::::" * 1000,
    ],
)
def test_parse_garbage_never_raises(garbage: str) -> None:
    parsed = parse_infotext(garbage)
    assert isinstance(parsed["Prompt"], str)
    request_fields_from_infotext(parsed)


def test_parse_random_garbage_never_raises() -> None:
    rng = random.Random(0)
    alphabet = 'ab :,"\\\n\r\t0123456789x-/.{}[]é\x00'
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 120)))
        request_fields_from_infotext(parse_infotext(text))


def test_parse_huge_line_is_fast() -> None:
    started = time.perf_counter()
    parse_infotext("word " * 40_000 + ",:")
    parse_infotext(" " * 200_000 + "x")
    assert time.perf_counter() - started < 2.0


def test_unparseable_field_values_are_left_for_build_to_reject() -> None:
    fields = request_fields_from_infotext(parse_infotext("p\nSteps: many, Sampler: Nope, Seed: 1, Size: 512x512"))
    assert fields["steps"] == "many"
    assert fields["sampler_name"] == "Nope"


# -- round trips -----------------------------------------------------------------------------------------------


def _round_trip(request: GenerationRequest, seed: int = 4242, **extra_fields) -> GenerationRequest:
    parsed = parse_infotext(_write(request, seed=seed))
    fields = request_fields_from_infotext(parsed)
    assert fields.pop("checkpoint") == "v1-5-pruned-emaonly"
    return GenerationRequest.build(**fields, **extra_fields)


def _assert_same(before: GenerationRequest, after: GenerationRequest, seed: int) -> None:
    for name in ("prompt", "negative_prompt", "steps", "cfg_scale", "width", "height", "clip_skip"):
        assert getattr(after, name) == getattr(before, name), name
    assert after.seed == seed
    assert samplers.resolve(after.sampler_name, after.scheduler) == samplers.resolve(
        before.sampler_name, before.scheduler
    )


def test_round_trip_txt2img() -> None:
    before = _txt2img(
        prompt="a photo: of, a cat\n(detailed:1.2), second line",
        negative_prompt="ugly,\nbad: anatomy",
        sampler_name="k_euler_a",
        cfg_scale=6.5,
        clip_skip=2,
        seed=-1,
        steps=33,
    )
    after = _round_trip(before)
    _assert_same(before, after, 4242)


def test_round_trip_img2img() -> None:
    before = GenerationRequest.build(
        mode=Mode.IMG2IMG,
        prompt="a house",
        init_image=_image(),
        denoising_strength=0.35,
        sampler_name="DPM++ 2M SDE",
        scheduler="Exponential",
        width=768,
        height=512,
    )
    after = _round_trip(before, mode=Mode.IMG2IMG, init_image=_image())
    _assert_same(before, after, 4242)
    assert after.denoising_strength == 0.35


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"inpaint_full_res": False, "inpaint_full_res_padding": 32, "inpainting_mask_invert": False},
        {"inpaint_full_res": False, "inpaint_full_res_padding": 0, "inpainting_fill": MaskedContent.FILL},
        {"inpainting_fill": MaskedContent.LATENT_NOTHING, "mask_blur": 0},
    ],
)
def test_round_trip_inpaint(overrides) -> None:
    before = _inpaint(**overrides)
    after = _round_trip(before, seed=5, mode=Mode.INPAINT, init_image=_image(), mask=_image(mode="L"))
    _assert_same(before, after, 5)
    for name in (
        "denoising_strength",
        "mask_blur",
        "inpainting_fill",
        "inpaint_full_res",
        "inpaint_full_res_padding",
        "inpainting_mask_invert",
    ):
        assert getattr(after, name) == getattr(before, name), name


def test_checkpoint_hint_falls_back_to_hash() -> None:
    fields = request_fields_from_infotext(parse_infotext("p\nSteps: 1, Seed: 2, Model hash: abcdef1234"))
    assert fields["checkpoint"] == "abcdef1234"


# -- reading from files ----------------------------------------------------------------------------------------


def test_read_infotext_from_saved_png(tmp_path: Path) -> None:
    text = _write(_txt2img(prompt="猫, a cat"))
    path = save_image(_image(), tmp_path, Mode.TXT2IMG, 1234, text)
    with Image.open(path) as image:
        assert read_infotext(image) == text


def test_read_infotext_absent() -> None:
    buffer = io.BytesIO()
    _image().save(buffer, format="PNG")
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        assert read_infotext(image) is None


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
@pytest.mark.parametrize("encoding", ["utf-16-be", "utf-16-le"])
def test_read_infotext_from_exif_user_comment(fmt: str, encoding: str) -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + A1111_EXAMPLE.encode(encoding)
    buffer = io.BytesIO()
    _image().save(buffer, format=fmt, exif=exif)
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        assert read_infotext(image) == A1111_EXAMPLE


def test_decode_user_comment_variants() -> None:
    assert decode_user_comment(b"ASCII\0\0\0hello") == "hello"
    assert decode_user_comment(b"UNICODE\0" + "\ufeffhi".encode("utf-16-be")) == "hi"
    assert decode_user_comment("UNICODE\0text") == "text"
    assert decode_user_comment(b"no prefix at all") == "no prefix at all"


# -- other tools' metadata -------------------------------------------------------------------------------------
# Each image below carries its tool's chunks as that tool writes them (names, JSON shapes, value types), so the
# readers are tested on what users actually drop into PNG Info.

NOVELAI_COMMENT = {
    "prompt": "1girl, silver hair, library, best quality, amazing quality",
    "steps": 28,
    "height": 1216,
    "width": 832,
    "scale": 5.0,
    "uncond_scale": 1.0,
    "cfg_rescale": 0.0,
    "seed": 1932418571,
    "n_samples": 1,
    "hide_debug_overlay": False,
    "noise_schedule": "native",
    "legacy_v3_extend": False,
    "sampler": "k_euler_ancestral",
    "controlnet_strength": 1.0,
    "controlnet_model": None,
    "dynamic_thresholding": False,
    "sm": False,
    "sm_dyn": False,
    "skip_cfg_below_sigma": 0.0,
    "lora_unet_weights": None,
    "lora_clip_weights": None,
    "uc": "lowres, bad anatomy, bad hands, text, error",
    "request_type": "PromptGenerateRequest",
    "signed_hash": "c2lnbmF0dXJl",
}

# ComfyUI's default workflow as its "prompt" chunk holds it (API format: node id -> class_type and inputs, a link
# being [node id, output index]).
COMFYUI_DEFAULT = {
    "3": {"inputs": {"seed": 156680208700286, "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal",
                     "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                     "latent_image": ["5", 0]}, "class_type": "KSampler", "_meta": {"title": "KSampler"}},
    "4": {"inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}, "class_type": "CheckpointLoaderSimple",
          "_meta": {"title": "Load Checkpoint"}},
    "5": {"inputs": {"width": 512, "height": 512, "batch_size": 1}, "class_type": "EmptyLatentImage",
          "_meta": {"title": "Empty Latent Image"}},
    "6": {"inputs": {"text": "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,",
                     "clip": ["4", 1]}, "class_type": "CLIPTextEncode", "_meta": {"title": "CLIP Text Encode (Prompt)"}},
    "7": {"inputs": {"text": "text, watermark", "clip": ["4", 1]}, "class_type": "CLIPTextEncode",
          "_meta": {"title": "CLIP Text Encode (Prompt)"}},
    "8": {"inputs": {"samples": ["3", 0], "vae": ["4", 2]}, "class_type": "VAEDecode", "_meta": {"title": "VAE Decode"}},
    "9": {"inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}, "class_type": "SaveImage",
          "_meta": {"title": "Save Image"}},
}  # fmt: skip

INVOKEAI_METADATA = {
    "generation_mode": "sdxl_txt2img",
    "positive_prompt": "a lighthouse on a cliff at dusk, dramatic clouds",
    "negative_prompt": "blurry, lowres",
    "width": 1024,
    "height": 768,
    "seed": 3367584713,
    "rand_device": "cpu",
    "cfg_scale": 6.5,
    "cfg_rescale_multiplier": 0,
    "steps": 30,
    "scheduler": "dpmpp_2m_k",
    "model": {
        "key": "6d5a1c2e-8f0b-4c55-9d1e-2a9f3f6b7c10",
        "hash": "blake3:5f2bd5e9b5c2f0a1d1c3e9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8",
        "name": "Juggernaut XL v9",
        "base": "sdxl",
        "type": "main",
    },
    "positive_style_prompt": "a lighthouse on a cliff at dusk, dramatic clouds",
    "negative_style_prompt": "blurry, lowres",
    "app_version": "4.2.4",
}

FOOOCUS_PARAMETERS = {
    "adm_guidance": "(1.5, 0.8, 0.3)",
    "base_model": "juggernautXL_v8Rundiffusion",
    "base_model_hash": "aeb7e9e6897a1e58b10494bd989d001e3d4bc9b634633cd7b559838f612c2867",
    "full_negative_prompt": ["(worst quality, low quality, normal quality, lowres:1.4)", "unrealistic, cartoon"],
    "full_prompt": ["a red fox in the snow", "cinematic still, emotional, harmonious, vignette, highly detailed"],
    "guidance_scale": 4,
    "loras": [["sd_xl_offset_example-lora_1.0", 0.1, "4852686128"]],
    "metadata_scheme": "fooocus",
    "negative_prompt": "",
    "performance": "Speed",
    "prompt": "a red fox in the snow",
    "prompt_expansion": "",
    "refiner_model": "None",
    "refiner_switch": 0.5,
    "resolution": "(1152, 896)",
    "sampler": "dpmpp_2m_sde_gpu",
    "scheduler": "karras",
    "seed": "4239158913",
    "sharpness": 2,
    "steps": 30,
    "styles": "['Fooocus V2', 'Fooocus Photograph']",
    "vae": "Default (model)",
    "version": "Fooocus v2.5.5",
}


def _png_with(chunks: dict[str, str], size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A PNG (re-opened from bytes, as an upload is) carrying ``chunks`` as text chunks."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    _image(size).save(buffer, format="PNG", pnginfo=info)
    return Image.open(io.BytesIO(buffer.getvalue()))


def novelai_png() -> Image.Image:
    import json

    return _png_with(
        {
            "Title": "AI generated image",
            "Description": "1girl, silver hair, library, best quality, amazing quality",
            "Software": "NovelAI",
            "Source": "NovelAI Diffusion V3 7BCCAA2C",
            "Generation time": "4.9",
            "Comment": json.dumps(NOVELAI_COMMENT),
        },
        size=(832, 1216),
    )


def comfyui_png(graph: dict | None = None, size: tuple[int, int] = (512, 512)) -> Image.Image:
    import json

    workflow = {"last_node_id": 9, "last_link_id": 9, "nodes": [], "links": [], "version": 0.4}
    return _png_with({"prompt": json.dumps(graph or COMFYUI_DEFAULT), "workflow": json.dumps(workflow)}, size=size)


def test_novelai_description_and_comment_read_as_infotext() -> None:
    with novelai_png() as image:
        text = read_infotext(image)
    assert text == (
        "1girl, silver hair, library, best quality, amazing quality\n"
        "Negative prompt: lowres, bad anatomy, bad hands, text, error\n"
        "Steps: 28, Sampler: Euler a, CFG scale: 5, Seed: 1932418571, Size: 832x1216, "
        "Model: NovelAI Diffusion V3 7BCCAA2C"
    )
    fields = request_fields_from_infotext(parse_infotext(text))
    assert GenerationRequest.build(**{k: v for k, v in fields.items() if k != "checkpoint"}).seed == 1932418571


def test_comfyui_graph_is_followed_from_the_ksampler_to_its_text_encoders() -> None:
    with comfyui_png() as image:
        text = read_infotext(image)
    assert text == (
        "beautiful scenery nature glass bottle landscape, , purple galaxy bottle,\n"
        "Negative prompt: text, watermark\n"
        "Steps: 20, Sampler: Euler, Schedule type: Uniform, CFG scale: 8, Seed: 156680208700286, Size: 512x512, "
        "Model: v1-5-pruned-emaonly"
    )


def test_comfyui_advanced_sampler_through_lora_controlnet_and_a_hires_pass() -> None:
    """A real-world graph: KSamplerAdvanced (``noise_seed``) fed through a LoRA loader and a ControlNet apply node
    (which hands on both conditionings), SDXL text encoders, and a second, hires KSampler that must not win."""
    graph = {
        "10": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "SDXL\\sd_xl_base_1.0.safetensors"}},
        "11": {"class_type": "LoraLoader", "inputs": {"lora_name": "detail.safetensors", "strength_model": 0.8,
                                                       "strength_clip": 0.8, "model": ["10", 0], "clip": ["10", 1]}},
        "12": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"text_g": "a castle on a hill", "text_l": "castle",
                                                              "width": 1024, "height": 1024, "clip": ["11", 1]}},
        "13": {"class_type": "CLIPTextEncode", "inputs": {"text": ["20", 0], "clip": ["11", 1]}},
        "20": {"class_type": "PrimitiveString", "inputs": {"value": "fog, people"}},
        "14": {"class_type": "ControlNetApplyAdvanced", "inputs": {"positive": ["12", 0], "negative": ["13", 0],
                                                                   "control_net": ["15", 0], "image": ["16", 0],
                                                                   "strength": 0.6}},
        "17": {"class_type": "EmptyLatentImage", "inputs": {"width": 896, "height": 1152, "batch_size": 1}},
        "18": {"class_type": "KSamplerAdvanced", "inputs": {
            "add_noise": "enable", "noise_seed": 987654321, "steps": 25, "cfg": 6.5, "sampler_name": "dpmpp_2m_sde_gpu",
            "scheduler": "karras", "positive": ["14", 0], "negative": ["14", 1], "latent_image": ["17", 0],
            "start_at_step": 0, "end_at_step": 10000, "return_with_leftover_noise": "disable", "model": ["11", 0]}},
        "19": {"class_type": "LatentUpscaleBy", "inputs": {"samples": ["18", 0], "upscale_method": "nearest-exact",
                                                           "scale_by": 1.5}},
        "2": {"class_type": "KSampler", "inputs": {
            "seed": 1, "steps": 10, "cfg": 6.5, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.45,
            "model": ["11", 0], "positive": ["14", 0], "negative": ["14", 1], "latent_image": ["19", 0]}},
    }  # fmt: skip
    with comfyui_png(graph, size=(1344, 1728)) as image:
        parsed = parse_infotext(read_infotext(image))
    assert (parsed["Prompt"], parsed["Negative prompt"]) == ("a castle on a hill", "fog, people")
    assert (parsed["Seed"], parsed["Steps"], parsed["CFG scale"]) == (987654321, 25, 6.5)
    assert (parsed["Sampler"], parsed["Schedule type"]) == ("DPM++ 2M SDE", "Karras")
    assert (parsed["Size-1"], parsed["Size-2"], parsed["Model"]) == (896, 1152, "sd_xl_base_1.0")
    assert "Denoising strength" not in parsed


def test_invokeai_metadata_reads_as_infotext() -> None:
    import json

    graph = json.dumps({"id": "sdxl_graph", "nodes": {}, "edges": []})
    with _png_with({"invokeai_metadata": json.dumps(INVOKEAI_METADATA), "invokeai_graph": graph}) as image:
        text = read_infotext(image)
    assert text == (
        "a lighthouse on a cliff at dusk, dramatic clouds\n"
        "Negative prompt: blurry, lowres\n"
        "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3367584713, Size: 1024x768, "
        "Model: Juggernaut XL v9, Version: InvokeAI 4.2.4"
    )
    old = {**INVOKEAI_METADATA, "model": {"model_name": "amixx_3Prunedfp16", "base_model": "sd-1"}, "clip_skip": 1}
    with _png_with({"invokeai_metadata": json.dumps(old)}) as image:
        parsed = parse_infotext(read_infotext(image))
    assert (parsed["Model"], parsed["Clip skip"]) == ("amixx_3Prunedfp16", 2)  # InvokeAI 3: one layer skipped


def test_fooocus_json_parameters_read_as_infotext() -> None:
    import json

    with _png_with({"parameters": json.dumps(FOOOCUS_PARAMETERS), "fooocus_scheme": "fooocus"}) as image:
        text = read_infotext(image)
    assert text == (
        "a red fox in the snow, cinematic still, emotional, harmonious, vignette, highly detailed\n"
        "Negative prompt: (worst quality, low quality, normal quality, lowres:1.4), unrealistic, cartoon\n"
        "Steps: 30, Sampler: DPM++ 2M SDE, Schedule type: Karras, CFG scale: 4, Seed: 4239158913, Size: 1152x896, "
        "Model hash: aeb7e9e689, Model: juggernautXL_v8Rundiffusion, Version: Fooocus v2.5.5"
    )


def test_json_parameters_go_to_the_other_tools_readers_and_are_kept_when_none_claims_them() -> None:
    """A JSON ``parameters`` is another tool's (Fooocus's, read above through the same readers): a ComfyUI graph in
    the same file is read rather than that JSON shown as text; JSON no reader claims is shown as it is."""
    import json

    swarm = json.dumps({"sui_image_params": {"prompt": "a castle", "seed": 3}})  # SwarmUI's, over a ComfyUI graph
    with _png_with({"parameters": swarm, "prompt": json.dumps(COMFYUI_DEFAULT)}) as image:
        parsed = parse_infotext(read_infotext(image))
    assert parsed["Seed"] == 156680208700286 and parsed["Steps"] == 20
    with _png_with({"parameters": swarm}) as image:
        assert read_infotext(image) == swarm


def test_fooocus_json_in_a_jpegs_exif_user_comment() -> None:
    """Fooocus's JPEGs put the same JSON in IFD0's UserComment (not the Exif IFD A1111 uses)."""
    import json

    exif = Image.Exif()
    exif[0x9286] = json.dumps(FOOOCUS_PARAMETERS)
    exif[0x927C] = "fooocus"
    buffer = io.BytesIO()
    _image().save(buffer, format="JPEG", exif=exif)
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        parsed = parse_infotext(read_infotext(image))
    assert parsed["Prompt"].startswith("a red fox in the snow, cinematic") and parsed["Seed"] == 4239158913


def test_an_unknown_sampler_is_left_out_and_a_foreign_chunk_that_is_not_json_is_ignored() -> None:
    import json

    graph = json.loads(json.dumps(COMFYUI_DEFAULT))
    graph["3"]["inputs"]["sampler_name"] = "res_multistep"  # a ComfyUI sampler Easel does not have
    with comfyui_png(graph) as image:
        parsed = parse_infotext(read_infotext(image))
    assert "Sampler" not in parsed and parsed["Steps"] == 20
    # Karras sigmas with Euler a are NovelAI's, not something Easel's Euler a can run: the schedule is dropped.
    karras = {**NOVELAI_COMMENT, "noise_schedule": "karras"}
    with _png_with({"Software": "NovelAI", "Description": "x", "Comment": json.dumps(karras)}) as image:
        parsed = parse_infotext(read_infotext(image))
    assert parsed["Sampler"] == "Euler a" and parsed["Schedule type"] == "Automatic"  # the parser's default
    with _png_with({"prompt": "just a caption someone typed", "Software": "NovelAI", "Comment": "{broken"}) as image:
        assert read_infotext(image) is None
    # A1111's own text always wins over another tool's chunks in the same file.
    with _png_with({"parameters": A1111_EXAMPLE, "prompt": json.dumps(COMFYUI_DEFAULT)}) as image:
        assert read_infotext(image) == A1111_EXAMPLE


def test_a_cyclic_comfyui_graph_ends() -> None:
    graph = {
        "1": {"class_type": "KSampler", "inputs": {"seed": ["2", 0], "steps": 5, "cfg": 7, "sampler_name": "euler",
                                                   "scheduler": "karras", "positive": ["3", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "model": ["5", 0]}},
        "2": {"class_type": "SeedLoop", "inputs": {"seed": ["2", 0]}},
        "3": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["3", 0], "conditioning_2": ["3", 0]}},
        "4": {"class_type": "LatentLoop", "inputs": {"samples": ["4", 0]}},
        "5": {"class_type": "ModelLoop", "inputs": {"model": ["5", 0]}},
    }  # fmt: skip
    with comfyui_png(graph, size=(64, 48)) as image:
        parsed = parse_infotext(read_infotext(image))
    assert (parsed["Steps"], parsed["Size-1"], parsed["Size-2"]) == (5, 64, 48) and "Seed" not in parsed
