"""Where the demo model's weights, and its own LoRA, embedding and ControlNet, are shipped inside the package."""

from __future__ import annotations

from pathlib import Path

DEMO_MODEL_PATH = Path(__file__).resolve().parent / "easel-demo-shapes.safetensors"
DEMO_MODEL_NAME = DEMO_MODEL_PATH.name
# Trained on the demo model by webui/demo/train_networks.py; listed (as built-ins) while the demo model is.
DEMO_LORA_PATH = Path(__file__).resolve().parent / "striped.safetensors"  # <lora:striped:1>
DEMO_EMBEDDING_PATH = Path(__file__).resolve().parent / "easelviolet.safetensors"  # the word: easelviolet
# Trained by webui/demo/train_controlnet.py: a canny ControlNet that puts the shape where the edges are.
DEMO_CONTROLNET_PATH = Path(__file__).resolve().parent / "easel-demo-canny.safetensors"
