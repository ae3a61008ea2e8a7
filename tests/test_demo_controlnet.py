"""The demo model's own canny ControlNet: with it, the shape lands where the edge map draws it.

The prompt names no position; each edge map is the canny map of a scene with the circle in one corner. Without
the unit the same seeds put the shape wherever the model likes; with it, the shape's centre of mass (measured
from pixels) falls in the corner the edges are in.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.services import fresh_install_service
from webui.demo import measure, scenes
from webui.demo.weights import DEMO_CONTROLNET_PATH
from webui.types import GenerationRequest

CORNERS = {
    "top left": (0.3, 0.3),
    "top right": (0.7, 0.3),
    "bottom left": (0.3, 0.7),
    "bottom right": (0.7, 0.7),
}
SEEDS = range(300, 304)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    with fresh_install_service(tmp_path_factory.mktemp("demo-cn")) as svc:
        yield svc


def _edges_of(corner: str):
    cx, cy = CORNERS[corner]
    scene = scenes.Scene("circle", "white", "small", f"in the {corner}", "black", cx=cx, cy=cy, radius=0.16)
    return scenes.render(scene)


def _generate(service, seed: int, control):
    units = [{"model": "easel-demo-canny", "module": "canny", "image": control}]
    defaults = service.defaults_for(None)  # the demo model's own size, steps, CFG and sampler
    request = GenerationRequest.build(
        **defaults, prompt="a red circle on a blue background", seed=seed, save_images=False, controlnet_units=units
    )
    return service.generate(request, timeout=120).images[0].image


def test_the_demo_controlnet_is_shipped_small_and_listed_with_the_demo_model(service) -> None:
    assert DEMO_CONTROLNET_PATH.stat().st_size < 8 * 1024 * 1024
    assert any(title.startswith("easel-demo-canny.safetensors") for title in service.controlnet_models())


def test_the_shape_lands_where_the_edge_map_puts_it(service) -> None:
    hits = {}
    for corner in CORNERS:
        control = _edges_of(corner)
        found = [measure.read(_generate(service, seed, control)).quadrant for seed in SEEDS]
        hits[corner] = sum(q == corner for q in found)
    # Without the unit a seed draws the same image whatever the map, so it can hit at most one corner: 4 of 16.
    assert all(count >= 3 for count in hits.values()), hits


def test_the_training_script_makes_a_controlnet_the_loader_reads(tmp_path: Path) -> None:
    """A few steps at tiny settings: the script runs, saves the original layout, and the zero convolutions moved."""
    import subprocess
    import sys

    import torch

    from webui.controlnet.models import load_controlnet
    from webui.demo import train_networks

    out = tmp_path / "canny.safetensors"
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "tools/train_demo_controlnet.py", "--quick", "--out", str(out), "--threads", "1"]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "step 3/3" in done.stdout and out.is_file()
    base = dict(train_networks.load_demo()["unet"].config)
    model = load_controlnet(out, base, torch.float32)
    assert any(p.abs().max() > 0 for n, p in model.named_parameters() if n.startswith("controlnet_down_blocks"))
