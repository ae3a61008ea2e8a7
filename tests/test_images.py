"""Decoding user images: every bad input is an InvalidRequest naming the field; good ones come back loaded."""

from __future__ import annotations

import base64
import io
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from webui.errors import InvalidRequest
from webui.images import decode_image, encode_png_base64
from webui.outputs.infotext import read_infotext


def _png(image: Image.Image | None = None) -> bytes:
    buffer = io.BytesIO()
    (image or Image.new("RGB", (8, 6), (10, 20, 30))).save(buffer, format="PNG")
    return buffer.getvalue()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height``: a decompression bomb's calling card."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _chunk(b"IEND", b"")
    )


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello")
    return buffer.getvalue()


def _reject(data, field: str = "init_image", **kwargs) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        decode_image(data, field, **kwargs)
    assert caught.value.field == field
    return caught.value


# -- good input ------------------------------------------------------------------------------------------------


def test_base64_png_decodes_to_rgb() -> None:
    image = decode_image(_b64(_png()), "init_image")
    assert image.mode == "RGB"
    assert image.size == (8, 6)
    assert image.getpixel((0, 0)) == (10, 20, 30)


@pytest.mark.parametrize("prefix", ["data:image/png;base64,", "DATA:image/jpeg;base64,", "data:;base64,"])
def test_data_uri_decodes(prefix: str) -> None:
    assert decode_image(prefix + _b64(_png()), "init_image").size == (8, 6)


def test_base64_with_line_breaks_decodes() -> None:
    text = _b64(_png())
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert decode_image(wrapped + "\n", "init_image").size == (8, 6)


def test_bytes_pil_and_path_inputs(tmp_path: Path) -> None:
    path = tmp_path / "in.png"
    path.write_bytes(_png())
    assert decode_image(_png(), "image").size == (8, 6)
    assert decode_image(bytearray(_png()), "image").size == (8, 6)
    assert decode_image(path, "image").size == (8, 6)
    original = Image.new("RGB", (4, 4))
    decoded = decode_image(original, "image")
    assert decoded.size == (4, 4)
    assert decoded is not original


def test_jpeg_and_webp_decode() -> None:
    for fmt in ("JPEG", "WEBP"):
        buffer = io.BytesIO()
        Image.new("RGB", (10, 10), "blue").save(buffer, format=fmt)
        assert decode_image(buffer.getvalue(), "init_image").mode == "RGB"


def test_transparent_rgba_is_flattened_on_white() -> None:
    image = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    image.putpixel((1, 0), (0, 0, 0, 0))
    decoded = decode_image(_b64(_png(image)), "init_image")
    assert decoded.getpixel((0, 0)) == (255, 0, 0)
    assert decoded.getpixel((1, 0)) == (255, 255, 255)


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    image = Image.new("I;16", (2, 1))
    image.putpixel((0, 0), 32768)
    mask = decode_image(_png(image), "mask", mode="L")
    assert mask.getpixel((0, 0)) == 128
    assert mask.getpixel((1, 0)) == 0


# -- masks -----------------------------------------------------------------------------------------------------


def test_mask_with_transparency_uses_alpha() -> None:
    # Opaque black where to paint is invisible in a greyscale conversion; A1111 reads the alpha channel instead.
    image = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    image.putpixel((0, 0), (0, 0, 0, 255))
    mask = decode_image(_b64(_png(image)), "mask", mode="L")
    assert mask.mode == "L"
    assert (mask.getpixel((0, 0)), mask.getpixel((1, 0))) == (255, 0)


def test_fully_opaque_rgba_mask_uses_brightness() -> None:
    image = Image.new("RGBA", (2, 1), (0, 0, 0, 255))
    image.putpixel((0, 0), (255, 255, 255, 255))
    mask = decode_image(_png(image), "mask", mode="L")
    assert (mask.getpixel((0, 0)), mask.getpixel((1, 0))) == (255, 0)


def test_rgb_mask_is_greyscale() -> None:
    mask = decode_image(_png(Image.new("RGB", (3, 3), "white")), "mask", mode="L")
    assert mask.mode == "L"
    assert mask.getextrema() == (255, 255)


# -- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("empty", ["", "   \n", b""])
def test_empty_input(empty) -> None:
    assert "empty" in _reject(empty).message


def test_invalid_base64_alphabet() -> None:
    error = _reject("iVBORw0K$$$=", field="mask")
    assert "invalid base64" in error.message
    assert "'$'" in error.message


@pytest.mark.parametrize("text", ["iVBORw0KGgo", "YWJj=", "ab=c", "YW==YWJj"])
def test_invalid_base64_padding(text: str) -> None:
    assert "invalid base64" in _reject(text).message


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("data:text/html;base64,PGh0bWw+", "MIME type 'text/html'"),
        ("data:application/pdf;base64,JVBERi0=", "MIME type 'application/pdf'"),
        ("data:image/png,rawdata", "base64-encoded"),
        ("data:image/png;base64", "no ','"),
        ("data:image/png;base64,", "no data"),
    ],
)
def test_bad_data_uri(uri: str, expected: str) -> None:
    assert expected in _reject(uri).message


@pytest.mark.parametrize(
    ("raw", "looks_like"),
    [
        (b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", "PDF"),
        (_zip(), "ZIP"),
        (b"<!DOCTYPE html><html><body>hi</body></html>", "HTML"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "SVG"),
        (b"<svg width='10' height='10'></svg>", "SVG"),
        (b'{"images": []}', "JSON"),
        (b"just some words", "text"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", "PostScript"),
    ],
)
def test_non_image_bytes_are_named(raw: bytes, looks_like: str) -> None:
    for data in (raw, _b64(raw)):
        error = _reject(data)
        assert "not a supported image" in error.message
        assert looks_like in error.message


def test_truncated_png() -> None:
    data = _png(Image.effect_noise((64, 64), 50).convert("RGB"))
    error = _reject(_b64(data[: len(data) // 2]))
    assert "truncated" in error.message or "corrupt" in error.message


def test_decompression_bomb_over_our_limit() -> None:
    error = _reject(_b64(_png_declaring(9000, 9000)))
    assert error.message == "image is too large: 9000 x 9000 pixels (max 64000000 pixels)"


def test_decompression_bomb_over_pillows_hard_limit() -> None:
    error = _reject(_png_declaring(50_000, 50_000))
    assert "too large" in error.message
    assert "50000 x 50000" in error.message


def test_custom_pixel_limit_applies_to_pil_images_too() -> None:
    error = _reject(Image.new("RGB", (100, 100)), max_pixels=5000)
    assert "100 x 100" in error.message


def test_url_and_filename_strings_are_not_fetched_or_opened(tmp_path: Path) -> None:
    assert "URLs are not accepted" in _reject("https://example.com/cat.png").message
    path = tmp_path / "secret.png"
    path.write_bytes(_png())
    assert "invalid base64" in _reject(str(path)).message


def test_cli_path_errors(tmp_path: Path) -> None:
    assert "not found" in _reject(tmp_path / "missing.png").message
    assert "directory" in _reject(tmp_path).message
    fake = tmp_path / "photo.png"
    fake.write_bytes(b"%PDF-1.4 not really a png")
    assert "PDF" in _reject(fake).message


def test_wrong_type() -> None:
    assert "expected an image" in _reject(12345).message


def test_bad_mode_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        decode_image(_png(), "init_image", mode="RGBA")  # type: ignore[arg-type]


# -- encoding --------------------------------------------------------------------------------------------------


def test_encode_png_base64_round_trip_with_infotext() -> None:
    image = Image.new("RGB", (5, 5), "green")
    text = encode_png_base64(image, "a cat\nSteps: 1, Seed: 2, Size: 5x5")
    with Image.open(io.BytesIO(base64.b64decode(text))) as decoded:
        assert read_infotext(decoded) == "a cat\nSteps: 1, Seed: 2, Size: 5x5"
    assert decode_image(text, "image").getpixel((0, 0)) == (0, 128, 0)
    with Image.open(io.BytesIO(base64.b64decode(encode_png_base64(image)))) as plain:
        assert read_infotext(plain) is None
