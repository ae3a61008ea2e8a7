"""Textual-inversion embeddings: the file name in a prompt calls its vectors, in every layout users have.

The fixture embeddings hold the tiny model's own token vectors for known words, so ``a bluered circle`` must be
pixel-identical to ``a blue red circle`` when ``bluered`` is an embedding of those two tokens.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.services import running_service
from tests.fixtures.tiny_models import make_embedding
from webui.networks import embeddings as embeddings_module
from webui.outputs.infotext import parse_infotext
from webui.types import GenerationRequest

SIZE = 64


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_sd1_ckpt: Path, tiny_sdxl_ckpt: Path) -> Path:
    root = tmp_path_factory.mktemp("models")
    (root / "Stable-diffusion").mkdir()
    shutil.copy(tiny_sd1_ckpt, root / "Stable-diffusion" / "tiny.safetensors")
    shutil.copy(tiny_sdxl_ckpt, root / "Stable-diffusion" / "tiny-xl.safetensors")
    emb = root / "embeddings"
    make_embedding(emb / "bluish.pt", "blue")  # A1111 .pt, one vector
    make_embedding(emb / "sub" / "bluered.pt", "blue red")  # two vectors, in a subfolder
    make_embedding(emb / "greenish.safetensors", "green", layout="safetensors")
    make_embedding(emb / "yellowish.bin", "yellow", layout="diffusers")
    make_embedding(emb / "xlpurple.safetensors", "purple", family="sdxl", layout="sdxl")
    make_embedding(emb / "toowide.pt", "blue", width=768)
    (emb / "broken.pt").write_bytes(b"not a pickle")
    (emb / "neverbroken.pt").write_bytes(b"not a pickle either")  # named only by the laziness test
    return root


@pytest.fixture(scope="module")
def service(models: Path, tmp_path_factory: pytest.TempPathFactory):
    with running_service(models, tmp_path_factory.mktemp("out")) as svc:
        yield svc


def _run(service, prompt: str, negative: str = "", checkpoint: str = "tiny.safetensors", **fields):
    base = {"steps": 2, "width": SIZE, "height": SIZE, "seed": 4, "save_images": False, "checkpoint": checkpoint}
    request = GenerationRequest.build(prompt=prompt, negative_prompt=negative, **{**base, **fields})
    result = service.generate(request, timeout=120)
    (image,) = result.images
    return np.asarray(image.image, dtype=np.int16), parse_infotext(image.infotext), result.notes


@pytest.mark.parametrize(
    ("prompt", "written"),
    [
        ("a bluish circle", "a blue circle"),
        ("a bluered circle", "a blue red circle"),
        ("a greenish circle", "a green circle"),
        ("a yellowish circle", "a yellow circle"),
    ],
)
def test_an_embedding_encodes_like_the_words_it_holds(service, prompt: str, written: str) -> None:
    expected, _, _ = _run(service, written)
    got, info, _ = _run(service, prompt)
    assert (got == expected).all()
    word = prompt.split()[1]
    assert info["TI hashes"].startswith(f"{word}: ") and len(info["TI hashes"].split(": ")[1]) == 12


def test_embeddings_work_in_the_negative_prompt_and_with_clip_skip(service) -> None:
    expected, _, _ = _run(service, "a circle", "blue red", clip_skip=2)
    got, info, _ = _run(service, "a circle", "bluered", clip_skip=2)
    assert (got == expected).all() and "bluered: " in info["TI hashes"]


def test_a_word_inside_another_word_is_not_an_embedding(service) -> None:
    _, info, _ = _run(service, "a bluishness circle")
    assert "TI hashes" not in info


def test_sdxl_embeddings_carry_both_encoders_vectors(service) -> None:
    expected, _, _ = _run(service, "a purple square", checkpoint="tiny-xl.safetensors")
    got, info, _ = _run(service, "a xlpurple square", checkpoint="tiny-xl.safetensors")
    assert (got == expected).all() and info["TI hashes"].startswith("xlpurple: ")


def test_one_that_does_not_fit_is_skipped_with_its_reason_and_the_job_runs(service) -> None:
    _, info, notes = _run(service, "a toowide circle")
    assert "TI hashes" not in info
    assert any(n.startswith("embedding toowide skipped: its vectors are 768 wide") for n in notes), notes
    _, _, notes = _run(service, "a broken circle")
    assert any(n.startswith("embedding broken skipped:") for n in notes), notes
    _, _, notes = _run(service, "a bluish circle", checkpoint="tiny-xl.safetensors")  # an SD1 embedding on SDXL
    assert any("bluish skipped" in n for n in notes)
    skipped = service.engine.weights.embeddings.skipped
    assert {"toowide", "broken", "bluish"} <= set(skipped)


@pytest.fixture
def disk_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every file read from the embeddings folder, in order (both readers the library uses; the same
    readers also load checkpoints, which are not counted)."""
    reads: list[str] = []
    for reader in ("read_embedding_object", "read_state_dict"):
        real = getattr(embeddings_module.formats, reader)

        def counting(path: Path, *args, _real=real, **kwargs):
            if "embeddings" in Path(path).parts:
                reads.append(Path(path).name)
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(embeddings_module.formats, reader, counting)
    return reads


def test_embeddings_are_read_only_when_a_prompt_names_them(service, disk_reads: list[str]) -> None:
    library = service.engine.weights.embeddings
    _, _, notes = _run(service, "a plain circle", "a blurry square")
    assert disk_reads == [] and notes == []  # no embedding named: no file read, however many there are
    _, _, notes = _run(service, "a bluish circle")
    assert set(disk_reads) <= {"bluish.pt"}  # only the named one (once, if this model has not learnt it yet)
    assert "bluish" in service.engine.weights.active.embeddings  # ...and it was used
    assert "neverbroken" not in library.skipped and not any("neverbroken" in n for n in notes)

    image, _, notes = _run(service, "a neverbroken circle")
    assert disk_reads.count("neverbroken.pt") == 1
    reason = library.skipped["neverbroken"]
    assert reason and notes == [f"embedding neverbroken skipped: {reason}"]
    assert image.shape == (SIZE, SIZE, 3)  # the job ran without it
