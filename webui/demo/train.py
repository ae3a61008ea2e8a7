"""Training Easel's demo model from scratch on procedural scenes: VAE first, then text encoder and U-Net together.

The model is a complete SD1-architecture latent diffusion model at a small width (AutoencoderKL, a CLIP text
encoder over the real CLIP vocabulary and tokenizer, a cross-attention U-Net, SD's scaled-linear 1000-step
noise schedule), so every pipeline and sampler runs it unchanged and it is saved like any user's checkpoint.

Two choices make it learn in well under an hour on two CPU cores:
- a 4x VAE (three levels instead of SD's four) at 64 px, so the latents are 16x16 and the VAE is easy to fit;
- latents encoded once, then min-SNR-weighted noise prediction with offset noise (so the model does not read
  the background colour out of the starting noise) and an EMA of the weights, which is what gets saved.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from webui.demo import scenes
from webui.weights.clip_tokenizer import PAD_CLIP, load_clip_tokenizer
from webui.weights.family_configs import family_config, text_heads, unet_heads

Log = Callable[[str], None]


@dataclass
class TrainConfig:
    seed: int = 1234
    image_size: int = 64
    # VAE
    vae_channels: tuple[int, ...] = (32, 64, 64)
    vae_steps: int = 1300
    vae_batch: int = 16
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-6
    vae_crop: int = 32  # train on random crops of this size (0: whole images)...
    vae_full_steps: int = 300  # ...except for this many last steps on whole images, which fixes colour drift
    # text encoder
    text_hidden: int = 64
    text_layers: int = 3
    # U-Net
    unet_channels: tuple[int, ...] = (32, 64, 128)
    # Cross-attention on the 8x8 and 4x4 levels only: cheaper than at 16x16, with wider heads (SD1 has 8 heads
    # per level), and the prompt took hold about four times sooner in trials.
    unet_attends: tuple[bool, ...] = (False, True, True)
    unet_steps: int = 6000
    unet_batch: int = 48
    unet_lr: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    offset_noise: float = 0.1
    min_snr_gamma: float = 5.0
    # prediction: what the U-Net outputs, "epsilon" (the noise, SD1's choice) or "v_prediction" (SD2-768's
    # velocity). At the top of SD's schedule, noise prediction hides the image behind a 1/sqrt(alpha_bar) = 15x
    # amplification, while v is almost exactly -x0, so the layout the sampler's first step commits to is what v
    # learns directly. Saved as A1111's ``v_pred`` marker, so Easel and other UIs load it right.
    prediction: str = "v_prediction"
    # snr_floor: lower bound on the x0-space loss weight, which min-SNR caps from above at ``min_snr_gamma``.
    # Min-SNR alone weights getting x0 right by the SNR itself (0.005 at t=999), and t=999 is where the layout is
    # decided; a floor of 1 weighs it like the rest.
    snr_floor: float = 1.0
    # blind_from: from this timestep up, the U-Net sees pure noise (as the sampler's first step does) and is
    # asked for the prediction that leads to the real image. SD's schedule leaves a trace of the image at t=999,
    # and on 16x16 latents that trace already shows where the shape is, so text is never needed for position.
    blind_from: int = 900
    # top_share: this share of each batch is drawn from t >= blind_from (the rest from all timesteps), so the
    # few steps that decide the layout get more than their 1/1000 each of the training.
    top_share: float = 0.25
    scenes: int = 30000  # distinct scenes encoded for the U-Net phase
    bf16: bool = False  # autocast to bfloat16 (measured no faster on 2 AMX cores at these sizes)
    device: str = "cpu"  # "cuda" trains on a GPU; data and noise are still drawn on the CPU, from the seed
    log_every: int = 100
    snapshot_every: int = 1000  # U-Net steps between snapshots handed to ``train``'s ``snapshot`` callback
    # defaults the UI applies when the model is selected
    defaults: dict[str, Any] = field(
        default_factory=lambda: {"width": 64, "height": 64, "steps": 20, "cfg_scale": 3.0, "sampler_name": "Euler a"}
    )


def _autocast(config: TrainConfig) -> Any:
    return torch.autocast(torch.device(config.device).type, dtype=torch.bfloat16, enabled=config.bf16)


def build_components(config: TrainConfig) -> dict[str, Any]:
    """Fresh, randomly initialised components in diffusers form, from the shipped SD1 configs."""
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    base = family_config("sd1")
    torch.manual_seed(config.seed)
    levels = len(config.vae_channels)
    vae = AutoencoderKL.from_config(
        {
            **base["vae"],
            "block_out_channels": list(config.vae_channels),
            "down_block_types": ["DownEncoderBlock2D"] * levels,
            "up_block_types": ["UpDecoderBlock2D"] * levels,
            "layers_per_block": 1,
            "sample_size": config.image_size,
        }
    )
    text_config = CLIPTextConfig.from_dict(
        {
            **base["text_encoder"],
            "hidden_size": config.text_hidden,
            "intermediate_size": config.text_hidden * 4,
            "num_hidden_layers": config.text_layers,
            "num_attention_heads": text_heads(config.text_hidden),
            "projection_dim": config.text_hidden,
        }
    )
    text_encoder = CLIPTextModel(text_config)
    attends = config.unet_attends
    unet = UNet2DConditionModel.from_config(
        {
            **base["unet"],
            "block_out_channels": list(config.unet_channels),
            "layers_per_block": 1,
            "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends],
            "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)],
            "cross_attention_dim": config.text_hidden,
            "attention_head_dim": unet_heads("sd1", list(config.unet_channels)),
            "sample_size": config.image_size // 2 ** (levels - 1),
        }
    )
    scheduler_config = base["scheduler"]
    scheduler = getattr(diffusers, scheduler_config["_class_name"]).from_config(
        scheduler_config, prediction_type=config.prediction
    )
    device = torch.device(config.device)
    return {
        "vae": vae.to(device),
        "text_encoder": text_encoder.to(device),
        "tokenizer": load_clip_tokenizer(PAD_CLIP),
        "unet": unet.to(device),
        "scheduler": scheduler,
    }


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) to float (N, 3, H, W) in [-1, 1], as the pipelines feed the VAE."""
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train_vae(vae: torch.nn.Module, config: TrainConfig, log: Log) -> None:
    rng = random.Random(config.seed + 1)
    gen = torch.Generator().manual_seed(config.seed + 1)
    # Start the posterior narrow (std ~0.05): with SD's near-zero KL weight nothing pulls it wider, and a unit
    # std at the start drowns the latents in noise, which costs thousands of steps to learn around.
    with torch.no_grad():
        channels = vae.config.latent_channels
        vae.quant_conv.bias[channels:] = -6.0
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    vae.train()
    started = time.perf_counter()
    for step in range(config.vae_steps):
        for group in optimizer.param_groups:
            group["lr"] = config.vae_lr * _schedule(step, config.vae_steps, config.warmup_steps)
        batch = [scenes.random_scene(rng) for _ in range(config.vae_batch)]
        x = _to_tensor(np.stack([np.asarray(scenes.render(s, config.image_size)) for s in batch]))
        cropping = config.vae_crop and step < config.vae_steps - config.vae_full_steps
        if cropping:  # a convolutional VAE learns from crops as well, at a fraction of the cost
            top, left = (rng.randrange(0, config.image_size - config.vae_crop + 1, 8) for _ in range(2))
            x = x[:, :, top : top + config.vae_crop, left : left + config.vae_crop]
        x = x.to(config.device)
        with _autocast(config):
            posterior = vae.encode(x).latent_dist
            noise = torch.randn(posterior.mean.shape, generator=gen).to(config.device)
            z = posterior.mean + posterior.std * noise
            recon = vae.decode(z).sample.float()
        kl = posterior.kl().mean() / x[0].numel()
        loss = F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x) + config.vae_kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        if step % config.log_every == 0 or step == config.vae_steps - 1:
            _progress(log, "vae", step, config.vae_steps, started, f"loss {loss.item():.4f}")
    vae.eval()


def _progress(log: Log, phase: str, step: int, total: int, started: float, extra: str) -> None:
    elapsed = time.perf_counter() - started
    eta = elapsed / (step + 1) * (total - step - 1)
    log(f"[{phase}] step {step + 1}/{total}  {extra}  elapsed {elapsed / 60:.1f} min  eta {eta / 60:.1f} min")


@torch.no_grad()
def encode_scenes(vae: Any, pixels: np.ndarray, config: TrainConfig, batch: int = 256) -> torch.Tensor:
    """Posterior means of the VAE, unscaled, for every scene."""
    out = []
    for i in range(0, len(pixels), batch):
        with _autocast(config):
            x = _to_tensor(pixels[i : i + batch]).to(config.device)
            out.append(vae.encode(x).latent_dist.mean.float().cpu())
    return torch.cat(out)


@torch.no_grad()
def normalise_latents(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Fold a per-channel shift and one scale into the VAE so that ``latent * scaling_factor`` has zero mean and
    unit variance, as SD's samplers assume. The VAE's maths is unchanged; only its latent coordinates move.

    Encoder: mean' = k (mean - m), logvar' = logvar + 2 ln k. Decoder: post_quant_conv(z' / k + m).
    """
    channels = latents.shape[1]
    mean = latents.mean(dim=(0, 2, 3))
    std = (latents - mean[None, :, None, None]).std()
    k = float(1.0 / (vae.config.scaling_factor * std))
    result = (latents - mean[None, :, None, None]) * k * vae.config.scaling_factor
    mean = mean.to(vae.quant_conv.weight.device)
    quant = vae.quant_conv
    quant.weight[:channels] *= k
    quant.bias[:channels] = (quant.bias[:channels] - mean) * k
    quant.bias[channels:] += 2 * math.log(k)
    post = vae.post_quant_conv
    post.bias += post.weight[:, :, 0, 0] @ mean
    post.weight /= k
    return result


@torch.no_grad()
def fit_preview(vae: Any, latents: torch.Tensor, pixels: np.ndarray, factor: int) -> dict[str, Any]:
    """Least-squares latent-to-RGB projection (with bias) for live previews, like A1111's 'Approx cheap'."""
    x = _to_tensor(pixels)
    small = F.avg_pool2d(x, factor)  # (N, 3, h, w) matching the latent grid
    lat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    rgb = small.permute(0, 2, 3, 1).reshape(-1, 3)
    design = torch.cat([lat, torch.ones(len(lat), 1)], dim=1)
    solution = torch.linalg.lstsq(design, rgb).solution
    return {"factors": solution[:-1].tolist(), "bias": solution[-1].tolist()}


def noised(
    x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor, blind: torch.Tensor, prediction: str = "epsilon"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The U-Net's training input x_t and its target (the noise, or v for ``prediction="v_prediction"``).

    Where ``blind``, x_t is the noise alone, as the sampler's first step sees it (no trace of the image), and
    the target is the one that, put through the sampler's own formula, leaves the training image: the noise
    eps = (x_t - sqrt(a) x0) / sqrt(1 - a), or v = sqrt(a) eps - sqrt(1 - a) x0.
    """
    a = alpha_bar
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    eps = noise
    if bool(blind.any()):
        mask = blind.view(-1, *([1] * (x0.dim() - 1)))
        x_t = torch.where(mask, (1 - a).sqrt() * noise, x_t)
        eps = torch.where(mask, noise - (a / (1 - a)).sqrt() * x0, noise)
    if prediction == "v_prediction":
        return x_t, a.sqrt() * eps - (1 - a).sqrt() * x0
    if prediction != "epsilon":
        raise ValueError(f"prediction must be 'epsilon' or 'v_prediction', not {prediction!r}")
    return x_t, eps


def loss_weights(alphas_cumprod: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """Per-timestep weights of the prediction's squared error: min-SNR with a floor, set in x0 space and
    carried into the space the U-Net predicts in (x0 error = eps error / sqrt(SNR) = v error * sqrt(1 - a))."""
    snr = alphas_cumprod / (1 - alphas_cumprod)
    in_x0 = torch.clamp(snr, min=config.snr_floor, max=config.min_snr_gamma)
    return in_x0 / (snr + 1) if config.prediction == "v_prediction" else in_x0 / snr


def sample_timesteps(batch: int, config: TrainConfig, total: int, gen: torch.Generator) -> torch.Tensor:
    """Uniform timesteps, except that the first ``top_share`` of the batch comes from t >= blind_from."""
    t = torch.randint(0, total, (batch,), generator=gen)
    top = round(batch * config.top_share)
    if top and config.blind_from < total:
        t[:top] = torch.randint(config.blind_from, total, (top,), generator=gen)
    return t


def _tokenize(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    return tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def train_unet(
    components: dict[str, Any],
    latents: torch.Tensor,
    scene_list: list[scenes.Scene],
    config: TrainConfig,
    log: Log,
    snapshot: Callable[[torch.nn.Module, torch.nn.Module, int], None] | None = None,
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Train text encoder and U-Net together on noise (or v) prediction; returns their EMA copies."""
    unet, text_encoder, tokenizer = components["unet"], components["text_encoder"], components["tokenizer"]
    alphas = components["scheduler"].alphas_cumprod.float()
    weights = loss_weights(alphas, config)
    rng = random.Random(config.seed + 2)
    gen = torch.Generator().manual_seed(config.seed + 2)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.unet_lr, weight_decay=0.01)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    unet.train()
    text_encoder.train()
    caption_cache: dict[str, torch.Tensor] = {}
    started = time.perf_counter()
    running = 0.0
    for step in range(config.unet_steps):
        for group in optimizer.param_groups:
            group["lr"] = config.unet_lr * _schedule(step, config.unet_steps, config.warmup_steps)
        index = torch.randint(len(latents), (config.unet_batch,), generator=gen)
        texts = [scenes.caption(scene_list[i], rng) for i in index.tolist()]
        missing = [t for t in dict.fromkeys(texts) if t not in caption_cache]
        if missing:
            caption_cache.update(zip(missing, _tokenize(tokenizer, missing), strict=True))
        ids = torch.stack([caption_cache[t] for t in texts])
        x0 = latents[index]
        noise = torch.randn(x0.shape, generator=gen)
        noise += config.offset_noise * torch.randn((x0.shape[0], x0.shape[1], 1, 1), generator=gen)
        t = sample_timesteps(x0.shape[0], config, len(alphas), gen)
        blind = t >= config.blind_from
        noisy, target = noised(x0, noise, alphas[t][:, None, None, None], blind, config.prediction)
        ids, noisy, target, t = (v.to(config.device) for v in (ids, noisy, target, t))
        with _autocast(config):
            context = text_encoder(ids)[0]
            pred = unet(noisy, t, encoder_hidden_states=context).sample.float()
        loss = ((pred - target) ** 2).mean(dim=(1, 2, 3))
        loss = (loss * weights.to(config.device)[t]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema, live in ((ema_unet, unet), (ema_text, text_encoder)):
                for pe, pl in zip(ema.parameters(), live.parameters(), strict=True):
                    pe.lerp_(pl, 1 - decay)
        running = loss.item() if step == 0 else 0.98 * running + 0.02 * loss.item()
        if step % config.log_every == 0 or step == config.unet_steps - 1:
            _progress(log, "unet", step, config.unet_steps, started, f"loss {running:.4f}")
        if snapshot is not None and (step + 1) % config.snapshot_every == 0 and step + 1 < config.unet_steps:
            snapshot(ema_unet, ema_text, step + 1)
    return ema_unet, ema_text


def train(
    config: TrainConfig, log: Log = print, snapshot_path: Path | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The whole run; returns the trained components and the metadata to save with them.

    With ``snapshot_path``, the EMA weights so far are saved there every ``snapshot_every`` U-Net steps, so a
    long run can be looked at (and tested) before it ends.
    """
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    components = build_components(config)
    vae = components["vae"]
    counts = {k: sum(p.numel() for p in components[k].parameters()) for k in ("vae", "text_encoder", "unet")}
    log(f"parameters: {counts}")
    train_vae(vae, config, log)
    log(f"rendering and encoding {config.scenes} scenes")
    pixels, scene_list = scenes.dataset(config.scenes, config.seed + 3, config.image_size)
    raw = encode_scenes(vae, pixels, config)
    latents = normalise_latents(vae, raw)
    factor = 2 ** (len(config.vae_channels) - 1)
    preview = fit_preview(vae, latents[:2000], pixels[:2000], factor)
    del pixels

    def metadata_for(minutes: float, unet_steps: int) -> dict[str, str]:
        return _metadata(config, preview, minutes, unet_steps)

    def snapshot(unet: torch.nn.Module, text_encoder: torch.nn.Module, step: int) -> None:
        if snapshot_path is None:
            return
        minutes = (time.perf_counter() - started) / 60
        save({**components, "unet": unet, "text_encoder": text_encoder}, metadata_for(minutes, step), snapshot_path)
        log(f"snapshot at U-Net step {step} saved to {snapshot_path}")

    ema_unet, ema_text = train_unet(components, latents, scene_list, config, log, snapshot)
    components["unet"], components["text_encoder"] = ema_unet, ema_text
    minutes = (time.perf_counter() - started) / 60
    log(f"done in {minutes:.1f} min")
    return components, metadata_for(minutes, config.unet_steps)


def resume(
    path: Path, config: TrainConfig, log: Log = print, snapshot_path: Path | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Continue training the text encoder and U-Net of a saved demo model for ``config.unet_steps`` more steps,
    with ``config``'s recipe (the VAE, its latent scale and the preview fit are kept as they are).

    This is how a recipe change is tried without the VAE and first U-Net phase again; the file's training
    record keeps the earlier run's and adds this one's.
    """
    from webui.weights import formats, loader

    torch.manual_seed(config.seed)
    started = time.perf_counter()
    source = formats.read_metadata(path)
    components = dict(loader.load_single_file(path, formats.read_state_dict(path), torch.float32).components)
    for name in ("vae", "text_encoder", "unet"):
        components[name] = components[name].to(config.device)
    components["text_encoder"].requires_grad_(True)
    components["unet"].requires_grad_(True)
    # The recipe's prediction type wins over the file's: this is how an epsilon model is turned into a v one.
    scheduler = components["scheduler"]
    components["scheduler"] = type(scheduler).from_config(scheduler.config, prediction_type=config.prediction)
    vae = components["vae"]
    log(f"resuming from {path}: rendering and encoding {config.scenes} scenes")
    pixels, scene_list = scenes.dataset(config.scenes, config.seed + 3, config.image_size)
    latents = encode_scenes(vae, pixels, config) * vae.config.scaling_factor  # the file's VAE is normalised
    del pixels

    def metadata_for(unet_steps: int) -> dict[str, str]:
        minutes = (time.perf_counter() - started) / 60
        earlier = json.loads(source.get("easel.training", "{}"))
        stages = earlier.get("stages", [earlier] if earlier else [])
        record = _training_record(config, minutes, unet_steps, resumed_from=path.name)
        return {**source, "easel.training": json.dumps({"stages": [*stages, record]})}

    def snapshot(unet: torch.nn.Module, text_encoder: torch.nn.Module, step: int) -> None:
        if snapshot_path is not None:
            save({**components, "unet": unet, "text_encoder": text_encoder}, metadata_for(step), snapshot_path)
            log(f"snapshot at U-Net step {step} saved to {snapshot_path}")

    components["unet"], components["text_encoder"] = train_unet(components, latents, scene_list, config, log, snapshot)
    log(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    return components, metadata_for(config.unet_steps)


def _training_record(config: TrainConfig, minutes: float, unet_steps: int, **extra: Any) -> dict[str, Any]:
    return {
        "config": {k: v for k, v in asdict(config).items() if k != "defaults"},
        "unet_steps_done": unet_steps,
        "minutes": round(minutes, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        **extra,
    }


def _metadata(config: TrainConfig, preview: dict[str, Any], minutes: float, unet_steps: int) -> dict[str, str]:
    return {
        "format": "pt",
        "modelspec.title": "Easel demo: shapes",
        "modelspec.description": "Easel's built-in demo model: coloured shapes on plain backgrounds, 64x64.",
        "modelspec.architecture": "stable-diffusion-v1",
        "modelspec.resolution": f"{config.image_size}x{config.image_size}",
        "easel.defaults": json.dumps(config.defaults),
        "easel.preview": json.dumps(preview),
        "easel.training": json.dumps(_training_record(config, minutes, unet_steps)),
    }


def save(components: dict[str, Any], metadata: dict[str, str], path: Path) -> Path:
    """Single-file, original-layout, fp16 .safetensors: exactly what users download."""
    from safetensors.torch import save_file

    from webui.weights.convert import to_original_layout

    state = {k: v.to("cpu", torch.float16).contiguous() for k, v in to_original_layout(components).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    save_file(state, str(temp), metadata=metadata)
    temp.replace(path)
    return path
