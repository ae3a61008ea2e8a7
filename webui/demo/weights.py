"""Where the demo model's weights are shipped inside the package."""

from __future__ import annotations

from pathlib import Path

DEMO_MODEL_PATH = Path(__file__).resolve().parent / "easel-demo-shapes.safetensors"
DEMO_MODEL_NAME = DEMO_MODEL_PATH.name
