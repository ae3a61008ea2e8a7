"""Training the demo model's own networks on its frozen weights: the ``striped`` LoRA and the ``easelviolet``
textual-inversion embedding.

Both learn from the procedural scenes (``webui.demo.scenes``), encoded once by the demo model's VAE, with the
demo model's recipe (v-prediction, min-SNR loss weights with a floor, the sampler's blind first step):

- **LoRA** ``striped``: peft LoRA adapters on the U-Net's attention blocks (``to_q/to_k/to_v/to_out.0``,
  ``proj_in/proj_out`` and the feed-forward layers) and its ResNet blocks' 3x3 convolutions learn shapes drawn in horizontal bands of their colour
  and white (``Scene.striped``), from the same captions as the base model, so any prompt turns striped. Saved in
  the kohya/A1111 layout (``lora_unet_<module path>.lora_down.weight/.lora_up.weight/.alpha``) users' LoRAs
  have, and loaded by the same code.
- **Embedding** ``easelviolet``: one new vector in the text encoder's input-embedding space, started at the mean
  of the twelve colour words' vectors (so it favours none of them), learns to mean the data set's purple from
  captions where the word stands in for the colour. Saved as ``{"emb_params": tensor[1, width]}``.

Everything is drawn from the seed; on the same machine and torch build a run is reproducible bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from webui.demo import scenes, train
from webui.demo.weights import DEMO_MODEL_PATH

Log = Callable[[str], None]

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
# The demo U-Net attends only at 8x8 and 4x4; 4-pixel bands live at the 16x16 level, so the LoRA also adapts
# the ResNet blocks' 3x3 convolutions (kohya's LoCon, which Easel's loader reads like any LoRA).
LORA_CONV_TARGETS = ("conv1", "conv2")


@dataclass
class NetworkConfig:
    seed: int = 4321
    scenes: int = 4000  # distinct scenes encoded for each network
    batch: int = 32
    # LoRA
    lora_rank: int = 4
    lora_alpha: float = 4.0
    lora_convs: bool = True  # the ResNet blocks' convolutions too
    lora_steps: int = 800
    lora_lr: float = 3e-3
    # embedding
    word: str = "easelviolet"
    word_colour: str = "purple"
    embedding_steps: int = 300
    embedding_lr: float = 1e-2
    # the demo model's recipe for the rest
    warmup_steps: int = 20
    blind_from: int = 999
    top_share: float = 0.05
    log_every: int = 25


def load_demo(path: Path = DEMO_MODEL_PATH) -> dict[str, Any]:
    """The demo model's components in float32, frozen."""
    from webui.weights import formats, loader

    components = dict(loader.load_single_file(path, formats.read_state_dict(path), torch.float32).components)
    for name in ("vae", "text_encoder", "unet"):
        components[name].requires_grad_(False).eval()
    return components


def _recipe(config: FitConfig, scheduler: Any) -> train.TrainConfig:
    return train.TrainConfig(
        seed=config.seed,
        prediction=scheduler.config.prediction_type,
        blind_from=config.blind_from,
        top_share=config.top_share,
    )


def _latents(components: dict[str, Any], scene_list: list[scenes.Scene], pixels: Any) -> torch.Tensor:
    vae = components["vae"]
    return train.encode_scenes(vae, pixels, train.TrainConfig()) * vae.config.scaling_factor


class FitConfig(Protocol):
    """What the training loop reads from a network's config (``NetworkConfig``, the ControlNet's)."""

    seed: int
    batch: int
    warmup_steps: int
    blind_from: int
    top_share: float
    log_every: int


def _fit(
    components: dict[str, Any],
    latents: torch.Tensor,
    captions: Callable[[list[int]], list[str]],
    encode: Callable[[torch.Tensor], torch.Tensor],
    params: list[torch.nn.Parameter],
    steps: int,
    lr: float,
    config: FitConfig,
    phase: str,
    log: Log,
    predict: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """The shared training loop: v (or noise) prediction through the frozen U-Net, ``params`` optimised.
    ``predict(noisy, t, context, index)`` replaces the plain U-Net call (the ControlNet adds its residuals)."""
    unet, tokenizer = components["unet"], components["tokenizer"]
    alphas = components["scheduler"].alphas_cumprod.float()
    recipe = _recipe(config, components["scheduler"])
    weights = train.loss_weights(alphas, recipe)
    gen = torch.Generator().manual_seed(config.seed + 2)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    started = time.perf_counter()
    running = 0.0
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * train._schedule(step, steps, config.warmup_steps)
        index = torch.randint(len(latents), (config.batch,), generator=gen)
        ids = train._tokenize(tokenizer, captions(index.tolist()))
        x0 = latents[index]
        noise = torch.randn(x0.shape, generator=gen)
        t = train.sample_timesteps(x0.shape[0], recipe, len(alphas), gen)
        noisy, target = train.noised(
            x0, noise, alphas[t][:, None, None, None], t >= recipe.blind_from, recipe.prediction
        )
        context = encode(ids)
        pred = predict(noisy, t, context, index) if predict else unet(noisy, t, encoder_hidden_states=context).sample
        loss = (((pred - target) ** 2).mean(dim=(1, 2, 3)) * weights[t]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        running = loss.item() if step == 0 else 0.95 * running + 0.05 * loss.item()
        if step % config.log_every == 0 or step == steps - 1:
            train._progress(log, phase, step, steps, started, f"loss {running:.4f}")
    return (time.perf_counter() - started) / 60


def _record(config: Any, minutes: float, **extra: Any) -> str:
    return json.dumps(
        {
            "config": dataclasses.asdict(config),
            "minutes": round(minutes, 1),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "base": DEMO_MODEL_PATH.name,
            **extra,
        }
    )


# -- the LoRA ----------------------------------------------------------------------------------------------------
def train_lora(
    config: NetworkConfig, log: Log = print, components: dict[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Train the ``striped`` LoRA; returns its kohya-layout state dict and the metadata to save with it."""
    from peft import LoraConfig

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    components = components or load_demo()
    unet = components["unet"]
    log(f"rendering and encoding {config.scenes} striped scenes")
    pixels, scene_list = scenes.dataset(config.scenes, config.seed + 3, striped=True)
    latents = _latents(components, scene_list, pixels)
    del pixels
    torch.manual_seed(config.seed)  # the adapters' initialisation
    unet.add_adapter(
        LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            init_lora_weights="gaussian",
            target_modules=_target_names(unet, config.lora_convs),
        ),
        adapter_name="striped",
    )
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    log(f"LoRA: rank {config.lora_rank}, {sum(p.numel() for p in params)} parameters on {len(params) // 2} layers")
    rng = random.Random(config.seed + 4)
    text_encoder = components["text_encoder"]

    def encode(ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return text_encoder(ids)[0]

    def captions(index: list[int]) -> list[str]:
        return [scenes.caption(scene_list[i], rng) for i in index]

    unet.train()
    minutes = _fit(
        components, latents, captions, encode, params, config.lora_steps, config.lora_lr, config, "lora", log
    )
    unet.eval()
    state = lora_state_dict(unet, config)
    total = (time.perf_counter() - started) / 60
    metadata = {
        "format": "pt",
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(config.lora_rank),
        "ss_network_alpha": str(config.lora_alpha),
        "modelspec.title": "Easel demo: striped",
        "modelspec.description": "Draws the Easel demo model's shapes in stripes of their colour and white.",
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "easel.training": _record(config, total, training_minutes=round(minutes, 1), kind="lora"),
    }
    return state, metadata


def _target_names(unet: torch.nn.Module, convs: bool) -> list[str]:
    """Full module names of the layers the LoRA adapts: every projection inside the attention blocks, and with
    ``convs`` the ResNet blocks' 3x3 convolutions."""
    names = []
    for name, module in unet.named_modules():
        if not isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
            continue
        if (".attentions." in name and name.endswith(LORA_TARGETS)) or (
            convs and ".resnets." in name and name.endswith(LORA_CONV_TARGETS)
        ):
            names.append(name)
    return names


def lora_state_dict(unet: torch.nn.Module, config: NetworkConfig) -> dict[str, torch.Tensor]:
    """The trained adapters in the kohya/A1111 layout: ``lora_unet_<path with _>.lora_down/.lora_up/.alpha``."""
    state: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if not isinstance(lora_a, torch.nn.ModuleDict) or "striped" not in lora_a:
            continue
        key = "lora_unet_" + name.replace(".", "_")
        state[key + ".lora_down.weight"] = lora_a["striped"].weight.detach().clone()
        state[key + ".lora_up.weight"] = module.lora_B["striped"].weight.detach().clone()
        state[key + ".alpha"] = torch.tensor(float(config.lora_alpha))
    return {k: v.to(torch.float16).contiguous() for k, v in sorted(state.items())}


# -- the embedding -------------------------------------------------------------------------------------------------
class _WithWord(torch.nn.Module):
    """The text encoder's token table with one extra, trainable row for the new word's id."""

    def __init__(self, table: torch.nn.Embedding, word_id: int, vector: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        self.word_id = word_id
        self.vector = torch.nn.Parameter(vector.clone())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.table(ids.clamp(max=self.table.num_embeddings - 1))
        return torch.where((ids == self.word_id)[..., None], self.vector.to(out.dtype), out)


def train_embedding(
    config: NetworkConfig, log: Log = print, components: dict[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Textual inversion of ``config.word`` for ``config.word_colour``; returns ``{"emb_params": [1, width]}``
    and metadata."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    components = components or load_demo()
    tokenizer, text_encoder = components["tokenizer"], components["text_encoder"]
    if config.word in tokenizer.get_vocab():
        raise ValueError(f"{config.word!r} is already a word of the tokenizer")
    log(f"rendering and encoding {config.scenes} {config.word_colour} scenes")
    pixels, scene_list = scenes.dataset(config.scenes, config.seed + 5, colour=config.word_colour)
    latents = _latents(components, scene_list, pixels)
    del pixels
    table = text_encoder.get_input_embeddings()
    colour_ids = [tokenizer(c, add_special_tokens=False).input_ids[0] for c in scenes.COLOURS]
    start = table.weight[colour_ids].mean(0, keepdim=True).detach()
    tokenizer = _with_word_tokenizer(tokenizer, config.word)
    word_id = tokenizer.convert_tokens_to_ids(config.word)
    wrapped = _WithWord(table, word_id, start)
    text_encoder.set_input_embeddings(wrapped)
    rng = random.Random(config.seed + 6)

    def captions(index: list[int]) -> list[str]:
        out = []
        for i in index:
            scene = dataclasses.replace(scene_list[i], colour=config.word)
            text = ""
            while config.word not in text:  # the word is what is being taught: always in the caption
                text = scenes.caption(scene, rng)
            out.append(text)
        return out

    def encode(ids: torch.Tensor) -> torch.Tensor:
        return text_encoder(ids)[0]

    components = {**components, "tokenizer": tokenizer}
    try:
        minutes = _fit(
            components, latents, captions, encode, [wrapped.vector], config.embedding_steps,
            config.embedding_lr, config, "embedding", log,
        )  # fmt: skip
    finally:
        text_encoder.set_input_embeddings(table)
    vector = wrapped.vector.detach().clone()
    log(f"embedding '{config.word}': norm {vector.norm():.3f} (colour words' start {start.norm():.3f})")
    total = (time.perf_counter() - started) / 60
    metadata = {
        "format": "pt",
        "modelspec.title": f"Easel demo: {config.word}",
        "modelspec.description": f"A new word for the Easel demo model's {config.word_colour}.",
        "modelspec.architecture": "stable-diffusion-v1/textual-inversion",
        "easel.training": _record(config, total, training_minutes=round(minutes, 1), kind="embedding"),
    }
    return {"emb_params": vector.contiguous()}, metadata


def _with_word_tokenizer(tokenizer: Any, word: str) -> Any:
    import copy

    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.add_tokens([word])
    return tokenizer


def save(state: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(temp), metadata=metadata)
    temp.replace(path)
    return path
