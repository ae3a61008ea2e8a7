"""The CLIP BPE tokenizer shipped with Easel, so no tokenizer is ever fetched from the Hugging Face hub."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

TOKENIZER_DIR = Path(__file__).resolve().parent / "tokenizers" / "clip"
MAX_LENGTH = 77
# SD1 and SDXL's first encoder (OpenAI CLIP-L) pad with the end token; OpenCLIP (SD2, SDXL's second) pads with "!".
PAD_CLIP = "<|endoftext|>"
PAD_OPEN_CLIP = "!"


@cache
def _files() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges, read once: they are ~1.5 MB and every load needs one or two tokenizers."""
    vocab = json.loads((TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
    lines = (TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [(a, b) for a, b in (line.split() for line in lines[1:] if line)]
    return vocab, merges


def load_clip_tokenizer(pad_token: str = PAD_CLIP) -> CLIPTokenizer:
    """A fresh CLIPTokenizer (vocab 49408, max length 77) built from the shipped files, in memory."""
    from transformers import CLIPTokenizer

    vocab, merges = _files()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=MAX_LENGTH)
