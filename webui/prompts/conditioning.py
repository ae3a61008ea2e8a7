"""Prompt text → the conditioning tensors the U-Net sees, A1111's way.

Each scheduled text (``parser.schedule``) is split into weighted pieces (``parse_attention``), tokenized per piece,
packed into 75-token chunks (``chunk_tokens``), and every chunk is encoded on its own as ``[start] + 75 + [end]``
(77 tokens, CLIP's window), so prompts of any length work; the chunks' hidden states are concatenated. Weights
multiply each token's hidden state, then the chunk is rescaled to keep its original mean (A1111's "Original"
emphasis). Padding follows A1111: end tokens, then the tokenizer's pad token after the first end token (OpenCLIP
pads with ``!``), which for a plain prompt of up to 75 tokens gives exactly diffusers' own encoding.

Prompt editing and alternation change the text during sampling; ``StepConditioning`` holds one encoding per
distinct text and says which applies at each step, for the engine's step callback to swap in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from webui.prompts.parser import chunk_tokens, parse_attention, schedule

CHUNK = 75


@dataclass
class Encoded:
    """One text's conditioning: hidden states ``[1, 77 * chunks, width]`` and, for SDXL, the pooled ``[1, P]``."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None

    @property
    def chunks(self) -> int:
        return self.embeds.shape[1] // (CHUNK + 2)


class PromptEncoder:
    """Encodes texts with a pipeline's tokenizers and text encoders (one for SD1/SD2, two for SDXL)."""

    def __init__(self, pipe: Any, sdxl: bool, clip_skip: int) -> None:
        self.pipe = pipe
        self.sdxl = sdxl
        self.clip_skip = max(1, clip_skip)
        self.pairs = [(pipe.tokenizer, pipe.text_encoder)]
        if sdxl:
            self.pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
        self._cache: dict[str, Encoded] = {}

    def encode(self, text: str, field: str = "prompt") -> Encoded:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        pieces = parse_attention(text, field)
        parts: list[torch.Tensor] = []
        pooled: torch.Tensor | None = None
        for tokenizer, encoder in self.pairs:
            chunks = self._chunks(pieces, tokenizer)
            hidden, pool = self._encode_chunks(chunks, tokenizer, encoder)
            parts.append(hidden)
            if pool is not None:
                pooled = pool
        embeds = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
        encoded = Encoded(embeds, pooled if self.sdxl else None)
        self._cache[text] = encoded
        return encoded

    def _chunks(self, pieces: list[tuple[str, float]], tokenizer: Any) -> list[list[tuple[int, float]]]:
        def tokenize(text: str) -> list[int]:
            # Multi-vector embeddings are several tokens (``word word_1 ...``): diffusers' own conversion.
            text = self.pipe.maybe_convert_prompt(text, tokenizer)
            return tokenizer(text, add_special_tokens=False, truncation=False).input_ids

        comma = tokenizer.convert_tokens_to_ids(",</w>")
        comma_token = comma if isinstance(comma, int) and comma != tokenizer.unk_token_id else None
        return chunk_tokens(pieces, tokenize, CHUNK, comma_token, pad_token=tokenizer.eos_token_id)

    def _encode_chunks(
        self, chunks: list[list[tuple[int, float]]], tokenizer: Any, encoder: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # Where the encoder runs, which with offload hooks is not where its parameters sit (CPU or meta).
        device = self.pipe._execution_device
        start, end, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
        hidden_parts: list[torch.Tensor] = []
        pooled: torch.Tensor | None = None
        for chunk in chunks:
            ids = [start, *(t for t, _ in chunk), end]
            weights = [1.0, *(w for _, w in chunk), 1.0]
            if pad != end:  # OpenCLIP: after the first end token, the pad token (A1111 and diffusers agree)
                first_end = ids.index(end, 1)
                ids = ids[: first_end + 1] + [pad] * (len(ids) - first_end - 1)
            tokens = torch.tensor([ids], device=device)
            out = encoder(tokens, output_hidden_states=True)
            hidden = self._layer(out, encoder)
            if any(w != 1.0 for w in weights):
                scale = torch.tensor(weights, device=device, dtype=hidden.dtype)[None, :, None]
                original_mean = hidden.mean()
                hidden = hidden * scale
                hidden = hidden * (original_mean / hidden.mean())
            hidden_parts.append(hidden)
            if pooled is None and hasattr(out, "text_embeds"):
                pooled = out.text_embeds  # SDXL's pooled vector comes from the first chunk, as in A1111
        return torch.cat(hidden_parts, dim=1), pooled

    def _layer(self, out: Any, encoder: Any) -> torch.Tensor:
        """The hidden state A1111 takes: SD1/SD2 the last layer (or ``-clip_skip`` then the final norm); SDXL
        the penultimate (``-(clip_skip + 1)``), without the final norm, as diffusers' SDXL pipelines do."""
        if self.sdxl:
            return out.hidden_states[-(self.clip_skip + 1)]
        if self.clip_skip <= 1:
            return out.last_hidden_state
        final_norm = getattr(encoder, "text_model", encoder).final_layer_norm
        return final_norm(out.hidden_states[-self.clip_skip])


def pad_to(encoded: Encoded, chunks: int, empty: Encoded) -> torch.Tensor:
    """The hidden states padded with empty-prompt chunks to ``chunks`` chunks (the positive and negative
    conditioning must have the same length for classifier-free guidance; A1111 pads the same way)."""
    missing = chunks - encoded.chunks
    if missing <= 0:
        return encoded.embeds
    return torch.cat([encoded.embeds, empty.embeds.repeat(1, missing, 1)], dim=1)


@dataclass
class StepConditioning:
    """Every distinct (positive, negative) conditioning of a job and the step ranges they cover."""

    ranges: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]]
    # (last step it applies to, positive embeds, negative embeds, positive pooled, negative pooled)

    def at(self, step: int) -> int:
        """Index into ``ranges`` for a 1-based step."""
        for index, (end, *_rest) in enumerate(self.ranges):
            if step <= end:
                return index
        return len(self.ranges) - 1

    @property
    def changes(self) -> bool:
        return len(self.ranges) > 1


def build_conditioning(encoder: PromptEncoder, prompt: str, negative: str, steps: int, count: int) -> StepConditioning:
    """Encode both prompts' schedules for ``steps`` denoising steps, batched ``count`` times."""
    positive = schedule(prompt, steps, "prompt")
    negative_schedule = schedule(negative, steps, "negative_prompt")
    ends = sorted({end for end, _ in positive} | {end for end, _ in negative_schedule})
    empty = encoder.encode("")

    def text_at(items: list[tuple[int, str]], step: int) -> str:
        return next((text for end, text in items if step <= end), items[-1][1])

    ranges = []
    for end in ends:
        pos = encoder.encode(text_at(positive, end), "prompt")
        neg = encoder.encode(text_at(negative_schedule, end), "negative_prompt")
        chunks = max(pos.chunks, neg.chunks)
        pos_embeds = pad_to(pos, chunks, empty).repeat(count, 1, 1)
        neg_embeds = pad_to(neg, chunks, empty).repeat(count, 1, 1)
        pos_pooled = pos.pooled.repeat(count, 1) if pos.pooled is not None else None
        neg_pooled = neg.pooled.repeat(count, 1) if neg.pooled is not None else None
        ranges.append((end, pos_embeds, neg_embeds, pos_pooled, neg_pooled))
    # Conditioning of different lengths cannot be swapped mid-run: pad every range to the longest.
    longest = max(r[1].shape[1] for r in ranges)
    empty_chunk = empty.embeds.repeat(count, 1, 1)
    padded = []
    for end, pos_e, neg_e, pos_p, neg_p in ranges:
        while pos_e.shape[1] < longest:
            pos_e = torch.cat([pos_e, empty_chunk], dim=1)
            neg_e = torch.cat([neg_e, empty_chunk], dim=1)
        padded.append((end, pos_e, neg_e, pos_p, neg_p))
    return StepConditioning(padded)
