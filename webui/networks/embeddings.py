"""Textual-inversion embeddings from the embeddings folder: the file name is the word that calls them.

Files as users have them: A1111 ``.pt`` (``string_to_param``, read with ``weights_only=True``), ``.safetensors``
(``emb_params``, or SDXL's ``clip_l``/``clip_g``), diffusers ``.bin`` (``{token: vector}``). They are read when a
prompt first names them, then stay known to the tokenizer, as in A1111: a word that is not in a prompt costs
nothing. One whose vectors do not fit the loaded model's text encoder is skipped and listed with the reason.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from webui.errors import ModelLoadError
from webui.weights import formats
from webui.weights.hashing import HashCache
from webui.weights.registry import CheckpointInfo, ModelRegistry

log = logging.getLogger(__name__)

EMBEDDING_EXTENSIONS = (".pt", ".safetensors", ".bin")


@dataclass(frozen=True)
class EmbeddingVectors:
    """One embedding's vectors: ``single`` (SD1/SD2 files: ``[n, width]``) or SDXL's ``clip_l`` and ``clip_g``."""

    single: torch.Tensor | None = None
    clip_l: torch.Tensor | None = None
    clip_g: torch.Tensor | None = None

    def for_encoders(self, widths: list[int]) -> list[torch.Tensor] | str:
        """The vectors for each text encoder (by its width), or why they do not fit."""
        if len(widths) == 2:  # SDXL: CLIP-L then OpenCLIP-G
            if self.clip_l is None or self.clip_g is None:
                return f"it has no SDXL vectors (clip_l/clip_g); this model's text encoders are {widths[0]} and {widths[1]} wide"
            chosen = [self.clip_l, self.clip_g]
        else:
            one = self.single if self.single is not None else self.clip_l  # an SDXL file's CLIP-L part fits SD1
            if one is None:
                return "it has no vectors for a single text encoder"
            chosen = [one]
        for tensor, width in zip(chosen, widths, strict=True):
            if tensor.shape[-1] != width:
                have = " and ".join(str(t.shape[-1]) for t in chosen)
                need = " and ".join(str(w) for w in widths)
                return f"its vectors are {have} wide; this model's text encoder(s) need {need}"
        return chosen


def _matrix(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach().to(torch.float32)
    return tensor.reshape(-1, tensor.shape[-1]) if tensor.ndim != 2 else tensor


def read_embedding(path: Path) -> EmbeddingVectors:
    """The vectors of an embedding file in any of the layouts users have; ``ModelLoadError`` when it has none."""
    safetensors = path.suffix == ".safetensors"
    data: Any = formats.read_state_dict(path) if safetensors else formats.read_embedding_object(path)
    if not isinstance(data, dict):
        raise ModelLoadError(path, f"holds a {type(data).__name__}, not an embedding")
    if isinstance(data.get("clip_l"), torch.Tensor) or isinstance(data.get("clip_g"), torch.Tensor):  # SDXL
        parts = {k: _matrix(data[k]) for k in ("clip_l", "clip_g") if isinstance(data.get(k), torch.Tensor)}
        return EmbeddingVectors(**parts)
    if isinstance(data.get("string_to_param"), dict):  # A1111 .pt
        params = [v for v in data["string_to_param"].values() if isinstance(v, torch.Tensor)]
        if params:
            return EmbeddingVectors(single=_matrix(params[0]))
    if isinstance(data.get("emb_params"), torch.Tensor):
        return EmbeddingVectors(single=_matrix(data["emb_params"]))
    tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
    if len(tensors) == 1:  # diffusers' {token: vectors} or another single-tensor file
        return EmbeddingVectors(single=_matrix(tensors[0]))
    raise ModelLoadError(path, "holds no embedding vectors (string_to_param, emb_params, clip_l/clip_g)")


def _pool_at_eos(encoder: Any, tokenizer: Any) -> None:
    """Make CLIP pool at the end-of-text token, not at the highest token id.

    SD's text-encoder configs carry the old ``eos_token_id: 2``, with which transformers pools the hidden state at
    ``input_ids.argmax()``: the end token, until a word added for an embedding (a higher id) appears and the
    pooled vector (SDXL's conditioning) silently comes from the wrong token. With the real id both give the same
    position for ordinary prompts, so nothing else changes.
    """
    model = getattr(encoder, "text_model", encoder)  # transformers 5: CLIPTextModel is the transformer itself
    if getattr(model, "eos_token_id", None) == 2:
        model.eos_token_id = tokenizer.eos_token_id
        encoder.config.eos_token_id = tokenizer.eos_token_id


@dataclass
class EmbeddingLibrary:
    """The embedding files, which are loaded into which tokenizer, and which were skipped and why."""

    root: Path
    cache: HashCache
    skipped: dict[str, str] = field(default_factory=dict)
    # Embeddings shipped with Easel (the demo model's), listed after the user's; a user file of the same name
    # hides one.
    builtins: Sequence[Path] = ()
    registry: ModelRegistry = field(init=False)
    _pattern: tuple[tuple[str, ...], re.Pattern[str]] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.registry = ModelRegistry(
            self.root,
            self.cache,
            EMBEDDING_EXTENSIONS,
            label="embedding",
            diffusers_folders=False,
            builtins=self.builtins,
        )

    def by_word(self) -> dict[str, CheckpointInfo]:
        """The trigger word (file name without extension, subfolders ignored) of every embedding."""
        return {Path(i.name).stem: i for i in self.registry.list()}

    def words_in(self, *texts: str) -> list[str]:
        """The embedding words the texts use, as whole words (``easynegative`` but not ``easynegatives``)."""
        words = self.by_word()
        if not words:
            return []
        key = tuple(sorted(words))
        if self._pattern is None or self._pattern[0] != key:  # one regex per list of files, not per word per job
            alternatives = "|".join(re.escape(w) for w in sorted(key, key=len, reverse=True))
            self._pattern = (key, re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])"))
        found = {m.group(0) for text in texts for m in self._pattern[1].finditer(text)}
        return [word for word in words if word in found]

    def describe(self, widths: list[int] | None) -> dict[str, dict[str, Any]]:
        """A1111's ``/sdapi/v1/embeddings``: each file as ``loaded`` (fits the model whose text-encoder widths are
        given; any, when none is loaded) or ``skipped`` with why."""
        loaded: dict[str, Any] = {}
        skipped: dict[str, Any] = {}
        for word, info in self.by_word().items():
            try:
                vectors = read_embedding(info.path)
            except ModelLoadError as exc:
                skipped[word] = {"reason": exc.reason}
                continue
            first = next(t for t in (vectors.single, vectors.clip_l, vectors.clip_g) if t is not None)
            entry = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                     "shape": int(first.shape[-1]), "vectors": int(first.shape[0])}  # fmt: skip
            fit = vectors.for_encoders(widths) if widths else []
            if isinstance(fit, str):
                skipped[word] = {**entry, "reason": fit}
            else:
                loaded[word] = entry
        return {"loaded": loaded, "skipped": skipped}

    def short_hash(self, info: CheckpointInfo) -> str:
        """A1111's ``TI hashes`` value: the file's sha256, first 12 hex characters."""
        return self.cache.compute(info.path, "sha256")[:12]

    def prepare(self, model: Any, pipe: Any, texts: list[str], notes: list[str]) -> list[tuple[str, str]]:
        """Teach the model's tokenizers the embedding words these texts use (once per model); return (word,
        short hash) of each used. One that does not fit is skipped with its reason, in ``skipped`` and ``notes``."""
        loaded: dict[str, Path] = model.embeddings
        files = self.by_word()
        used: list[tuple[str, str]] = []
        for word in self.words_in(*texts):
            info = files[word]
            if loaded.get(word) != info.path:
                reason = self._load(pipe, word, info)
                if reason is not None:
                    self.skipped[word] = reason
                    notes.append(f"embedding {word} skipped: {reason}")
                    continue
                self.skipped.pop(word, None)
                loaded[word] = info.path
            used.append((word, self.short_hash(info)))
        return used

    def _load(self, pipe: Any, word: str, info: CheckpointInfo) -> str | None:
        """Load one embedding into every text encoder of the pipeline; the reason it cannot, or None."""
        try:
            vectors = read_embedding(info.path)
        except ModelLoadError as exc:
            return exc.reason
        pairs = [(pipe.text_encoder, pipe.tokenizer)]
        if getattr(pipe, "text_encoder_2", None) is not None:
            pairs.append((pipe.text_encoder_2, pipe.tokenizer_2))
        widths = [int(encoder.get_input_embeddings().weight.shape[1]) for encoder, _ in pairs]
        chosen = vectors.for_encoders(widths)
        if isinstance(chosen, str):
            return chosen
        if word in pairs[0][1].get_vocab():
            return f"'{word}' is already a word of the tokenizer; rename the file"
        for (encoder, tokenizer), tensor in zip(pairs, chosen, strict=True):
            _pool_at_eos(encoder, tokenizer)
            pipe.load_textual_inversion(tensor, token=word, tokenizer=tokenizer, text_encoder=encoder)
        return None
