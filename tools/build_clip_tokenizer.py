"""Rebuilds the shipped CLIP BPE tokenizer files (vocab.json, merges.txt) from OpenAI's merge list.

Easel must never fetch a tokenizer from the Hugging Face hub, so the files live in the repository. This script
shows where they came from: the BPE merge list that OpenAI published with CLIP (``bpe_simple_vocab_16e6.txt.gz``),
which ``open_clip_torch`` ships inside its wheel on PyPI. The vocabulary is built exactly the way CLIP's
``SimpleTokenizer`` builds it, so token ids match ``openai/clip-vit-large-patch14``.

Usage::

    python tools/build_clip_tokenizer.py                      # pip-downloads the wheel into a temp dir
    python tools/build_clip_tokenizer.py --source FILE        # a .whl, or the .txt.gz itself
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "webui" / "weights" / "tokenizers" / "clip"
WHEEL_REQUIREMENT = "open_clip_torch==3.3.0"
BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
# CLIP keeps the first 49152 - 256 - 2 merges: 256 byte tokens and 2 special tokens fill the rest of 49408.
MERGE_COUNT = 49152 - 256 - 2
EXPECTED_VOCAB_SIZE = 49408


def bytes_to_unicode() -> dict[int, str]:
    """Maps every byte to a printable character, as GPT-2/CLIP do, so BPE never sees whitespace or control bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def build(merge_text: str) -> tuple[dict[str, int], list[str]]:
    """Returns (token -> id, merge lines) in CLIP's order: bytes, bytes+'</w>', merges, then the two specials."""
    merges = merge_text.split("\n")[1 : MERGE_COUNT + 1]
    pairs = [tuple(line.split()) for line in merges]
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    tokens += ["".join(pair) for pair in pairs]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != EXPECTED_VOCAB_SIZE:
        raise SystemExit(f"expected {EXPECTED_VOCAB_SIZE} tokens, built {len(vocab)}")
    return vocab, [" ".join(pair) for pair in pairs]


def read_merge_text(source: Path) -> str:
    """Reads the gzipped merge list from the wheel or from the extracted .txt.gz."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            data = wheel.read(BPE_MEMBER)
    else:
        data = source.read_bytes()
    return gzip.decompress(data).decode("utf-8")


def download_wheel(folder: Path) -> Path:
    """Fetches the open_clip wheel from PyPI without installing it (it would pull torchvision)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_REQUIREMENT, "-d", str(folder)]
    subprocess.run(cmd, check=True)
    return next(folder.glob("open_clip_torch-*.whl"))


def write(vocab: dict[str, int], merges: list[str], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="open_clip_torch wheel or bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        source = args.source or download_wheel(Path(tmp))
        vocab, merges = build(read_merge_text(source))
    write(vocab, merges, args.out)
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
