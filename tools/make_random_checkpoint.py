"""Write a full-size, random-weight checkpoint of a model family in the original single-file layout.

For benchmarks: a random SD1.5/SD2/SDXL runs at exactly the speed and memory of the real one, and saving it
the way users' files are saved means the benchmark exercises Easel's real loader. It draws nothing useful.

    .venv/bin/python tools/make_random_checkpoint.py --family sd1 --out models/Stable-diffusion/random-sd15.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--family", choices=["sd1", "sd2", "sdxl"], default="sd1")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--half", action="store_true", help="store fp16 (half the file size)")
    args = parser.parse_args()

    import diffusers
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from webui.weights.convert import to_original_layout
    from webui.weights.family_configs import family_config

    torch.manual_seed(0)
    config = family_config(args.family)
    components = {
        "unet": UNet2DConditionModel.from_config(config["unet"]),
        "vae": AutoencoderKL.from_config(config["vae"]),
        "scheduler": getattr(diffusers, config["scheduler"]["_class_name"]).from_config(config["scheduler"]),
    }
    for key in ("text_encoder", "text_encoder_2"):
        if key in config:
            text_config = CLIPTextConfig.from_dict(config[key])
            cls = CLIPTextModelWithProjection if key == "text_encoder_2" else CLIPTextModel
            components[key] = cls(text_config)
    state = to_original_layout(components, family=args.family)
    if args.half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(args.out))
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**30:.2f} GiB, {len(state)} tensors)")


if __name__ == "__main__":
    main()
