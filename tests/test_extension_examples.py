"""The three example extensions shipped in ``extensions/``, end to end through the service (demo model) and HTTP."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.services import fresh_install_service
from webui.outputs.infotext import parse_infotext
from webui.types import GenerationRequest

EXTENSIONS = Path(__file__).resolve().parent.parent / "extensions"
PROMPT = "a large red circle in the top left on a blue background"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    with fresh_install_service(tmp_path_factory.mktemp("examples"), extensions_dir=EXTENSIONS) as svc:
        yield svc


def _generate(service, **fields):
    request = GenerationRequest.build(**service.defaults_for(None), prompt=PROMPT, seed=7, **fields)
    (image,) = service.generate(request, timeout=120).images
    return image


def _asymmetry(image: Image.Image) -> float:
    pixels = np.asarray(image, dtype=np.float32)
    return float(np.abs(pixels - pixels[:, ::-1]).mean())


def test_the_examples_load(service) -> None:
    status = {e.name: e.status for e in service.plugins.extensions}
    assert status == {"image-stats": "enabled", "latent-mirror": "enabled", "watermark": "enabled"}


def test_latent_mirror_makes_the_picture_symmetric_and_says_so(service) -> None:
    plain = _generate(service)
    mirrored = _generate(service, extension_args={"latent-mirror": {"mode": "Left-right", "until": 1.0}})
    assert _asymmetry(plain.image) > 30  # the circle is in the top left
    assert _asymmetry(mirrored.image) < _asymmetry(plain.image) / 4
    info = parse_infotext(mirrored.infotext)
    assert info["Latent mirror"] == "Left-right 1 until 1"
    assert service.plugins.infotext_read(info) == {
        "latent-mirror": {"mode": "Left-right", "strength": 1.0, "until": 1.0}
    }
    assert "Latent mirror" not in parse_infotext(plain.infotext)
    again = _generate(service)
    assert np.array_equal(np.asarray(again.image), np.asarray(plain.image))  # nothing stays mirrored


def test_latent_mirror_follows_its_saved_default(service) -> None:
    service.plugins.update_settings("latent-mirror", {"default_mode": "Top-bottom"})
    try:
        image = _generate(service, extension_args={"latent-mirror": {"until": 1.0}})
        pixels = np.asarray(image.image, dtype=np.float32)
        assert np.abs(pixels - pixels[::-1]).mean() < _asymmetry(image.image) / 2  # top-bottom, not left-right
        assert "Top-bottom" in parse_infotext(image.infotext)["Latent mirror"]
    finally:
        service.plugins.update_settings("latent-mirror", {"default_mode": "Off"})


def test_watermark_stamps_the_corner_and_writes_its_field(service) -> None:
    plain = _generate(service)
    marked = _generate(service, extension_args={"watermark": {"enabled": True, "text": "EASEL"}})
    before, after = np.asarray(plain.image, dtype=np.int16), np.asarray(marked.image, dtype=np.int16)
    h, w = after.shape[:2]
    band = max(10, h // 10)  # the stamp's height
    corner = (slice(h - band, h), slice(w // 2, w))
    assert np.abs(after[corner] - before[corner]).mean() > 20
    assert np.array_equal(after[: h - band], before[: h - band])  # the rest untouched
    assert (after[corner] > 200).all(axis=2).any()  # white letters
    info = parse_infotext(marked.infotext)
    assert info["Watermark"] == "EASEL"
    assert service.plugins.infotext_read(info)["watermark"] == {"enabled": True, "text": "EASEL"}
    on_disk = Image.open(marked.path)
    assert np.array_equal(np.asarray(on_disk.convert("RGB")), np.asarray(marked.image))  # saved after the stamp
    service.plugins.update_settings("watermark", {"always": True, "default_text": "AUTO"})
    try:
        assert parse_infotext(_generate(service).infotext)["Watermark"] == "AUTO"
    finally:
        service.plugins.update_settings("watermark", {"always": False, "default_text": "Easel"})


def test_image_stats_route_answers_and_checks_its_input(service) -> None:
    from fastapi.testclient import TestClient

    from webui.api.server import build_app

    image = Image.new("RGB", (40, 20), (200, 10, 10))
    image.paste((10, 10, 200), (0, 0, 10, 20))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    with TestClient(build_app(service)) as client:
        body = client.post(
            "/easel/v1/ext/image-stats/stats", json={"image": base64.b64encode(buffer.getvalue()).decode()}
        )
        assert body.status_code == 200, body.text
        stats = body.json()
        assert (stats["width"], stats["height"]) == (40, 20)
        assert stats["dominant"][0] == {"rgb": [224, 32, 32], "share": 0.75}
        assert stats["dominant"][1] == {"rgb": [32, 32, 224], "share": 0.25}
        bad = client.post("/easel/v1/ext/image-stats/stats", json={"image": "not an image"})
        assert bad.status_code == 422 and bad.json()["field"] == "image"
