"""Paths and flags: everything the user can set on the command line, gathered in one frozen object.

Folders are named as in A1111 (``models/Stable-diffusion``, ``models/VAE``...) so users can point Easel at the
models they already have, either folder by folder or with ``--models-dir``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from webui.types import Limits

ROOT = Path(__file__).resolve().parent.parent

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
MEMORY_MODES = ("none", "model-offload", "sequential-offload")
ATTENTION = ("sdpa", "xformers")
VAE_TILING = ("auto", "on", "off")


@dataclass(frozen=True)
class Settings:
    models_dir: Path = ROOT / "models"
    ckpt_dir: Path | None = None
    vae_dir: Path | None = None
    lora_dir: Path | None = None
    controlnet_dir: Path | None = None
    embeddings_dir: Path | None = None
    outputs_dir: Path = ROOT / "outputs"
    cache_dir: Path | None = None
    checkpoint: str | None = None
    host: str = "127.0.0.1"
    port: int = 7860
    device: str = "auto"
    precision: str = "auto"
    memory_mode: str = "none"
    attention: str = "sdpa"
    vae_tiling: str = "auto"
    no_half_vae: bool = False
    max_queue: int = 64
    ckpt_cache: int = 0
    demo_model: bool = True  # list Easel's built-in demo model (the default when the user has no checkpoint)
    extensions_dir: Path | None = None  # None: no extensions (library and test use); app.py passes ROOT/extensions
    extension_packages: bool = False  # also load installed packages' ``easel.extensions`` entry points (app.py: on)
    allow_extension_install: bool = False  # installing from the page even when not on loopback
    limits: Limits = field(default_factory=Limits)

    @property
    def checkpoints_path(self) -> Path:
        return self.ckpt_dir or self.models_dir / "Stable-diffusion"

    @property
    def vae_path(self) -> Path:
        return self.vae_dir or self.models_dir / "VAE"

    @property
    def lora_path(self) -> Path:
        return self.lora_dir or self.models_dir / "Lora"

    @property
    def controlnet_path(self) -> Path:
        return self.controlnet_dir or self.models_dir / "ControlNet"

    @property
    def embeddings_path(self) -> Path:
        return self.embeddings_dir or self.models_dir / "embeddings"

    @property
    def annotators_path(self) -> Path:
        """Weights of the ControlNet preprocessors that run a network (depth, pose...), as users download them."""
        return self.models_dir / "annotators"

    @property
    def esrgan_path(self) -> Path:
        return self.models_dir / "ESRGAN"

    @property
    def vae_approx_path(self) -> Path:
        return self.models_dir / "VAE-approx"

    @property
    def cache_path(self) -> Path:
        """Where hashes and other derived data live; next to the models so it travels with them."""
        return self.cache_dir or self.models_dir / ".easel-cache"

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``app.py`` and the ``generate`` command."""
    paths = parser.add_argument_group("folders")
    paths.add_argument("--models-dir", type=Path, default=Settings.models_dir, help="root of the model folders")
    paths.add_argument("--ckpt-dir", type=Path, help="checkpoints (default: MODELS/Stable-diffusion)")
    paths.add_argument("--vae-dir", type=Path, help="VAEs (default: MODELS/VAE)")
    paths.add_argument("--lora-dir", type=Path, help="LoRAs (default: MODELS/Lora)")
    paths.add_argument("--controlnet-dir", type=Path, help="ControlNet models (default: MODELS/ControlNet)")
    paths.add_argument("--embeddings-dir", type=Path, help="textual-inversion embeddings (default: MODELS/embeddings)")
    paths.add_argument("--outputs-dir", type=Path, default=Settings.outputs_dir, help="where images are saved")
    paths.add_argument("--cache-dir", type=Path, help="hash cache and derived data (default: MODELS/.easel-cache)")
    parser.add_argument("--checkpoint", "--ckpt", help="checkpoint to load at start (title, file name or hash)")
    parser.add_argument(
        "--ckpt-cache",
        type=int,
        default=Settings.ckpt_cache,
        help="previously used checkpoints kept in RAM, so switching back to one takes no reload",
    )
    parser.add_argument(
        "--no-demo-model",
        dest="demo_model",
        action="store_false",
        help="do not list Easel's built-in demo model (it is otherwise the default when you have no checkpoint)",
    )
    dev = parser.add_argument_group("device")
    dev.add_argument(
        "--device", choices=DEVICES, default="auto", help="compute device (auto: CUDA, then MPS, then CPU)"
    )
    dev.add_argument(
        "--precision", choices=PRECISIONS, default="auto", help="auto: fp16 on CUDA (bf16 if supported), fp32 on CPU"
    )
    dev.add_argument("--memory-mode", choices=MEMORY_MODES, default="none", help="offload weights to RAM to save VRAM")
    dev.add_argument(
        "--attention", choices=ATTENTION, default="sdpa", help="attention kernel (xformers needs the gpu extra)"
    )
    dev.add_argument(
        "--vae-tiling", choices=VAE_TILING, default="auto", help="decode large images in tiles (auto: above 1536 px)"
    )
    dev.add_argument("--no-half-vae", action="store_true", help="always run the VAE in fp32")
    ext = parser.add_argument_group("extensions")
    ext.add_argument(
        "--extensions-dir", type=Path, default=ROOT / "extensions", help="where extensions live (default: ./extensions)"
    )
    ext.add_argument("--disable-extensions", action="store_true", help="start with no extensions at all")
    ext.add_argument(
        "--allow-extension-install",
        action="store_true",
        help="allow installing extensions from the page even when Easel listens beyond this machine",
    )
    lim = parser.add_argument_group("limits")
    lim.add_argument("--max-steps", type=int, default=Limits.max_steps)
    lim.add_argument("--max-size", type=int, default=Limits.max_size, help="largest width or height")
    lim.add_argument("--max-batch-size", type=int, default=Limits.max_batch_size)
    lim.add_argument("--max-batch-count", type=int, default=Limits.max_batch_count)
    lim.add_argument(
        "--max-queue", type=int, default=Settings.max_queue, help="jobs waiting before new ones are refused"
    )


def from_args(args: argparse.Namespace) -> Settings:
    limits = Limits(
        max_steps=args.max_steps,
        max_size=args.max_size,
        max_pixels=max(args.max_size, Limits.max_size) ** 2,
        max_batch_size=args.max_batch_size,
        max_batch_count=args.max_batch_count,
    )
    extra = {k: getattr(args, k) for k in ("host", "port") if hasattr(args, k)}
    return Settings(
        models_dir=args.models_dir,
        ckpt_dir=args.ckpt_dir,
        vae_dir=args.vae_dir,
        lora_dir=args.lora_dir,
        controlnet_dir=args.controlnet_dir,
        embeddings_dir=args.embeddings_dir,
        outputs_dir=args.outputs_dir,
        cache_dir=args.cache_dir,
        checkpoint=args.checkpoint,
        device=args.device,
        precision=args.precision,
        memory_mode=args.memory_mode,
        attention=args.attention,
        vae_tiling=args.vae_tiling,
        no_half_vae=args.no_half_vae,
        max_queue=args.max_queue,
        ckpt_cache=args.ckpt_cache,
        demo_model=args.demo_model,
        extensions_dir=None if args.disable_extensions else args.extensions_dir,
        extension_packages=not args.disable_extensions,
        allow_extension_install=args.allow_extension_install,
        limits=limits,
        **extra,
    )


def parse(argv: Sequence[str] | None = None, *, prog: str = "easel") -> Settings:
    parser = argparse.ArgumentParser(prog=prog)
    add_arguments(parser)
    return from_args(parser.parse_args(argv))
