"""Offline loading of original-layout checkpoints and diffusers folders, checked on tiny random models."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.fixtures.tiny_models import make_checkpoint, save_checkpoint, tiny_components
from webui.errors import ModelLoadError
from webui.weights import loader
from webui.weights.clip_tokenizer import PAD_OPEN_CLIP, load_clip_tokenizer
from webui.weights.convert import text_state_dict, to_original_layout
from webui.weights.detect import Architecture, detect_architecture

F32 = torch.float32


def _load(path: Path, dtype: torch.dtype = F32) -> loader.LoadedModel:
    return loader.load_single_file(path, load_file(str(path)), dtype)


def _unet_out(unet: Any) -> torch.Tensor:
    """The U-Net's output on a fixed input (with SDXL's extra conditioning when it needs it)."""
    gen = torch.Generator().manual_seed(1)
    cfg = unet.config
    x = torch.randn(1, cfg.in_channels, 8, 8, generator=gen)
    context = torch.randn(1, 77, cfg.cross_attention_dim, generator=gen)
    extra = None
    if cfg.addition_embed_type == "text_time":
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        extra = {
            "text_embeds": torch.randn(1, pooled, generator=gen),
            "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]]),
        }
    with torch.no_grad():
        return unet(x, torch.tensor([500]), encoder_hidden_states=context, added_cond_kwargs=extra).sample


# --- tokenizer ------------------------------------------------------------------------------------------------


def test_shipped_tokenizer_matches_openai_clip() -> None:
    tok = load_clip_tokenizer()
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tok) == 49408 and tok.model_max_length == 77 and tok.pad_token_id == 49407
    open_clip = load_clip_tokenizer(PAD_OPEN_CLIP)
    assert open_clip("a cat", padding="max_length", max_length=6).input_ids == [49406, 320, 2368, 49407, 0, 0]


# --- detection ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "expected", "label"),
    [
        ("tiny_sd1_ckpt", Architecture("sd1", False, "epsilon", 512), "SD1.x"),
        ("tiny_sd1_inpaint_ckpt", Architecture("sd1", True, "epsilon", 512), "SD1.x inpaint"),
        ("tiny_sd2_ckpt", Architecture("sd2", False, "epsilon", 512), "SD2.x"),
        ("tiny_sd2_v_ckpt", Architecture("sd2", False, "v_prediction", 768), "SD2.x (768, v-prediction)"),
        ("tiny_sdxl_ckpt", Architecture("sdxl", False, "epsilon", 1024), "SDXL"),
        ("tiny_sdxl_inpaint_ckpt", Architecture("sdxl", True, "epsilon", 1024), "SDXL inpaint"),
    ],
)
def test_detects_architecture(request: pytest.FixtureRequest, fixture: str, expected: Architecture, label: str) -> None:
    path = request.getfixturevalue(fixture)
    arch = detect_architecture(load_file(str(path)), path)
    got = (arch.family, arch.inpaint, arch.prediction, arch.native_size)
    assert got == (expected.family, expected.inpaint, expected.prediction, expected.native_size)
    assert arch.label == label


def test_v_prediction_from_yaml_sidecar(tmp_path: Path) -> None:
    path = make_checkpoint(tmp_path, "sd2", v_prediction=True, v_marker="yaml")
    state = load_file(str(path))
    assert "v_pred" not in state
    arch = detect_architecture(state, path)
    assert (arch.prediction, arch.prediction_source, arch.native_size) == ("v_prediction", "yaml", 768)
    path.with_suffix(".yaml").unlink()
    assert detect_architecture(state, path).prediction == "epsilon"


def test_sd2_without_marker_is_probed(tmp_path: Path, tiny_sd2_ckpt: Path) -> None:
    """A1111's U-Net test decides: the random tiny model reads as epsilon, one biased strongly negative as v."""
    assert _load(tiny_sd2_ckpt).arch.prediction_source == "probe"
    assert _load(tiny_sd2_ckpt).arch.prediction == "epsilon"
    components = tiny_components("sd2")
    with torch.no_grad():
        components["unet"].conv_out.bias.fill_(-3.0)
    path = save_checkpoint(components, tmp_path / "v-unmarked.safetensors", v_marker="none")
    loaded = _load(path)
    assert (loaded.arch.prediction, loaded.arch.prediction_source) == ("v_prediction", "probe")
    assert loaded.components["scheduler"].config.prediction_type == "v_prediction"
    assert loaded.components["unet"].config.sample_size == 96


def test_old_sd1_clip_key_names_are_renamed(tiny_sd1_ckpt: Path) -> None:
    """Checkpoints saved before transformers nested CLIP under ``text_model`` still load (as in A1111)."""
    prefix = "cond_stage_model.transformer."
    state = {k.replace(prefix + "text_model.", prefix): v for k, v in load_file(str(tiny_sd1_ckpt)).items()}
    assert prefix + "embeddings.token_embedding.weight" in state
    assert loader.load_single_file(tiny_sd1_ckpt, state, F32).arch.family == "sd1"


def test_unknown_architecture_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "random.safetensors"
    state = {f"encoder.layer{i}.weight": torch.randn(4, 4) for i in range(3)}
    with pytest.raises(ModelLoadError, match="unrecognised architecture") as info:
        loader.load_single_file(path, state, F32)
    assert "random.safetensors" in str(info.value) and "encoder.layer0" in str(info.value)


def test_sdxl_refiner_is_refused(tiny_sdxl_ckpt: Path) -> None:
    state = load_file(str(tiny_sdxl_ckpt))
    refiner = {
        k.replace("conditioner.embedders.1.", "conditioner.embedders.0."): v
        for k, v in state.items()
        if not k.startswith("conditioner.embedders.0.")
    }
    with pytest.raises(ModelLoadError, match="refiner"):
        loader.load_single_file(tiny_sdxl_ckpt, refiner, F32)


# --- loading and generating -----------------------------------------------------------------------------------


def _pipeline(loaded: loader.LoadedModel) -> Any:
    from diffusers import (
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        StableDiffusionXLInpaintPipeline,
        StableDiffusionXLPipeline,
    )

    sdxl = loaded.arch.family == "sdxl"
    if sdxl:
        cls = StableDiffusionXLInpaintPipeline if loaded.arch.inpaint else StableDiffusionXLPipeline
        return cls(**loaded.components)
    cls = StableDiffusionInpaintPipeline if loaded.arch.inpaint else StableDiffusionPipeline
    return cls(**loaded.components, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


@pytest.mark.parametrize(
    "fixture",
    [
        "tiny_sd1_ckpt",
        "tiny_sd1_inpaint_ckpt",
        "tiny_sd2_ckpt",
        "tiny_sd2_v_ckpt",
        "tiny_sdxl_ckpt",
        "tiny_sdxl_inpaint_ckpt",
    ],
)
def test_checkpoint_loads_and_generates(request: pytest.FixtureRequest, fixture: str) -> None:
    from PIL import Image

    path = request.getfixturevalue(fixture)
    loaded = _load(path)
    parts = {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
    if loaded.arch.family == "sdxl":
        parts |= {"text_encoder_2", "tokenizer_2"}
    assert set(loaded.components) == parts
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if name in loaded.components:
            module = loaded.components[name]
            assert not module.training
            assert all(p.dtype == F32 and p.device.type == "cpu" for p in module.parameters())
    assert loaded.components["scheduler"].config.prediction_type == loaded.arch.prediction
    kwargs: dict[str, Any] = {}
    if loaded.arch.inpaint:
        kwargs = {"image": Image.new("RGB", (64, 64), "gray"), "mask_image": Image.new("L", (64, 64), 255)}
        kwargs["strength"] = 1.0
    out = _pipeline(loaded)(
        "a photo of a cat",
        height=64,
        width=64,
        num_inference_steps=2,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    ).images
    assert out.shape == (1, 64, 64, 3)
    assert torch.isfinite(torch.from_numpy(out)).all()


def test_loads_in_half_precision(tiny_sd1_ckpt: Path) -> None:
    loaded = _load(tiny_sd1_ckpt, torch.bfloat16)
    for name in ("unet", "vae", "text_encoder"):
        assert {p.dtype for p in loaded.components[name].parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_round_trip_is_bit_identical(tmp_path: Path, family: str) -> None:
    """diffusers -> original layout -> file -> load_single_file gives back exactly the same weights and output."""
    components = tiny_components(family, seed=3)
    path = tmp_path / f"{family}.safetensors"
    save_file(to_original_layout(components), str(path))
    loaded = _load(path).components
    assert torch.equal(_unet_out(components["unet"]), _unet_out(loaded["unet"]))
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if name in components:
            want, got = components[name].state_dict(), loaded[name].state_dict()
            assert want.keys() == got.keys(), name
            assert all(torch.equal(want[k], got[k]) for k in want), name


def test_missing_unet_tensor_names_the_file(tiny_sd1_ckpt: Path) -> None:
    state = load_file(str(tiny_sd1_ckpt))
    del state["model.diffusion_model.middle_block.1.proj_out.weight"]
    with pytest.raises(ModelLoadError) as info:
        loader.load_single_file(tiny_sd1_ckpt, state, F32)
    message = str(info.value)
    assert tiny_sd1_ckpt.name in message and "U-Net" in message and "mid_block.attentions.0.proj_out.weight" in message


def test_wrong_shape_and_missing_structure_are_load_errors(tiny_sd1_ckpt: Path) -> None:
    state = load_file(str(tiny_sd1_ckpt))
    wrong = dict(state)
    wrong["first_stage_model.decoder.conv_out.bias"] = torch.zeros(5)
    with pytest.raises(ModelLoadError, match="wrong shapes"):
        loader.load_single_file(tiny_sd1_ckpt, wrong, F32)
    no_out = {k: v for k, v in state.items() if not k.startswith("model.diffusion_model.out.")}
    with pytest.raises(ModelLoadError, match=tiny_sd1_ckpt.name):
        loader.load_single_file(tiny_sd1_ckpt, no_out, F32)


# --- diffusers folders ----------------------------------------------------------------------------------------


def test_diffusers_folder_loads(tmp_path: Path, tiny_sd1_diffusers: Path) -> None:
    loaded = loader.load_diffusers_folder(tiny_sd1_diffusers, F32)
    assert (loaded.arch.family, loaded.arch.inpaint, loaded.arch.prediction) == ("sd1", False, "epsilon")
    assert set(loaded.components) == {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
    assert not loaded.components["unet"].training
    reference = tiny_components("sd1")
    assert torch.equal(_unet_out(reference["unet"]), _unet_out(loaded.components["unet"]))

    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_sd1_diffusers, no_tokenizer)
    shutil.rmtree(no_tokenizer / "tokenizer")
    tok = loader.load_diffusers_folder(no_tokenizer, F32).components["tokenizer"]
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_diffusers_folder_without_index_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"model_index\.json"):
        loader.load_diffusers_folder(tmp_path, F32)


# --- no network -----------------------------------------------------------------------------------------------


def test_loading_never_touches_the_network(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_sd1_ckpt: Path, tiny_sdxl_ckpt: Path, tiny_sd1_diffusers: Path
) -> None:
    attempts: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(repr(args)[:200])
        raise AssertionError(f"network access attempted: {args!r}"[:300])

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    # The hub's download and query entry points, wherever transformers/diffusers imported them by name.
    hub_calls = ("hf_hub_download", "snapshot_download", "model_info", "get_hf_file_metadata", "file_exists")
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(("huggingface_hub", "transformers", "diffusers")):
            continue
        for attr in hub_calls:
            if callable(getattr(module, attr, None)):
                monkeypatch.setattr(module, attr, refuse)

    import huggingface_hub

    with pytest.raises(AssertionError):  # the trap is set
        huggingface_hub.hf_hub_download("openai/clip-vit-large-patch14", "vocab.json")
    attempts.clear()
    _load(tiny_sd1_ckpt)
    _load(tiny_sdxl_ckpt)
    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_sd1_diffusers, no_tokenizer)
    shutil.rmtree(no_tokenizer / "tokenizer")
    loader.load_diffusers_folder(no_tokenizer, F32)
    assert attempts == []


# --- real sizes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "prediction"), [("sd1", "epsilon"), ("sd2", "v_prediction"), ("sdxl", "epsilon")])
def test_real_size_shapes_infer_the_shipped_configs(family: str, prediction: str) -> None:
    """Full-size models (empty weights, no memory) written in original layout read back as the published configs."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from webui.weights import detect, shapes
    from webui.weights.family_configs import family_config

    config = family_config(family, prediction)
    with init_empty_weights():
        components: dict[str, Any] = {
            "unet": UNet2DConditionModel.from_config(config["unet"]),
            "vae": AutoencoderKL.from_config(config["vae"]),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_dict(config["text_encoder"])),
        }
        if family == "sdxl":
            te2 = CLIPTextConfig.from_dict(config["text_encoder_2"])
            components["text_encoder_2"] = CLIPTextModelWithProjection(te2)
    state = to_original_layout(components)
    path = Path(f"real-{family}.safetensors")
    arch = detect_architecture(state, path)
    assert (arch.family, arch.inpaint) == (family, False)

    def strip(prefix: str) -> dict[str, Any]:
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    pooled = config["text_encoder_2"]["projection_dim"] if family == "sdxl" else None
    unet = shapes.unet_overrides(strip(detect.UNET_PREFIX), family, pooled)
    vae = shapes.vae_overrides(strip(detect.VAE_PREFIX))
    for key, value in unet.items():
        assert value == config["unet"].get(key, value), key
    for key, value in vae.items():
        assert value == config["vae"].get(key, value), key
    for name in ("text_encoder", "text_encoder_2"):
        if name in components:
            text = shapes.text_overrides(text_state_dict(components[name]))
            for key, value in text.items():
                if key != "projection_dim" or name == "text_encoder_2":
                    assert value == config[name][key], (name, key)
