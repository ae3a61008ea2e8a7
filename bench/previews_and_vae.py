"""Benchmark: live-preview cost per shown step (cheap projection vs TAESD) and VAE swap time, on the real sizes.

    .venv/bin/python bench/previews_and_vae.py [--device auto] [--size 512] [--repeat 10]

Random weights in the real architectures (the SD1.5 VAE from Easel's shipped config, the released TAESD decoder
shape): speed does not depend on the values. The VAE file is written in A1111's original layout, as users have it.
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


def _timed(fn, repeat: int) -> float:
    """Median milliseconds of ``repeat`` calls after one warm-up call."""
    import torch

    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()

    import torch
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from tests.fixtures.tiny_models import make_taesd_decoder
    from webui.pipeline.device import choose
    from webui.pipeline.preview import cheap_preview
    from webui.pipeline.taesd import TaesdPreviews
    from webui.settings import Settings
    from webui.weights.convert import vae_to_original
    from webui.weights.family_configs import family_config
    from webui.weights.hashing import HashCache
    from webui.weights.vae import VaeChooser

    device = choose(Settings(device=args.device))
    latents = torch.randn(1, 4, args.size // 8, args.size // 8, generator=torch.Generator().manual_seed(0))
    latents = latents.to(device.device, device.dtype)
    figures: dict[str, object] = {"device": device.label, "size": args.size}
    figures["cheap_preview_ms"] = round(_timed(lambda: cheap_preview(latents, "sd1"), args.repeat), 2)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_taesd_decoder(folder / "VAE-approx" / "taesd_decoder.pth")
        previews = TaesdPreviews(folder / "VAE-approx", device.device, device.dtype)
        started = time.perf_counter()
        decoder = previews.decoder_for("sd1")
        figures["taesd_load_ms"] = round((time.perf_counter() - started) * 1000, 1)
        figures["taesd_preview_ms"] = round(_timed(lambda: previews.preview(decoder, latents), args.repeat), 2)

        torch.manual_seed(0)
        config = family_config("sd1", "epsilon")["vae"]
        baked = AutoencoderKL.from_config(config).eval().to(device.device, device.vae_dtype)
        external = AutoencoderKL.from_config(config).eval()
        (folder / "VAE").mkdir()
        save_file(vae_to_original(external), str(folder / "VAE" / "other.safetensors"))
        del external
        chooser = VaeChooser(folder / "VAE", HashCache(folder / "hashes.json"))
        chooser.registry.refresh()
        info = chooser.registry.get("other.safetensors")
        model = SimpleNamespace(
            components={"vae": baked}, vae_info=None, baked_vae=None, info=SimpleNamespace(name="bench")
        )

        def swap(vae) -> float:
            started = time.perf_counter()
            chooser.apply(model, vae)
            if device.device.type == "cuda":
                torch.cuda.synchronize()
            return round((time.perf_counter() - started) * 1000, 1)

        figures["vae_swap_first_ms"] = swap(info)  # read, convert, hash, keep the baked copy, copy in
        figures["vae_swap_back_ms"] = swap(None)
        figures["vae_swap_cached_ms"] = swap(info)  # converted weights cached in RAM
        figures["vae_params_m"] = round(sum(p.numel() for p in baked.parameters()) / 1e6, 1)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
