"""Benchmark: applying and removing a rank-32 SD1.5 LoRA on the full SD1.5 architecture, without any reload.

    .venv/bin/python bench/lora_apply.py [--rank 32] [--repeat 5]

Random weights in the real shapes (U-Net and CLIP-L from Easel's shipped SD1 config, built in memory; a kohya-style
LoRA on every attention and feed-forward projection of both, as model-site LoRAs are trained). Times, through
``LoraLibrary.apply``/``deactivate`` as the engine calls them:

- first apply: read the file, convert, attach the peft adapter, switch it on;
- remove: switch every adapter off (the model computes its own weights again);
- apply again: the adapter is still attached, so only the switch (and weights) change;
- pixel check: a forward pass of the U-Net before and after apply+remove gives identical outputs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _kohya(module, prefix: str, rank: int, gen) -> dict:
    import torch

    state = {}
    targets = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "q_proj", "k_proj", "v_proj",
               "out_proj", "fc1", "fc2")  # fmt: skip
    for name, layer in module.named_modules():
        if isinstance(layer, torch.nn.Linear) and name.endswith(targets):
            key = prefix + name.replace(".", "_")
            state[key + ".lora_down.weight"] = torch.randn(rank, layer.in_features, generator=gen) * 0.01
            state[key + ".lora_up.weight"] = torch.randn(layer.out_features, rank, generator=gen) * 0.01
            state[key + ".alpha"] = torch.tensor(float(rank))
    return state


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    import diffusers
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from webui.networks.lora import LoraLibrary, LoraUse
    from webui.weights.clip_tokenizer import load_clip_tokenizer
    from webui.weights.family_configs import family_config
    from webui.weights.hashing import HashCache

    torch.manual_seed(0)
    config = family_config("sd1", "epsilon")
    started = time.perf_counter()
    unet = UNet2DConditionModel.from_config(config["unet"]).eval()
    text_encoder = CLIPTextModel(CLIPTextConfig.from_dict(config["text_encoder"])).eval()
    built = time.perf_counter() - started
    scheduler = diffusers.PNDMScheduler.from_config(config["scheduler"])
    pipe = diffusers.StableDiffusionPipeline(
        vae=None, text_encoder=text_encoder, tokenizer=load_clip_tokenizer("<|endoftext|>"), unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    state = _kohya(unet, "lora_unet_", args.rank, gen) | _kohya(text_encoder, "lora_te_", args.rank, gen)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "Lora"
        folder.mkdir()
        save_file(state, str(folder / "bench.safetensors"))
        size_mb = (folder / "bench.safetensors").stat().st_size / 1e6
        del state
        library = LoraLibrary(folder, HashCache(Path(tmp) / "hashes.json"))
        library.registry.refresh()
        model = SimpleNamespace(
            components={"unet": unet, "text_encoder": text_encoder},
            arch=SimpleNamespace(family="sd1", label="SD1.x"),
            info=SimpleNamespace(name="bench"),
            lora_adapters={},
        )
        from collections import OrderedDict

        model.lora_adapters = OrderedDict()
        sample = torch.randn(1, 4, 64, 64, generator=gen)
        context = torch.randn(1, 77, 768, generator=gen)
        with torch.inference_mode():
            before = unet(sample, 500, encoder_hidden_states=context).sample

        started = time.perf_counter()
        library.apply(model, pipe, [LoraUse("bench", 1.0)])
        first_apply = time.perf_counter() - started
        removes, applies = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            library.deactivate(pipe)
            removes.append(time.perf_counter() - started)
            started = time.perf_counter()
            library.apply(model, pipe, [LoraUse("bench", 0.8)])
            applies.append(time.perf_counter() - started)
        with torch.inference_mode():
            patched = unet(sample, 500, encoder_hidden_states=context).sample
        library.deactivate(pipe)
        with torch.inference_mode():
            after = unet(sample, 500, encoder_hidden_states=context).sample
    print(
        json.dumps(
            {
                "model": "SD1.5 U-Net + CLIP-L, random weights, fp32, CPU",
                "build_s": round(built, 1),
                "lora_rank": args.rank,
                "lora_file_mb": round(size_mb, 1),
                "first_apply_s": round(first_apply, 2),
                "remove_ms": round(statistics.median(removes) * 1000, 1),
                "apply_again_ms": round(statistics.median(applies) * 1000, 1),
                "lora_changes_output": bool((patched - before).abs().max() > 0),
                "identical_after_remove": bool(torch.equal(before, after)),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
