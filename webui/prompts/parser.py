"""A1111 prompt syntax without torch: extra-network tags, prompt editing, attention weights and 75-token chunks.

Prompts copied from model sites are written for AUTOMATIC1111's parser, so this module follows its behaviour,
quirks included (the tests name each one), rather than a tidier grammar of its own. The order is A1111's:

1. ``extract_networks`` removes ``<lora:NAME:WEIGHT>``-style tags from the whole text;
2. ``schedule`` expands prompt editing (``[from:to:when]``, ``[to:when]``, ``[from::when]``, ``[a|b]``) into
   one text per range of steps;
3. ``parse_attention`` turns each of those texts into ``(text, weight)`` pieces;
4. ``chunk_tokens`` packs the tokenized pieces into chunks of 75 tokens for the text encoder.

Every step is linear in the prompt's length (or bounded by a named limit) and iterative, so a 100,000-character
or deeply nested prompt costs little and never reaches Python's recursion limit. Every error is an
``InvalidRequest`` naming the prompt field, with a message that says what was expected.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from webui.errors import InvalidRequest

__all__ = [
    "BREAK",
    "MAX_BRACKET_DEPTH",
    "MAX_SCHEDULE_CHARS",
    "MAX_SCHEDULE_STEPS",
    "MAX_SCHEDULE_WORK",
    "ExtraNetwork",
    "ParsedPrompt",
    "chunk_tokens",
    "extract_networks",
    "parse_attention",
    "parse_prompt",
    "schedule",
]

BREAK = "BREAK"
"""The word that ends a 75-token chunk early; ``parse_attention`` returns it as the piece ``("BREAK", -1.0)``."""

MAX_BRACKET_DEPTH = 100
"""Most ``(``/``[`` brackets open at once in ``parse_attention``. Weights multiply per level, so even 100 levels
give absurd weights (1.1**100 is about 13,800), and the cap keeps the weighting pass linear in the text."""

MAX_SCHEDULE_STEPS = 10_000
"""Largest step count ``schedule`` accepts; the server's own limit (150) is far below it."""

MAX_SCHEDULE_WORK = 2_000_000
"""Bound on prompt-editing work: the number of schedule texts times the number of parts each is assembled from.
A prompt with thousands of ``[a|b]`` at 150 steps goes past it and is refused instead of taking seconds."""

MAX_SCHEDULE_CHARS = 32_000_000
"""Bound on the total length of the schedule texts (about 150 steps of a 100,000-character prompt fit)."""

_QUOTE_LIMIT = 80


def _quote(fragment: str) -> str:
    """The user's own text, shortened so a 100,000-character tag cannot flood an error message."""
    if len(fragment) > _QUOTE_LIMIT:
        fragment = fragment[: _QUOTE_LIMIT - 3] + "..."
    return f"'{fragment}'"


# -- 1. extra networks ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtraNetwork:
    """One extra-network tag such as ``<lora:NAME:TE_WEIGHT:UNET_WEIGHT>``.

    ``unet_weight`` equals ``te_weight`` unless the tag gives a second weight (or ``unet=``), as A1111's LoRA
    code does. ``extra_args`` keeps anything after the two weights (A1111's ``dyn=`` rank, extension
    arguments) untouched for the network's own code to read.
    """

    kind: str
    name: str
    te_weight: float = 1.0
    unet_weight: float = 1.0
    extra_args: tuple[str, ...] = ()


# A1111 matches <(\w+):([^>]+)>; refusing '<' inside the arguments keeps '<lora:a <lora:b:1>' from becoming a
# network named 'a <lora', and '*' (not '+') lets '<lora:>' reach the malformed-tag error instead of the prompt.
_NETWORK_TAG = re.compile(r"<(\w+):([^<>]*)>")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NAMED_WEIGHTS = ("te", "unet")


def extract_networks(text: str, field: str = "prompt") -> tuple[str, list[ExtraNetwork]]:
    """Remove every ``<KIND:NAME[:ARGS...]>`` tag from ``text``; return the remaining text and the tags in order.

    Tags are replaced by nothing (A1111 leaves the surrounding spaces alone, and so do we, since a tokenizer
    ignores repeated spaces). Any ``\\w+`` kind is taken, known or not: the caller decides what it can apply.
    """
    networks: list[ExtraNetwork] = []

    def take(match: re.Match[str]) -> str:
        networks.append(_network_from_tag(match[0], match[1], match[2], field))
        return ""

    return _NETWORK_TAG.sub(take, text), networks


def _network_from_tag(tag: str, kind: str, body: str, field: str) -> ExtraNetwork:
    """Read ``NAME[:TE][:UNET][:MORE...]`` with A1111's rules; named ``te=``/``unet=`` override positions."""
    usage = f"expected <{kind}:NAME>, <{kind}:NAME:WEIGHT> or <{kind}:NAME:TE_WEIGHT:UNET_WEIGHT>"
    name, *args = body.split(":")
    name = name.strip()
    if not name:
        raise InvalidRequest(field, f"{_quote(tag)} has no name; {usage}")
    positional: list[str] = []
    named: dict[str, str] = {}
    extra: list[str] = []
    for arg in args:
        key, equals, value = arg.partition("=")
        if equals and key.strip() in _NAMED_WEIGHTS:
            named[key.strip()] = value
        elif equals or len(positional) == 2:
            extra.append(arg)
        else:
            positional.append(arg)
    te_weight = _tag_weight(positional[0], tag, usage, field) if positional else 1.0
    if "te" in named:
        te_weight = _tag_weight(named["te"], tag, usage, field)
    unet_weight = _tag_weight(positional[1], tag, usage, field) if len(positional) > 1 else te_weight
    if "unet" in named:
        unet_weight = _tag_weight(named["unet"], tag, usage, field)
    return ExtraNetwork(kind, name, te_weight, unet_weight, tuple(extra))


def _tag_weight(raw: str, tag: str, usage: str, field: str) -> float:
    """A tag's weight: a plain decimal number (negative allowed), never ``inf``/``nan`` or an empty string."""
    text = raw.strip()
    if not _NUMBER.fullmatch(text):
        shown = f"weight {_quote(text)} is not a number" if text else "weight is empty"
        raise InvalidRequest(field, f"{_quote(tag)}: {shown}; {usage}")
    value = float(text)
    if not math.isfinite(value):
        raise InvalidRequest(field, f"{_quote(tag)}: weight {_quote(text)} is too large; {usage}")
    return value


# -- 2. prompt editing (scheduling) -----------------------------------------------------------------------------
#
# A1111 parses prompt editing with a Lark grammar in which a construct's inside must be well formed (brackets
# balanced, ':' and '|' only where the construct allows them) while stray brackets and ':' are allowed at the
# top level only. A '|' outside any construct, or a lone '\' at the end, makes its parse fail, and then the
# text is used unchanged at every step. We find the same constructs in one left-to-right pass with a stack of
# open brackets (pass 1), then build a small tree of the dynamic constructs only (pass 2): emphasis brackets
# are copied through as text, exactly as A1111's transformer reproduces them.
#
# One deliberate difference: A1111's Earley parser is ambiguous where stray brackets follow a construct
# directly ('[a:3]]:'), and then it usually reads the construct as plain text; we always keep a well-formed
# construct. Compared with Lark on thousands of random prompts, these are the only cases that differ.

_SCHEDULE_SPECIAL = re.compile(r"\\(.)?|[\[\]():|]")  # no re.S: A1111's grammar has no escape for a newline
_WHEN = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*")
_CLOSER_OF = {"(": ")", "[": "]"}


@dataclass
class _Frame:
    """An open bracket during pass 1: where it is and the ':'/'|' found directly inside it."""

    opener: str
    start: int
    separators: list[int] = dataclasses.field(default_factory=list)
    pipes: int = 0


@dataclass(frozen=True)
class _Construct:
    """A well-formed ``[from:to:when]`` (kind "scheduled") or ``[a|b]`` (kind "alternate") found by pass 1."""

    kind: str
    start: int
    end: int
    separators: tuple[int, ...]


@dataclass
class _Scheduled:
    """``[before:after:when]``; ``before`` is None for ``[after:when]``; ``when`` is the last step of ``before``."""

    before: list[_Part] | None
    after: list[_Part]
    when: int


@dataclass
class _Alternate:
    """``[a|b|c]``: option ``(step - 1) % len(options)`` at each step."""

    options: list[list[_Part]]


_Part = str | _Scheduled | _Alternate


def _construct_kind(frame: _Frame, closer: str, end: int, text: str) -> str | None:
    """What the bracket pair ``frame``..``end`` forms: "emphasis", "scheduled", "alternate", or None (malformed)."""
    if closer != _CLOSER_OF[frame.opener]:
        return None
    count = len(frame.separators)
    if frame.opener == "(":
        return "emphasis" if frame.pipes == 0 and count <= 1 else None
    if count == 0:
        return "emphasis"
    if frame.pipes == count:
        return "alternate"
    if frame.pipes == 0 and count <= 2 and _WHEN.fullmatch(text, frame.separators[-1] + 1, end):
        return "scheduled"
    return None


def _find_constructs(text: str) -> list[_Construct] | None:
    """Pass 1: the dynamic constructs of ``text`` in closing order, or None where A1111's parse would fail.

    A closing bracket that does not complete the innermost open bracket cannot belong to any construct, so it
    is a top-level stray, and so is every bracket still open around it: they all become plain text at once.
    Each bracket is pushed and dropped once, so the pass is linear.
    """
    frames: list[_Frame] = []
    found: list[_Construct] = []
    for match in _SCHEDULE_SPECIAL.finditer(text):
        char, position = match[0], match.start()
        if char[0] == "\\":
            if match[1] is None:  # a lone backslash at the end (or before a newline) matches nothing
                return None
        elif char in "([":
            frames.append(_Frame(char, position))
        elif char in ":|":
            if frames:
                frames[-1].separators.append(position)
                frames[-1].pipes += char == "|"
            elif char == "|":
                return None
        else:
            kind = _construct_kind(frames[-1], char, position, text) if frames else None
            if kind is None:
                if any(frame.pipes for frame in frames):
                    return None
                frames.clear()
                continue
            frame = frames.pop()
            if kind != "emphasis":
                found.append(_Construct(kind, frame.start, position, tuple(frame.separators)))
    if any(frame.pipes for frame in frames):
        return None
    return found


def _when_step(raw: str, steps: int) -> int:
    """The last step of a ``[from:to:when]``'s first part, clamped to 0..steps, with A1111's (1.6+) rules.

    A number written with a '.' is a fraction of the steps and any other is a step number; the product is
    truncated (``0.29`` of 100 steps is 28, since 0.29*100 is 28.999...). Below 1 the first part is never used.
    """
    number = raw.strip()
    value = float(number) * steps if "." in number else float(number)
    if value >= steps:
        return steps
    return int(value) if value >= 1 else 0


def _build_tree(text: str, constructs: list[_Construct], steps: int) -> list[_Part]:
    """Pass 2: the text as parts, where only prompt-editing constructs are nodes; everything else stays text."""
    events: list[tuple[int, int, _Construct]] = []
    for construct in constructs:
        events.append((construct.start, 0, construct))
        events.extend((position, 1, construct) for position in construct.separators)
        events.append((construct.end, 2, construct))
    events.sort(key=lambda event: event[0])

    root: list[_Part] = []
    open_segments: list[list[list[_Part]]] = []  # per open construct, its segments so far
    current, cursor = root, 0
    for position, what, construct in events:
        raw = text[cursor:position]
        cursor = position + 1
        if what == 0:
            if raw:
                current.append(raw)
            open_segments.append([[]])
        elif what == 1:
            if raw:
                current.append(raw)
            open_segments[-1].append([])
        else:
            segments = open_segments.pop()
            node = _close_node(construct.kind, segments, raw, steps)
            current = open_segments[-1][-1] if open_segments else root
            current.append(node)
            continue
        current = open_segments[-1][-1]
    if cursor < len(text):
        root.append(text[cursor:])
    return root


def _close_node(kind: str, segments: list[list[_Part]], last_raw: str, steps: int) -> _Part:
    """The node for a construct whose segments are complete; ``last_raw`` is the text before its ']'."""
    if kind == "alternate":
        if last_raw:
            segments[-1].append(last_raw)
        return _Alternate(segments)
    when = _when_step(last_raw, steps)
    if len(segments) == 3:
        return _Scheduled(segments[0], segments[1], when)
    return _Scheduled(None, segments[0], when)


def _walk(root: list[_Part]) -> Iterator[_Part]:
    """Every part of the tree, in all branches, without recursion."""
    pending = [root]
    while pending:
        for part in pending.pop():
            yield part
            if isinstance(part, _Scheduled):
                pending.append(part.after)
                if part.before:
                    pending.append(part.before)
            elif isinstance(part, _Alternate):
                pending.extend(part.options)


def _text_at(root: list[_Part], step: int) -> str:
    """The prompt as it reads at ``step`` (1-based), assembled without recursion."""
    pieces: list[str] = []
    stack: list[Iterator[_Part]] = [iter(root)]
    while stack:
        part = next(stack[-1], None)
        if part is None:
            stack.pop()
        elif isinstance(part, str):
            pieces.append(part)
        elif isinstance(part, _Scheduled):
            chosen = part.before if step <= part.when else part.after
            if chosen:
                stack.append(iter(chosen))
        else:
            stack.append(iter(part.options[(step - 1) % len(part.options)]))
    return "".join(pieces)


def _boundaries(root: list[_Part], steps: int) -> tuple[list[int], int]:
    """The steps after which the text may change (A1111's list, ``steps`` always included) and the part count."""
    ends = {steps}
    count = 0
    for part in _walk(root):
        count += 1
        if isinstance(part, _Alternate):
            ends.update(range(1, steps + 1))
        elif isinstance(part, _Scheduled) and part.when >= 1:
            ends.add(part.when)
    return sorted(ends), count


def _check_schedule_size(ends: list[int], parts: int, length: int, field: str) -> None:
    """Refuse a schedule whose assembly would take seconds or hundreds of megabytes."""
    if len(ends) * parts > MAX_SCHEDULE_WORK or len(ends) * length > MAX_SCHEDULE_CHARS:
        raise InvalidRequest(
            field,
            f"prompt editing is too large: {len(ends)} versions of a prompt made of {parts} parts "
            f"({length} characters); use fewer [a|b] or [from:to:when] parts, a shorter prompt or fewer steps",
        )


def schedule(text: str, steps: int, field: str = "prompt") -> list[tuple[int, str]]:
    """Expand prompt editing into ``[(last_step, text), ...]``, steps counted 1..steps, ``last_step`` rising.

    Like A1111's ``get_learned_conditioning_prompt_schedules`` for one prompt: ``[from:to:when]`` uses
    ``from`` up to step ``when`` and ``to`` after it, ``[to:when]`` adds, ``[from::when]`` removes, ``[a|b]``
    alternates every step, and constructs nest. Unlike A1111, consecutive steps with the same text are merged
    into one entry (A1111 lists them separately but encodes the same conditioning for them).
    """
    if not 1 <= steps <= MAX_SCHEDULE_STEPS:
        raise InvalidRequest("steps", f"must be between 1 and {MAX_SCHEDULE_STEPS} to schedule a prompt, got {steps}")
    constructs = _find_constructs(text)
    if not constructs:
        return [(steps, text)]
    root = _build_tree(text, constructs, steps)
    ends, parts = _boundaries(root, steps)
    _check_schedule_size(ends, parts, len(text), field)
    result: list[tuple[int, str]] = []
    for end in ends:
        version = _text_at(root, end)
        if result and result[-1][1] == version:
            result[-1] = (end, version)
        else:
            result.append((end, version))
    return result


# -- 3. attention / emphasis -----------------------------------------------------------------------------------

# The alternatives in A1111's order of preference: escapes, brackets, a ':WEIGHT)' close, plain runs, a lone ':'.
_ATTENTION_TOKEN = re.compile(
    r"""
    \\(?P<escaped>[()\[\]\\])?         # \( \) \[ \] \\ are literal; any other backslash is dropped (A1111)
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)  # (text:1.3) closes with an explicit weight
    | (?P<bracket>[()\[\]])
    | (?P<plain>[^\\()\[\]:]+|:)
    """,
    re.X,
)
_BREAK_WORD = re.compile(r"\bBREAK\b")
_ROUND = 1.1
_SQUARE = 1 / 1.1


class _Pieces:
    """``(text, weight)`` pieces under construction, with A1111's range multiplication.

    Text added with no bracket event in between is bound to end with the same weight, so it joins the last
    piece at once (as A1111's final merge would join it); only bracket events and BREAK start new pieces. That
    keeps the number of pieces, and with ``MAX_BRACKET_DEPTH`` the multiplication work, linear.
    """

    def __init__(self) -> None:
        self.texts: list[list[str]] = []
        self.weights: list[float] = []
        self.is_break: list[bool] = []
        self.start_new = True

    def add_text(self, text: str) -> None:
        if self.start_new:
            self.texts.append([text])
            self.weights.append(1.0)
            self.is_break.append(False)
            self.start_new = False
        else:
            self.texts[-1].append(text)

    def add_break(self) -> None:
        self.texts.append([BREAK])
        self.weights.append(-1.0)
        self.is_break.append(True)
        self.start_new = True

    def multiply(self, start: int, factor: float) -> None:
        """Multiply every piece from ``start`` on (BREAK markers keep -1), as A1111's ``multiply_range``."""
        tail = zip(self.weights[start:], self.is_break[start:], strict=True)
        self.weights[start:] = [weight if is_break else weight * factor for weight, is_break in tail]
        self.start_new = True

    def result(self, field: str) -> list[tuple[str, float]]:
        """Join adjacent text pieces of equal weight (never a BREAK); ``[("", 1.0)]`` when there is nothing."""
        merged: list[tuple[str, float]] = []
        joinable = False  # the last merged piece is text, not a BREAK
        for texts, weight, is_break in zip(self.texts, self.weights, self.is_break, strict=True):
            if not math.isfinite(weight):
                raise InvalidRequest(field, "emphasis weights multiply to infinity; use smaller weights")
            text = "".join(texts)
            if joinable and not is_break and merged[-1][1] == weight:
                merged[-1] = (merged[-1][0] + text, weight)
            else:
                merged.append((text, weight))
            joinable = not is_break
        return merged or [("", 1.0)]


def _split_on_break(run: str) -> list[str]:
    """``run`` split at each word ``BREAK``, eating the whitespace around it (A1111's ``\\s*\\bBREAK\\b\\s*``).

    Written as a scan instead of that regex, whose leading ``\\s*`` is quadratic on long runs of spaces.
    """
    if BREAK not in run:
        return [run]
    parts: list[str] = []
    cut = 0
    for match in _BREAK_WORD.finditer(run):
        start, end = match.start(), match.end()
        while start > cut and run[start - 1].isspace():
            start -= 1
        parts.append(run[cut:start])
        while end < len(run) and run[end].isspace():
            end += 1
        cut = end
    parts.append(run[cut:])
    return parts


def _add_plain(pieces: _Pieces, run: str) -> None:
    for index, part in enumerate(_split_on_break(run)):
        if index:
            pieces.add_break()
        pieces.add_text(part)


def _explicit_weight(raw: str, position: int, field: str) -> float:
    """The number in ``(text:WEIGHT)``; A1111 crashes on ``1.2.3``, we say what is wrong."""
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(field, f"emphasis weight {_quote(raw)} at character {position} is not a number") from None
    if not math.isfinite(value):
        raise InvalidRequest(field, f"emphasis weight {_quote(raw)} at character {position} is too large")
    return value


def _open_bracket(stack: list[int], depth: int, pieces: _Pieces, position: int, field: str) -> None:
    if depth >= MAX_BRACKET_DEPTH:
        raise InvalidRequest(
            field,
            f"more than {MAX_BRACKET_DEPTH} brackets are open at once (character {position}); "
            "close some, or write \\( and \\[ for literal brackets",
        )
    stack.append(len(pieces.weights))
    pieces.start_new = True


def parse_attention(text: str, field: str = "prompt") -> list[tuple[str, float]]:
    """Split one (already scheduled) prompt text into ``(text, weight)`` pieces, as A1111's
    ``parse_prompt_attention``.

    ``(x)`` multiplies by 1.1, ``(x:1.3)`` by 1.3, ``[x]`` by 1/1.1, nesting multiplies; ``\\(`` ``\\)``
    ``\\[`` ``\\]`` ``\\\\`` are literal and any other backslash is dropped; a ``)`` or ``]`` with nothing to
    close is literal text; brackets still open at the end apply to the rest of the text (round ones first,
    outermost first); the word BREAK becomes the piece ``("BREAK", -1.0)``; adjacent pieces of equal weight are
    joined. Unlike A1111, a BREAK inside brackets stays a BREAK (A1111 multiplies its -1 marker, so it turns
    into the literal word with a negative weight).
    """
    pieces = _Pieces()
    round_open: list[int] = []
    square_open: list[int] = []
    for match in _ATTENTION_TOKEN.finditer(text):
        token = match[0]
        depth = len(round_open) + len(square_open)
        if token[0] == "\\":
            pieces.add_text(match["escaped"] or "")
        elif token == "(":
            _open_bracket(round_open, depth, pieces, match.start(), field)
        elif token == "[":
            _open_bracket(square_open, depth, pieces, match.start(), field)
        elif match["weight"] is not None and round_open:
            pieces.multiply(round_open.pop(), _explicit_weight(match["weight"], match.start(), field))
        elif token == ")" and round_open:
            pieces.multiply(round_open.pop(), _ROUND)
        elif token == "]" and square_open:
            pieces.multiply(square_open.pop(), _SQUARE)
        else:
            _add_plain(pieces, token)
    for start in round_open:
        pieces.multiply(start, _ROUND)
    for start in square_open:
        pieces.multiply(start, _SQUARE)
    return pieces.result(field)


# -- 4. chunks of 75 tokens ------------------------------------------------------------------------------------


class _Chunker:
    """Fills fixed-size chunks token by token with A1111's BREAK and comma-backtrack rules."""

    def __init__(self, chunk_size: int, comma_token: int | None, comma_backtrack: int, pad_token: int) -> None:
        self.size = chunk_size
        self.comma_token = comma_token
        self.backtrack = comma_backtrack
        self.pad_token = pad_token
        self.chunks: list[list[tuple[int, float]]] = []
        self.current: list[tuple[int, float]] = []
        self.last_comma = -1

    def close(self) -> None:
        """Pad the current chunk to full size and start an empty one (even when it is empty: BREAK does that)."""
        self.current.extend([(self.pad_token, 1.0)] * (self.size - len(self.current)))
        self.chunks.append(self.current)
        self.current = []
        self.last_comma = -1

    def add(self, token: int, weight: float) -> None:
        if token == self.comma_token:
            self.last_comma = len(self.current)
        elif self._backtrack_applies():
            moved = self.current[self.last_comma + 1 :]
            del self.current[self.last_comma + 1 :]
            self.close()
            self.current = moved
        if len(self.current) == self.size:
            self.close()
        self.current.append((token, weight))

    def _backtrack_applies(self) -> bool:
        return (
            self.backtrack > 0
            and len(self.current) == self.size
            and self.last_comma >= 0
            and len(self.current) - self.last_comma <= self.backtrack
        )

    def finish(self) -> list[list[tuple[int, float]]]:
        if self.current or not self.chunks:
            self.close()
        return self.chunks


def chunk_tokens(
    pieces: Sequence[tuple[str, float]],
    tokenize: Callable[[str], list[int]],
    chunk_size: int = 75,
    comma_token: int | None = None,
    comma_backtrack: int = 20,
    *,
    pad_token: int,
) -> list[list[tuple[int, float]]]:
    """Pack ``parse_attention`` pieces into chunks of exactly ``chunk_size`` ``(token_id, weight)`` pairs.

    ``tokenize(text)`` returns a piece's token ids without start/end tokens (the encoder adds those around each
    chunk: 1 + 75 + 1 = CLIP's 77). Each piece is tokenized on its own, as A1111 does, and every token carries
    its piece's weight. The rules, in A1111's order, for each token:

    1. A piece ``("BREAK", -1)`` closes the current chunk, even an empty one, so ``"BREAK a"`` gives one chunk
       of padding and then ``a``'s chunk; a BREAK at the very end adds nothing.
    2. A comma token (``comma_token``) records its position in the current chunk.
    3. Otherwise, when the chunk is full and its last comma is at most ``comma_backtrack`` tokens from the end,
       the tokens after that comma move to the next chunk, so the words after the comma stay together
       (0 turns this off; so does ``comma_token=None``). A comma arriving at a full chunk is not recorded for
       the next one (A1111 resets its mark when it starts the chunk).
    4. A full chunk is closed and the token starts the next one.

    Closing pads a chunk with ``(pad_token, 1.0)`` (A1111 pads with CLIP's end token, 49407). At the end the
    last chunk is closed if it has tokens, and an empty prompt still gives one chunk of padding. Textual
    inversion embeddings are not handled here: their tokens arrive through ``tokenize`` like any other.
    """
    if chunk_size < 1 or comma_backtrack < 0:
        raise ValueError("chunk_size must be at least 1 and comma_backtrack at least 0")
    chunker = _Chunker(chunk_size, comma_token, comma_backtrack, pad_token)
    for text, weight in pieces:
        if text == BREAK and weight == -1:
            chunker.close()
        elif text:
            for token in tokenize(text):
                chunker.add(token, weight)
    return chunker.finish()


# -- 5. the whole prompt ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt ready for encoding: its extra networks, and its text per range of steps (networks removed)."""

    text: str
    networks: tuple[ExtraNetwork, ...]
    schedule: tuple[tuple[int, str], ...]


def parse_prompt(text: str, steps: int, field: str = "prompt") -> ParsedPrompt:
    """Extract the extra networks, then schedule what is left, A1111's order (so a tag inside ``[a:b:5]``
    applies for all steps). The attention syntax of the remaining text is checked once here, so a malformed
    weight or absurd nesting is refused when the request arrives instead of failing the job later; the weights
    themselves are computed per schedule text by ``parse_attention`` when the prompt is encoded.
    """
    remaining, networks = extract_networks(text, field)
    parse_attention(remaining, field)
    return ParsedPrompt(remaining, tuple(networks), tuple(schedule(remaining, steps, field)))
