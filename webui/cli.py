"""The headless ``generate`` command: same service, same validation, prints the saved paths (for scripts, benchmarks)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from webui import samplers
from webui import settings as settings_mod
from webui.errors import EaselError, InvalidRequest
from webui.types import GenerationRequest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="easel generate", description="Generate images without the web UI.")
    parser.add_argument("--mode", choices=["txt2img", "img2img", "inpaint"], default="txt2img")
    parser.add_argument("--prompt", "-p", default="")
    parser.add_argument("--negative-prompt", "-n", default="")
    # Left unset, sampler, steps, CFG and size come from the model's own defaults (its metadata), then A1111's.
    parser.add_argument("--sampler", default=None, help=", ".join(samplers.sampler_names()))
    parser.add_argument("--scheduler", default="Automatic", help=", ".join(samplers.schedule_labels()))
    parser.add_argument("--steps", type=int, default=None, help="default: the model's, else 20")
    parser.add_argument("--cfg-scale", type=float, default=None, help="default: the model's, else 7")
    parser.add_argument("--seed", type=int, default=-1)
    parser.add_argument("--width", "-W", type=int, default=None, help="default: the model's native size, else 512")
    parser.add_argument("--height", "-H", type=int, default=None, help="default: the model's native size, else 512")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--batch-count", type=int, default=1)
    parser.add_argument("--clip-skip", type=int, default=1)
    parser.add_argument("--model", help="checkpoint for this run (title, name or hash)")
    parser.add_argument(
        "--vae",
        default="Automatic",
        help="VAE: Automatic (named like the model, else its own), None, or a file in models/VAE",
    )
    parser.add_argument("--init-image", type=Path, help="input image (img2img, inpaint)")
    parser.add_argument("--denoising-strength", type=float, default=0.75)
    parser.add_argument("--resize-mode", type=int, choices=[0, 1, 2], default=0)
    parser.add_argument("--mask", type=Path, help="mask image, white = repaint (inpaint)")
    parser.add_argument("--mask-blur", type=int, default=4)
    parser.add_argument("--masked-content", type=int, choices=[0, 1, 2, 3], default=1)
    parser.add_argument("--only-masked", action="store_true", help="inpaint area: only masked")
    parser.add_argument("--padding", type=int, default=32)
    parser.add_argument("--invert-mask", action="store_true")
    hires = parser.add_argument_group("hires fix (txt2img)")
    hires.add_argument("--hires", action="store_true", help="a second pass at a larger size")
    hires.add_argument("--hr-scale", type=float, default=2.0)
    hires.add_argument("--hr-upscaler", default="Latent", help="Latent..., Lanczos, Nearest or a models/ESRGAN file")
    hires.add_argument("--hr-steps", type=int, default=0, help="0: the first pass's steps")
    hires.add_argument("--hr-resize-x", type=int, default=0)
    hires.add_argument("--hr-resize-y", type=int, default=0)
    upscale = parser.add_argument_group("SD upscale (img2img)")
    upscale.add_argument("--sd-upscale", type=float, metavar="SCALE", help="upscale the init image by SCALE in tiles")
    upscale.add_argument("--sd-upscale-upscaler", default="Lanczos")
    upscale.add_argument("--sd-upscale-overlap", type=int, default=64)
    parser.add_argument(
        "--controlnet",
        action="append",
        default=[],
        metavar="KEY=VALUE,...",
        help="a ControlNet unit, e.g. model=control_v11p_sd15_canny,module=canny,image=edges.png,weight=0.8 "
        "(the extension's field names; repeat for several units)",
    )
    parser.add_argument(
        "--ext",
        action="append",
        default=[],
        metavar="NAME.KEY=VALUE",
        help="an extension's per-job argument, e.g. latent-mirror.mode=Left-right (repeatable)",
    )
    settings_mod.add_arguments(parser)
    return parser


def _value(text: str) -> Any:
    """A command-line value as JSON where it reads as JSON (numbers, true/false), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def controlnet_units(specs: Sequence[str]) -> list[dict[str, Any]]:
    """``--controlnet`` specs as unit dicts; ``image=`` and ``mask=`` are files read as images."""
    from webui.images import decode_image

    units = []
    for index, spec in enumerate(specs):
        unit: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, raw = part.partition("=")
            if not sep:
                raise InvalidRequest(f"controlnet_units[{index}]", f"expected key=value, got {part!r}")
            key = key.strip()
            if key in ("image", "mask"):
                unit[key] = decode_image(
                    Path(raw), f"controlnet_units[{index}].{key}", mode="RGB" if key == "image" else "L"
                )
            else:
                unit[key] = _value(raw.strip())
        units.append(unit)
    return units


def extension_args(specs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--ext NAME.KEY=VALUE`` options as ``extension_args``."""
    found: dict[str, dict[str, Any]] = {}
    for spec in specs:
        target, sep, raw = spec.partition("=")
        name, dot, key = target.rpartition(".")
        if not sep or not dot or not name or not key:
            raise InvalidRequest("extension_args", f"expected NAME.KEY=VALUE, got {spec!r}")
        found.setdefault(name, {})[key] = _value(raw)
    return found


_FALLBACKS = {"sampler_name": samplers.DEFAULT_SAMPLER, "steps": 20, "cfg_scale": 7.0, "width": 512, "height": 512}


def request_from_args(args: argparse.Namespace, model_defaults: dict[str, Any] | None = None) -> GenerationRequest:
    """The request the options describe; options not given take ``model_defaults``, then A1111's defaults."""
    from webui.images import decode_image

    given = {
        "sampler_name": args.sampler,
        "steps": args.steps,
        "cfg_scale": args.cfg_scale,
        "width": args.width,
        "height": args.height,
    }
    chosen = {k: v if v is not None else (model_defaults or {}).get(k, _FALLBACKS[k]) for k, v in given.items()}
    fields = dict(
        mode=args.mode,
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        scheduler=args.scheduler,
        seed=args.seed,
        **chosen,
        batch_size=args.batch_size,
        n_iter=args.batch_count,
        clip_skip=args.clip_skip,
        checkpoint=args.model,
        vae=args.vae,
        denoising_strength=args.denoising_strength,
        resize_mode=args.resize_mode,
        mask_blur=args.mask_blur,
        inpainting_fill=args.masked_content,
        inpaint_full_res=args.only_masked,
        inpaint_full_res_padding=args.padding,
        inpainting_mask_invert=args.invert_mask,
    )
    if args.hires:
        fields.update(
            enable_hr=True,
            hr_scale=args.hr_scale,
            hr_upscaler=args.hr_upscaler,
            hr_second_pass_steps=args.hr_steps,
            hr_resize_x=args.hr_resize_x,
            hr_resize_y=args.hr_resize_y,
        )
    if args.sd_upscale is not None:
        fields.update(
            sd_upscale=True,
            sd_upscale_scale=args.sd_upscale,
            sd_upscale_upscaler=args.sd_upscale_upscaler,
            sd_upscale_overlap=args.sd_upscale_overlap,
        )
    if args.controlnet:
        fields["controlnet_units"] = controlnet_units(args.controlnet)
    if args.ext:
        fields["extension_args"] = extension_args(args.ext)
    if args.init_image is not None:
        fields["init_image"] = decode_image(args.init_image, "init_image")
    if args.mask is not None:
        fields["mask"] = decode_image(args.mask, "mask", mode="L")
    return GenerationRequest.build(**fields)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        request_from_args(args)  # a bad option fails before any model work
        from webui.service.factory import create_service

        service = create_service(settings_mod.from_args(args))
        try:
            request = request_from_args(args, service.defaults_for(args.model))
            result = service.generate(request)
        finally:
            service.stop()
    except EaselError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    for path in result.paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
