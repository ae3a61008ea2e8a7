"""LoRAs: kohya/A1111 files applied to the loaded model for one job and switched off after it.

The tiny checkpoint's LoRAs are random, so what is checked is what a user relies on: a LoRA changes the picture,
weight 0 and "after the job" are pixel-identical to no LoRA, the checkpoint is never reloaded, a LoRA for another
architecture is refused by name, and the infotext records ``Lora hashes`` as A1111 does.

The same LoRA is also saved under each key-naming scheme users' files come in (kohya's diffusers names, the
LDM/SGM names kohya uses for SDXL and other trainers for SD1.x, ComfyUI's ``diffusion_model.`` ones): every
form must give the very same image. The LDM names come from ``webui.weights.convert``, the code that saves
checkpoints in the original layout, so they are not derived from the renaming under test.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.fixtures.services import running_service
from tests.fixtures.tiny_models import make_lora, tiny_components
from webui.errors import EaselError, ModelNotFound
from webui.networks import lora as lora_module
from webui.networks.lora import MAX_ATTACHED, LoraError, LoraLibrary, LoraUse
from webui.networks.lora_keys import family_of
from webui.outputs.infotext import parse_infotext
from webui.service.factory import create_service
from webui.settings import Settings
from webui.types import GenerationRequest
from webui.weights.convert import unet_key
from webui.weights.detect import Architecture

SIZE = 64
LRU_NAMES = [f"lru-{i}" for i in range(MAX_ATTACHED + 1)]


@functools.cache
def _tiny_unet(family: str) -> torch.nn.Module:
    return tiny_components(family)["unet"]


def _lora_in_three_namings(family: str, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """One random LoRA on every linear and conv layer of the tiny U-Net (attention, feed-forward, ResNet blocks,
    down/upsamplers, conv_in/out) under kohya's diffusers names, kohya's LDM names and ComfyUI's dotted
    ``diffusion_model.`` names (``lora_A``/``lora_B``, alpha folded into up, as peft writes them)."""
    unet = _tiny_unet(family)
    layers = int(unet.config.layers_per_block)
    attends_up = [name.startswith("CrossAttn") for name in unet.config.up_block_types]
    gen = torch.Generator().manual_seed(seed)
    forms: dict[str, dict[str, torch.Tensor]] = {"diffusers": {}, "ldm": {}, "comfy": {}}
    for name, layer in unet.named_modules():
        if not isinstance(layer, torch.nn.Linear | torch.nn.Conv2d) or name.startswith(("time_", "add_")):
            continue
        if isinstance(layer, torch.nn.Linear):
            down = torch.randn(4, layer.in_features, generator=gen) * 0.3
            up = torch.randn(layer.out_features, 4, generator=gen) * 0.3
        else:
            down = torch.randn(4, layer.in_channels, *layer.kernel_size, generator=gen) * 0.3
            up = torch.randn(layer.out_channels, 4, 1, 1, generator=gen) * 0.3
        ldm = unet_key(name + ".weight", layers, attends_up).removesuffix(".weight")
        for form, key in (("diffusers", name.replace(".", "_")), ("ldm", ldm.replace(".", "_"))):
            forms[form][f"lora_unet_{key}.lora_down.weight"] = down
            forms[form][f"lora_unet_{key}.lora_up.weight"] = up
            forms[form][f"lora_unet_{key}.alpha"] = torch.tensor(2.0)
        forms["comfy"][f"diffusion_model.{ldm}.lora_A.weight"] = down
        forms["comfy"][f"diffusion_model.{ldm}.lora_B.weight"] = up * (2.0 / 4)
    return forms


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def _lycoris(path: Path, algorithm: str) -> Path:
    """A tiny LyCORIS LoHa or LoKr file on the tiny U-Net's attention projections, keys as LyCORIS writes them."""
    unet = _tiny_unet("sd1")
    state: dict[str, torch.Tensor] = {}
    for name, layer in unet.named_modules():
        if isinstance(layer, torch.nn.Linear) and name.endswith(("to_q", "to_k", "to_v")):
            key, out, inp = "lora_unet_" + name.replace(".", "_"), layer.out_features, layer.in_features
            if algorithm == "loha":
                for part, shape in (("w1_a", (out, 4)), ("w1_b", (4, inp)), ("w2_a", (out, 4)), ("w2_b", (4, inp))):
                    state[f"{key}.hada_{part}"] = torch.randn(*shape) * 0.1
            else:
                state[f"{key}.lokr_w1"] = torch.randn(4, 4) * 0.1
                state[f"{key}.lokr_w2"] = torch.randn(out // 4, inp // 4) * 0.1
            state[f"{key}.alpha"] = torch.tensor(4.0)
    return _save(state, path)


def _adapter_layers(unet: torch.nn.Module, adapter: str) -> int:
    return sum(1 for _, m in unet.named_modules() if isinstance(getattr(m, "lora_A", None), torch.nn.ModuleDict)
               and adapter in m.lora_A)  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_sd1_ckpt: Path) -> Path:
    root = tmp_path_factory.mktemp("models")
    (root / "Stable-diffusion").mkdir()
    shutil.copy(tiny_sd1_ckpt, root / "Stable-diffusion" / "tiny.safetensors")
    loras = root / "Lora"
    make_lora(loras / "detail.safetensors", seed=1)
    make_lora(loras / "styles" / "other style.safetensors", seed=2)
    make_lora(loras / "old.pt", seed=3)
    make_lora(loras / "unet-only.safetensors", seed=4, text_encoder=False)
    make_lora(loras / "locon.safetensors", seed=10, conv=True, attention=False, text_encoder=False)  # convs only
    make_lora(loras / "diffusers-format.safetensors", seed=11, layout="peft")
    make_lora(loras / "kohya-same.safetensors", seed=11)  # the same weights in kohya's layout
    make_lora(loras / "xl-thing.safetensors", family="sdxl", seed=5)
    make_lora(loras / "sd15-thing.safetensors", seed=6, context_width=768)
    for form, state in _lora_in_three_namings("sd1", seed=12).items():
        _save(state, loras / f"named-{form}.safetensors")
    _lycoris(loras / "a-loha.safetensors", "loha")
    _lycoris(loras / "a-lokr.safetensors", "lokr")
    old_format = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight"
    _save({old_format: torch.zeros(4, 32)}, loras / "old-diffusers.safetensors")  # no "unet." prefix
    for name in LRU_NAMES:  # the same weights under nine names: nine adapters
        shutil.copy(loras / "detail.safetensors", loras / f"{name}.safetensors")
    make_lora(loras / "probe.safetensors", seed=13)
    return root


@pytest.fixture(scope="module")
def service(models: Path, tmp_path_factory: pytest.TempPathFactory):
    with running_service(models, tmp_path_factory.mktemp("out")) as svc:
        yield svc


def _run(service, prompt: str = "a red circle", **fields):
    base = {"prompt": prompt, "steps": 2, "width": SIZE, "height": SIZE, "seed": 9, "save_images": False}
    result = service.generate(GenerationRequest.build(**{**base, **fields}), timeout=120)
    (image,) = result.images
    return np.asarray(image.image, dtype=np.int16), parse_infotext(image.infotext), result


def test_a_lora_changes_the_image_and_the_next_job_without_it_is_identical(service) -> None:
    before, info, _ = _run(service)
    model = service.engine.weights.active
    loaded_at = model.load_seconds
    with_lora, info, _ = _run(service, "a red circle <lora:detail:1>")
    assert np.abs(with_lora - before).mean() > 1
    hash12 = service.engine.weights.loras.short_hash(service.engine.weights.loras.find("detail"))
    assert info["Lora hashes"] == f"detail: {hash12}" and len(hash12) == 12
    after, info, _ = _run(service)
    assert (after == before).all() and "Lora hashes" not in info
    assert service.engine.weights.active is model and model.load_seconds == loaded_at  # never reloaded


def test_the_tag_is_not_sent_to_the_text_encoder(service) -> None:
    plain, _, _ = _run(service, "a red circle")
    zero, info, _ = _run(service, "a red circle <lora:detail:0>")
    assert (zero == plain).all()  # weight 0 and the tag gone from the text: the very same image
    assert info["Prompt"] == "a red circle <lora:detail:0>"  # the infotext keeps what the user wrote


def test_weights_scale_negative_weights_work_and_several_loras_add(service) -> None:
    plain, _, _ = _run(service)
    half, _, _ = _run(service, "a red circle <lora:detail:0.5>")
    full, _, _ = _run(service, "a red circle <lora:detail:1>")
    negative, _, _ = _run(service, "a red circle <lora:detail:-1>")
    both, info, _ = _run(service, "a red circle <lora:detail:1> <lora:other style:0.7>")
    assert 0 < np.abs(half - plain).mean() < np.abs(full - plain).mean()
    assert np.abs(negative - plain).mean() > 1 and np.abs(negative - full).mean() > 1
    assert np.abs(both - full).mean() > 1
    assert info["Lora hashes"].startswith("detail: ") and ", other style: " in info["Lora hashes"]


@pytest.mark.parametrize("name", ["old", "unet-only", "styles/other style", "locon"])
def test_pt_files_unet_only_loras_and_subfolder_names_load(service, name: str) -> None:
    plain, _, _ = _run(service)
    changed, _, _ = _run(service, f"a red circle <lora:{name}:1>")
    assert np.abs(changed - plain).mean() > 1


def test_a_diffusers_peft_lora_gives_the_same_image_as_the_same_weights_in_kohyas_layout(service) -> None:
    plain, _, _ = _run(service)
    peft, _, _ = _run(service, "a red circle <lora:diffusers-format:1>")
    kohya, _, _ = _run(service, "a red circle <lora:kohya-same:1>")
    assert np.abs(peft - plain).mean() > 1
    assert np.abs(peft - kohya).max() <= 1  # the same LoRA, two file layouts


def test_a_job_that_fails_with_a_lora_leaves_the_model_clean(service) -> None:
    plain, _, _ = _run(service)
    job = service.submit(GenerationRequest.build(
        prompt="a red circle <lora:detail:1>", steps=150, width=256, height=256, seed=9, save_images=False
    ))  # fmt: skip
    for progress in job.updates(timeout=60):
        if progress.step >= 2:
            service.cancel(job.id)
            break
    with pytest.raises(EaselError):
        job.wait(30)
    after, info, _ = _run(service)
    assert (after == plain).all() and "Lora hashes" not in info


def test_a_lora_for_another_architecture_is_refused_and_the_model_stays_clean(service) -> None:
    plain, _, _ = _run(service)
    with pytest.raises(
        EaselError, match=r"lora: xl-thing\.safetensors was made for SDXL; the loaded model tiny.+ SD1\.x"
    ):
        _run(service, "a red circle <lora:xl-thing:1>")
    with pytest.raises(EaselError, match=r"lora: sd15-thing\.safetensors was made for SD1\.x; the loaded model"):
        _run(service, "a red circle <lora:detail:1> <lora:sd15-thing:1>")
    after, _, _ = _run(service)
    assert (after == plain).all()


def test_an_unknown_lora_is_refused_naming_the_field(service) -> None:
    with pytest.raises(ModelNotFound, match=r"^lora: 'missing' not found"):
        service.submit(GenerationRequest.build(prompt="x <lora:missing:1>", width=SIZE, height=SIZE, steps=1))


def test_applying_again_is_fast_because_the_adapter_stays_attached(service) -> None:
    engine = service.engine
    model = engine.weights.use("tiny.safetensors")
    pipe = engine.pipeline_for(model, GenerationRequest.build(prompt="x").mode)
    library = engine.weights.loras
    library.apply(model, pipe, [LoraUse("detail", 1.0)])
    library.deactivate(pipe)
    started = time.perf_counter()
    library.apply(model, pipe, [LoraUse("detail", 0.5)])
    library.deactivate(pipe)
    assert time.perf_counter() - started < 0.5


@pytest.fixture(scope="module")
def xl_service(tmp_path_factory: pytest.TempPathFactory, tiny_sdxl_ckpt: Path):
    root = tmp_path_factory.mktemp("xl")
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    shutil.copy(tiny_sdxl_ckpt, root / "models" / "Stable-diffusion" / "xl.safetensors")
    make_lora(root / "models" / "Lora" / "xl-style.safetensors", family="sdxl", seed=7)
    for form, state in _lora_in_three_namings("sdxl", seed=17).items():
        _save(state, root / "models" / "Lora" / f"xl-named-{form}.safetensors")
    service = create_service(Settings(models_dir=root / "models", outputs_dir=root / "out", demo_model=False))
    try:
        yield service
    finally:
        service.stop()


def test_an_sdxl_lora_applies_to_an_sdxl_model_with_both_text_encoders(xl_service) -> None:
    plain, _, _ = _run(xl_service)
    styled, info, _ = _run(xl_service, "a red circle <lora:xl-style:1>")
    te_only, _, _ = _run(xl_service, "a red circle <lora:xl-style:1:0>")  # unet weight 0: text encoders only
    after, _, _ = _run(xl_service)
    assert np.abs(styled - plain).mean() > 1 and info["Lora hashes"].startswith("xl-style: ")
    assert np.abs(te_only - plain).mean() > 0 and np.abs(te_only - styled).mean() > 0
    assert (after == plain).all()


def test_an_sdxl_lora_with_kohyas_ldm_names_draws_what_the_diffusers_named_one_does(xl_service) -> None:
    plain, _, _ = _run(xl_service)
    reference, _, _ = _run(xl_service, "a red circle <lora:xl-named-diffusers:1>")
    assert np.abs(reference - plain).mean() > 1
    for form in ("ldm", "comfy"):
        got, _, _ = _run(xl_service, f"a red circle <lora:xl-named-{form}:1>")
        assert np.abs(got - reference).max() <= 1, form
        _assert_every_layer_attached(xl_service, f"xl-named-{form}")


def _assert_every_layer_attached(service, name: str) -> None:
    """diffusers skips layers it cannot place without an error: count the U-Net's wrapped layers."""
    model = service.engine.weights.active
    (adapter,) = [a for a, path in model.lora_adapters.items() if path.stem == name]
    state = service.engine.weights.loras.read(service.engine.weights.loras.find(name))
    layers = sum(key.endswith(("lora_down.weight", "lora_A.weight")) for key in state)
    assert _adapter_layers(model.components["unet"], adapter) == layers > 0


# -- which architecture a LoRA is for: widths first, names last ---------------------------------------------------
# Keys and widths as real files have them (rank 4). SD1.5: 320/640/1280 blocks, 768-wide CLIP-L conditioning.
SD1_LDM = {
    "lora_unet_input_blocks_1_1_proj_in.lora_down.weight": torch.zeros(4, 320, 1, 1),
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.zeros(4, 640),
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": torch.zeros(4, 768),
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight": torch.zeros(640, 4),
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.alpha": torch.tensor(4.0),
    "lora_unet_output_blocks_11_1_transformer_blocks_0_attn2_to_v.lora_down.weight": torch.zeros(4, 768),
    "lora_te_text_model_encoder_layers_11_self_attn_q_proj.lora_down.weight": torch.zeros(4, 768),
}
SD1_COMFY = {
    "diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.lora_down.weight": torch.zeros(4, 768),
    "diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.lora_up.weight": torch.zeros(640, 4),
    "diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_v.lora_down.weight": torch.zeros(4, 768),
}
SD1_DIFFUSERS = {
    "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": torch.zeros(4, 768),
    "lora_te_text_model_encoder_layers_0_self_attn_k_proj.lora_down.weight": torch.zeros(4, 768),
}
SD2_DIFFUSERS = {
    "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": torch.zeros(4, 1024),
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(4, 1024),
}
SDXL_KOHYA = {  # kohya's sd-scripts save SDXL with LDM/SGM names and two text encoders
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": torch.zeros(4, 2048),
    "lora_unet_input_blocks_7_1_transformer_blocks_9_attn1_to_q.lora_down.weight": torch.zeros(4, 1280),
    "lora_unet_output_blocks_0_1_transformer_blocks_3_attn2_to_v.lora_down.weight": torch.zeros(4, 2048),
    "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(4, 768),
    "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(4, 1280),
}
SDXL_TEXT_ONLY = {k: v for k, v in SDXL_KOHYA.items() if k.startswith("lora_te")}
SDXL_NO_WIDTH = {  # self-attention only: no width tells, SDXL's ten-deep transformers do
    "lora_unet_input_blocks_7_1_transformer_blocks_9_attn1_to_q.lora_down.weight": torch.zeros(4, 1280),
}
SD1_LDM_NO_WIDTH = {  # the same for SD1.x: nothing says SDXL, LDM names alone must not
    "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.zeros(4, 320),
    "lora_unet_input_blocks_1_0_in_layers_2.lora_down.weight": torch.zeros(4, 320, 3, 3),
}


def _model(family: str) -> SimpleNamespace:
    """The parts of a loaded SD1.5 / SD2 / SDXL model the family check reads, at their real widths."""
    context, widths = {"sd1": (768, [768]), "sd2": (1024, [1024]), "sdxl": (2048, [768, 1280])}[family]
    components = {"unet": SimpleNamespace(config=SimpleNamespace(cross_attention_dim=context))}
    for name, width in zip(("text_encoder", "text_encoder_2"), widths, strict=False):
        components[name] = SimpleNamespace(config=SimpleNamespace(hidden_size=width))
    return SimpleNamespace(components=components, arch=Architecture(family=family), info=SimpleNamespace(name="m"))


@pytest.mark.parametrize(
    ("state", "family", "fits"),
    [
        (SD1_LDM, "SD1.x", {"sd1"}),
        (SD1_COMFY, "SD1.x", {"sd1"}),
        (SD1_DIFFUSERS, "SD1.x", {"sd1"}),
        (SD2_DIFFUSERS, "SD2.x", {"sd2"}),
        (SDXL_KOHYA, "SDXL", {"sdxl"}),
        (SDXL_TEXT_ONLY, "SDXL", {"sdxl"}),
        (SDXL_NO_WIDTH, "SDXL", {"sdxl"}),
        (SD1_LDM_NO_WIDTH, None, {"sd1", "sd2", "sdxl"}),  # nothing tells: diffusers decides whether it loads
    ],
    ids=["sd1-ldm", "sd1-comfy", "sd1-diffusers", "sd2", "sdxl-kohya", "sdxl-text-only", "sdxl-no-width", "unknown"],
)
def test_the_family_comes_from_widths_whatever_the_key_names(state, family: str | None, fits: set[str]) -> None:
    assert family_of(state).family == family
    info = SimpleNamespace(name="x.safetensors")
    for model_family in ("sd1", "sd2", "sdxl"):
        model = _model(model_family)
        if model_family in fits:
            LoraLibrary.check_fits(info, state, model)
            continue
        label = model.arch.label.replace(".", r"\.")
        with pytest.raises(
            LoraError, match=rf"^lora: x\.safetensors was made for {family}; the loaded model m is {label} \("
        ):
            LoraLibrary.check_fits(info, state, model)


@pytest.mark.parametrize("form", ["ldm", "comfy"])
def test_an_sd1_lora_with_ldm_names_loads_every_layer_and_draws_what_the_diffusers_named_one_does(
    service, form: str
) -> None:
    plain, _, _ = _run(service)
    reference, _, _ = _run(service, "a red circle <lora:named-diffusers:1>")
    got, info, _ = _run(service, f"a red circle <lora:named-{form}:1>")
    assert np.abs(reference - plain).mean() > 1
    assert np.abs(got - reference).max() <= 1  # the same LoRA under another naming scheme
    assert info["Lora hashes"].startswith(f"named-{form}: ")
    _assert_every_layer_attached(service, f"named-{form}")


@pytest.mark.parametrize(("name", "algorithm"), [("a-loha", "LoHa"), ("a-lokr", "LoKr")])
def test_lycoris_loha_and_lokr_are_refused_by_name_and_the_model_stays_clean(service, name, algorithm) -> None:
    plain, _, _ = _run(service)
    expected = rf"^lora: {name}\.safetensors is a LyCORIS {algorithm} file; {algorithm} is not supported yet"
    with pytest.raises(EaselError, match=expected):
        _run(service, f"a red circle <lora:{name}:1>")
    after, _, _ = _run(service)
    assert (after == plain).all()


def test_a_file_in_a_layout_diffusers_would_half_ignore_is_refused_naming_a_key(service) -> None:
    with pytest.raises(EaselError, match=r"^lora: old-diffusers\.safetensors is not in a LoRA layout Easel reads "
                                         r"\(1 tensors such as 'down_blocks\.0\.attentions"):  # fmt: skip
        _run(service, "a red circle <lora:old-diffusers:1>")


# -- the tensor cache and the attached adapters ------------------------------------------------------------------
@pytest.fixture
def disk_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every LoRA file the library reads from disk, in order."""
    reads: list[Path] = []
    real = lora_module.formats.read_state_dict

    def counting(path: Path, *args, **kwargs):
        reads.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(lora_module.formats, "read_state_dict", counting)
    return reads


def test_a_lora_is_read_from_disk_once_and_again_when_the_file_changes(service, disk_reads: list[Path]) -> None:
    library = service.engine.weights.loras
    info = library.find("probe")
    first = library.read(info)
    assert library.read(info) is first and disk_reads == [info.path]  # the second read never touches the disk
    before = os.stat(info.path)
    make_lora(info.path, seed=14, rank=8)  # saved again: another size
    os.utime(info.path, ns=(before.st_atime_ns, before.st_mtime_ns))  # ...and the same mtime
    second = library.read(info)
    assert disk_reads == [info.path, info.path] and second is not first
    assert second["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight"].shape[0] == 8
    size = os.stat(info.path).st_size
    make_lora(info.path, seed=15, rank=8)  # saved again: the same size, another mtime
    os.utime(info.path, ns=(before.st_atime_ns, before.st_mtime_ns + 5_000_000_000))
    assert os.stat(info.path).st_size == size
    assert library.read(info) is not second and len(disk_reads) == 3


def test_a_lora_saved_again_replaces_its_old_adapter_without_a_refresh(service) -> None:
    plain, _, _ = _run(service)
    first, _, _ = _run(service, "a red circle <lora:probe:1>")
    info = service.engine.weights.loras.find("probe")
    make_lora(info.path, seed=16)
    os.utime(info.path, ns=(time.time_ns(), time.time_ns() + 10_000_000_000))
    second, _, _ = _run(service, "a red circle <lora:probe:1>")
    assert np.abs(second - first).mean() > 1 and np.abs(second - plain).mean() > 1
    adapters = service.engine.weights.active.lora_adapters
    assert sum(path == info.path for path in adapters.values()) == 1  # the old version was detached


def test_the_ninth_lora_detaches_the_least_recently_used_which_still_works_again(
    service, disk_reads: list[Path]
) -> None:
    plain, _, _ = _run(service)
    first, _, _ = _run(service, f"a red circle <lora:{LRU_NAMES[0]}:1>")
    model = service.engine.weights.active
    (first_adapter,) = [a for a, path in model.lora_adapters.items() if path.stem == LRU_NAMES[0]]
    for name in LRU_NAMES[1:]:
        _run(service, f"a red circle <lora:{name}:1>")
    pipe = service.engine.pipeline_for(model, GenerationRequest.build(prompt="x").mode)
    pipe_adapters = {a for names in pipe.get_list_adapters().values() for a in names}
    assert len(model.lora_adapters) == MAX_ATTACHED
    assert first_adapter not in model.lora_adapters and first_adapter not in pipe_adapters
    assert {path.stem for path in model.lora_adapters.values()} == set(LRU_NAMES[1:])
    reads_before = len(disk_reads)
    again, _, _ = _run(service, f"a red circle <lora:{LRU_NAMES[0]}:1>")
    assert (again == first).all() and np.abs(again - plain).mean() > 1
    assert len(disk_reads) == reads_before  # attached again from the tensors kept in RAM
    assert first_adapter in model.lora_adapters and len(model.lora_adapters) == MAX_ATTACHED
