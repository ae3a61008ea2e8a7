"""A1111 prompt syntax (webui/prompts/parser.py): extra networks, prompt editing, attention, 75-token chunks.

Expected values follow A1111's documented behaviour (wiki "Features": Attention/emphasis, Prompt editing,
Alternating words, BREAK) and the doctests in its ``modules/prompt_parser.py``; where A1111 surprises, or
where Easel deliberately differs, the case says so.
"""

from __future__ import annotations

import re

import pytest

from webui.errors import InvalidRequest
from webui.prompts.parser import (
    BREAK,
    MAX_BRACKET_DEPTH,
    MAX_SCHEDULE_STEPS,
    ExtraNetwork,
    chunk_tokens,
    extract_networks,
    parse_attention,
    parse_prompt,
    schedule,
)

R = 1.1  # one level of ( )
S = 1 / 1.1  # one level of [ ], as A1111 multiplies (not divides)


def _assert_pieces(actual: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    assert [text for text, _ in actual] == [text for text, _ in expected]
    assert [weight for _, weight in actual] == pytest.approx([weight for _, weight in expected], rel=1e-12)


# -- attention / emphasis --------------------------------------------------------------------------------------

ATTENTION_CASES = [
    # plain text and the empty prompt
    ("normal text", [("normal text", 1.0)]),
    ("", [("", 1.0)]),
    ("()", [("", 1.0)]),
    # round brackets: x1.1 per level
    ("an (important) word", [("an ", 1.0), ("important", R), (" word", 1.0)]),
    ("((word))", [("word", R * R)]),
    ("(((word)))", [("word", R * R * R)]),
    # explicit weights, with spaces, signs and leading dots; nesting multiplies
    ("(word:1.3)", [("word", 1.3)]),
    ("(word: 1.3 )", [("word", 1.3)]),
    ("(word:0.5)", [("word", 0.5)]),
    ("(word:.5)", [("word", 0.5)]),
    ("(word:+2)", [("word", 2.0)]),
    ("(word:-1)", [("word", -1.0)]),  # a negative weight is accepted as written
    ("((word:1.5))", [("word", 1.5 * R)]),
    ("a (:1.5) b", [("a  b", 1.0)]),  # a weight with nothing inside applies to nothing
    # square brackets: /1.1 per level; they cancel round ones
    ("[word]", [("word", S)]),
    ("[[word]]", [("word", S * S)]),
    ("([word])", [("word", 1.0)]),
    # A1111's doctest, unclosed first '(' included
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.3 * R * R),
            (" ", R),
            ("on", 1.0),
            (" a ", R),
            ("hill", 0.55),
            (", sun, ", R),
            ("sky", R * R * R * R),
            (".", R),
        ],
    ),
    # adjacent equal weights are merged, whatever brackets made them
    ("(unnecessary)(parens)", [("unnecessaryparens", R)]),
    ("(a) (b)", [("a", R), (" ", 1.0), ("b", R)]),
    ("(a:1.1)(b)", [("ab", R)]),
    # unbalanced: openers still open at the end apply to the rest; closers with nothing open are text
    ("(unbalanced", [("unbalanced", R)]),
    ("[unbalanced", [("unbalanced", S)]),
    ("a (b [c d", [("a ", 1.0), ("b ", R), ("c d", 1.0)]),
    ("unbalanced)", [("unbalanced)", 1.0)]),
    ("unbalanced]", [("unbalanced]", 1.0)]),
    ("a) (b", [("a) ", 1.0), ("b", R)]),
    ("(a:1.2", [("a:1.2", R)]),  # no ')' after the weight: it is text, and the '(' closes at the end
    ("a:1.2)", [("a:1.2)", 1.0)]),  # no '(' open: the whole ':1.2)' is text
    # round and square brackets are separate stacks, so they may cross
    ("(a [b) c]", [("a ", R), ("b", 1.0), (" c", S)]),
    # escapes
    (r"\(literal\]", [("(literal]", 1.0)]),
    (r"(a\)b)", [("a)b", R)]),
    (r"\\", [("\\", 1.0)]),
    (r"\[x\] (y)", [("[x] ", 1.0), ("y", R)]),
    # Surprising A1111 rule: a backslash before anything but ( ) [ ] \ is dropped.
    (r"a\b", [("ab", 1.0)]),
    # BREAK: uppercase, as its own word, whitespace around it eaten
    ("a BREAK b", [("a", 1.0), (BREAK, -1.0), ("b", 1.0)]),
    ("a, BREAK, b", [("a,", 1.0), (BREAK, -1.0), (", b", 1.0)]),
    ("BREAK", [("", 1.0), (BREAK, -1.0), ("", 1.0)]),
    ("a BREAK BREAK b", [("a", 1.0), (BREAK, -1.0), ("", 1.0), (BREAK, -1.0), ("b", 1.0)]),
    ("a break b", [("a break b", 1.0)]),
    ("BREAKS xBREAK BREAK_", [("BREAKS xBREAK BREAK_", 1.0)]),
    # Deliberate difference: A1111 multiplies BREAK's -1 marker inside brackets (giving ("BREAK", -1.1), which
    # its tokenizer then encodes as the word "break" with a negative weight); Easel keeps it a BREAK.
    ("(a BREAK b)", [("a", R), (BREAK, -1.0), ("b", R)]),
    ("(a BREAK b:-1)", [("a", -1.0), (BREAK, -1.0), ("b", -1.0)]),  # never merged into its neighbours
]


@pytest.mark.parametrize(("text", "expected"), ATTENTION_CASES)
def test_attention(text: str, expected: list[tuple[str, float]]) -> None:
    _assert_pieces(parse_attention(text), expected)


def test_attention_weights_are_bit_identical_to_a1111_doctest() -> None:
    pieces = dict(parse_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."))
    assert pieces["house"] == 1.5730000000000004
    assert pieces["sky"] == 1.4641000000000006


ATTENTION_ERRORS = [
    ("(a:1.2.3)", "'1.2.3'"),  # A1111 raises a bare ValueError here
    ("(a:.)", "'.'"),
    ("(a:" + "9" * 400 + ")", "too large"),
    ("((((a:1e300)):1e300))".replace("1e300", "1" + "0" * 300), "infinity"),
    ("(" * (MAX_BRACKET_DEPTH + 1) + "a", f"more than {MAX_BRACKET_DEPTH} brackets"),
]


@pytest.mark.parametrize(("text", "fragment"), ATTENTION_ERRORS)
@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_attention_errors_name_the_field(text: str, fragment: str, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_attention(text, field)
    assert caught.value.field == field
    assert fragment in str(caught.value)


def test_attention_accepts_exactly_the_bracket_limit() -> None:
    (piece,) = parse_attention("(" * MAX_BRACKET_DEPTH + "a")
    assert piece[0] == "a"
    assert piece[1] == pytest.approx(R**MAX_BRACKET_DEPTH)


# -- prompt editing (scheduling) -------------------------------------------------------------------------------

# (text, steps, expected). Steps are counted 1..steps; each entry is (last step it applies to, text).
SCHEDULE_CASES = [
    # A1111's doctests (10 steps)
    ("test", 10, [(10, "test")]),
    ("a [b:3]", 10, [(3, "a "), (10, "a b")]),
    ("a [b: 3]", 10, [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", 10, [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", 10, [(3, ""), (10, "(a:2)")]),
    ("a [b : c : 1] d", 10, [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", 10, [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("a [unbalanced", 10, [(10, "a [unbalanced")]),
    ("a [b:.5] c", 10, [(5, "a  c"), (10, "a b c")]),
    ("((a][:b:c [d:3]", 10, [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
    ("[fe|]male", 4, [(1, "female"), (2, "male"), (3, "female"), (4, "male")]),
    # A1111's doctest claims [[5, 'a  c'], [10, 'a {b|d{ c']] and is marked "not handling this right now"; its
    # grammar actually fails on the '|' and uses the text unchanged, which is what we do.
    ("a [{b|d{:.5] c", 10, [(10, "a [{b|d{:.5] c")]),
    # [from:to:when] with a step number
    ("a [cat:dog:5]", 10, [(5, "a cat"), (10, "a dog")]),
    ("[cat:dog:1]", 10, [(1, "cat"), (10, "dog")]),
    ("[cat:dog: 5 ]", 10, [(5, "cat"), (10, "dog")]),
    ("[cat:dog:+5]", 10, [(5, "cat"), (10, "dog")]),
    ("[cat:dog:10]", 10, [(10, "cat")]),  # switching after the last step never switches
    ("[cat:dog:99]", 10, [(10, "cat")]),
    ("[cat:dog:0]", 10, [(10, "dog")]),
    ("[cat:dog:-3]", 10, [(10, "dog")]),
    ("[cat:dog:1e1]", 20, [(10, "cat"), (20, "dog")]),  # A1111's number syntax allows an exponent
    # ... with a fraction of the steps: truncated, never rounded
    ("[cat:dog:0.5]", 20, [(10, "cat"), (20, "dog")]),
    ("[cat:dog:0.25]", 10, [(2, "cat"), (10, "dog")]),
    ("[cat:dog:0.29]", 100, [(28, "cat"), (100, "dog")]),  # 0.29 * 100 is 28.999... in floating point
    ("[cat:dog:0.05]", 10, [(10, "dog")]),  # below one step: the first part is never used
    # A number with a '.' is always a fraction in A1111 1.6+ (its default, "old prompt editing timelines" off):
    # 1.5 means 150% of the steps, so the switch never happens; the wiki's older rule read it as step 1.
    ("[cat:dog:1.5]", 10, [(10, "cat")]),
    ("[cat:dog:2.0]", 10, [(10, "cat")]),
    # [to:when] adds, [from::when] removes
    ("a [dog:3]", 10, [(3, "a "), (10, "a dog")]),
    ("a [dog::3]", 10, [(3, "a dog"), (10, "a ")]),
    ("[:3]", 10, [(10, "")]),
    # emphasis inside and around prompt editing is copied through for parse_attention
    ("[(cat:1.2):dog:5]", 10, [(5, "(cat:1.2)"), (10, "dog")]),
    ("text (with [a:b:2] inside)", 4, [(2, "text (with a inside)"), (4, "text (with b inside)")]),
    ("[a [b:c:3]", 10, [(3, "[a b"), (10, "[a c")]),  # the unclosed outer '[' is plain text
    # alternation cycles every step; nesting in both directions
    ("[cat|dog]", 4, [(1, "cat"), (2, "dog"), (3, "cat"), (4, "dog")]),
    ("[a|b|c]", 5, [(1, "a"), (2, "b"), (3, "c"), (4, "a"), (5, "b")]),
    ("[cat|dog]", 1, [(1, "cat")]),
    ("[|x]", 2, [(1, ""), (2, "x")]),
    ("[a|[b:c:2]]", 4, [(1, "a"), (2, "b"), (3, "a"), (4, "c")]),
    ("[[a|b]:c:2]", 4, [(1, "a"), (2, "b"), (4, "c")]),
    ("[[a:b:2]|c]", 4, [(1, "a"), (2, "c"), (3, "b"), (4, "c")]),
    # Deliberate difference: consecutive steps with the same text are one entry. A1111's doctest lists
    # [[1, 'female'], [2, 'male'], [3, 'male'], [4, 'male'], [5, 'female'], ...]; the conditioning is the same.
    ("[fe|||]male", 10, [(1, "female"), (4, "male"), (5, "female"), (8, "male"), (9, "female"), (10, "male")]),
    ("[[a:b:5]:c:2]", 10, [(2, "a"), (10, "c")]),  # A1111: [[2, 'a'], [5, 'c'], [10, 'c']]
    # not prompt editing: the text is used unchanged
    ("[cat:dog:x]", 10, [(10, "[cat:dog:x]")]),
    ("[a:b:c:3]", 10, [(10, "[a:b:c:3]")]),
    ("[a|b:3]", 10, [(10, "[a|b:3]")]),
    (r"\[cat:dog:5\]", 10, [(10, r"\[cat:dog:5\]")]),
    # Surprising A1111 rule: one '|' outside brackets makes its whole parse fail, so nothing is scheduled.
    ("cat | dog, [red:blue:5]", 10, [(10, "cat | dog, [red:blue:5]")]),
    ("[a|b] ) |", 4, [(4, "[a|b] ) |")]),
    # ... and so does a lone backslash at the very end
    ("[red:blue:5] \\", 10, [(10, "[red:blue:5] \\")]),
]


@pytest.mark.parametrize(("text", "steps", "expected"), SCHEDULE_CASES)
def test_schedule(text: str, steps: int, expected: list[tuple[int, str]]) -> None:
    assert schedule(text, steps) == expected


def test_schedule_keeps_a_construct_that_a1111_sometimes_drops() -> None:
    """Deliberate difference: with two or more stray brackets right after a ``[from:to:when]`` (``[a:3]]:``),
    A1111's ambiguous Earley grammar usually reads the construct as plain text; we always honour a well-formed
    construct, whatever follows it."""
    assert schedule("[a:3]]:", 4) == [(3, "]:"), (4, "a]:")]


@pytest.mark.parametrize("steps", [0, -1, MAX_SCHEDULE_STEPS + 1])
def test_schedule_refuses_bad_step_counts(steps: int) -> None:
    with pytest.raises(InvalidRequest) as caught:
        schedule("[a|b]", steps)
    assert caught.value.field == "steps"


def test_schedule_refuses_absurd_alternation_instead_of_hanging() -> None:
    with pytest.raises(InvalidRequest) as caught:
        schedule("[a|b] " * 20_000, 150, "negative_prompt")
    assert caught.value.field == "negative_prompt"
    assert "prompt editing is too large" in str(caught.value)


def test_schedule_allows_many_alternations_at_150_steps() -> None:
    result = schedule("[a|b] " * 1000, 150)
    assert len(result) == 150
    assert result[0] == (1, "a " * 1000)
    assert result[-1] == (150, "b " * 1000)


# -- extra networks --------------------------------------------------------------------------------------------

NETWORK_CASES = [
    ("a cat <lora:add_detail:0.7>", "a cat ", [ExtraNetwork("lora", "add_detail", 0.7, 0.7)]),
    ("<lora:style>", "", [ExtraNetwork("lora", "style", 1.0, 1.0)]),
    (
        "<lora:a:0.5>, <lyco:b:1>, <hypernet:c:0.3>",
        ", , ",
        [
            ExtraNetwork("lora", "a", 0.5, 0.5),
            ExtraNetwork("lyco", "b", 1.0, 1.0),
            ExtraNetwork("hypernet", "c", 0.3, 0.3),
        ],
    ),
    ("<lora:a:-1>", "", [ExtraNetwork("lora", "a", -1.0, -1.0)]),
    ("<lora:a:.5>", "", [ExtraNetwork("lora", "a", 0.5, 0.5)]),
    ("<lora:a:-0.25>", "", [ExtraNetwork("lora", "a", -0.25, -0.25)]),
    # A1111's te/unet split: a second weight is the UNet's; without it the UNet uses the first
    ("<lora:a:0.8:0.5>", "", [ExtraNetwork("lora", "a", 0.8, 0.5)]),
    ("<lora:a:unet=0.3>", "", [ExtraNetwork("lora", "a", 1.0, 0.3)]),
    ("<lora:a:te=0.2:unet=0.4>", "", [ExtraNetwork("lora", "a", 0.2, 0.4)]),
    ("<lora:a:te=0.2>", "", [ExtraNetwork("lora", "a", 0.2, 0.2)]),
    # anything after the two weights is kept for the network's own code (A1111's dyn rank)
    ("<lora:a:1:0.5:32>", "", [ExtraNetwork("lora", "a", 1.0, 0.5, ("32",))]),
    ("<lora:a:1:dyn=16>", "", [ExtraNetwork("lora", "a", 1.0, 1.0, ("dyn=16",))]),
    # names with spaces, dots, dashes, slashes; spaces around parts are trimmed
    ("<lora:my lora v1.5:0.6>", "", [ExtraNetwork("lora", "my lora v1.5", 0.6, 0.6)]),
    ("<lora:sub/dir/name-v2.1_final:1>", "", [ExtraNetwork("lora", "sub/dir/name-v2.1_final", 1.0, 1.0)]),
    ("<lora: padded : 0.5 >", "", [ExtraNetwork("lora", "padded", 0.5, 0.5)]),
    # any kind is taken out of the text, as A1111 does; the caller decides which kinds it knows
    ("x <foo:bar> y", "x  y", [ExtraNetwork("foo", "bar", 1.0, 1.0)]),
    # not tags: left in the text
    ("I <3 cats", "I <3 cats", []),
    ("<html> a < b > c", "<html> a < b > c", []),
    ("<lora:unclosed", "<lora:unclosed", []),
    # the same tag twice is two entries (A1111 too)
    ("<lora:a:1><lora:a:1>", "", [ExtraNetwork("lora", "a", 1.0, 1.0)] * 2),
    # Deliberate difference: A1111's [^>]+ would read '<lora:a <lora:b:1>' as one tag named 'a <lora'
    ("<lora:a <lora:b:1>", "<lora:a ", [ExtraNetwork("lora", "b", 1.0, 1.0)]),
]


@pytest.mark.parametrize(("text", "remaining", "networks"), NETWORK_CASES)
def test_extract_networks(text: str, remaining: str, networks: list[ExtraNetwork]) -> None:
    assert extract_networks(text) == (remaining, networks)


NETWORK_ERRORS = [
    ("<lora::x>", "has no name"),
    ("<lora:>", "has no name"),
    ("<lora: :1>", "has no name"),
    ("<lora:name:abc>", "weight 'abc' is not a number"),
    ("<lora:name:>", "weight is empty"),
    ("<lora:name:1:abc>", "weight 'abc' is not a number"),
    ("<lora:name:unet=x>", "weight 'x' is not a number"),
    ("<lora:name:inf>", "weight 'inf' is not a number"),
    ("<lora:name:nan>", "weight 'nan' is not a number"),
    ("<lora:name:1e999>", "is too large"),
    ("<hypernet:name:0,5>", "weight '0,5' is not a number"),
]


@pytest.mark.parametrize(("tag", "problem"), NETWORK_ERRORS)
@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_malformed_network_tags_are_refused(tag: str, problem: str, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        extract_networks(f"a cat, {tag}, best quality", field)
    message = str(caught.value)
    assert caught.value.field == field
    assert f"'{tag}'" in message
    assert problem in message
    kind = tag[1 : tag.index(":")]
    assert f"expected <{kind}:NAME>" in message


def test_a_huge_malformed_tag_is_quoted_short() -> None:
    with pytest.raises(InvalidRequest) as caught:
        extract_networks("<lora:name:" + "x" * 50_000 + ">")
    assert len(str(caught.value)) < 400


# -- chunks of 75 tokens ---------------------------------------------------------------------------------------

PAD = 49407  # CLIP's end-of-text token, which A1111 pads with
COMMA = 267  # CLIP's ','


def _tokenize(text: str) -> list[int]:
    """A stand-in tokenizer: 'wN' is token N, ',' is COMMA; anything else is ignored."""
    return [COMMA if word == "," else int(word[1:]) for word in re.findall(r"w\d+|,", text)]


def _words(start: int, count: int) -> str:
    return " ".join(f"w{number}" for number in range(start, start + count))


def _chunk(tokens: list[int], weight: float = 1.0, size: int = 75) -> list[tuple[int, float]]:
    return [(token, weight) for token in tokens] + [(PAD, 1.0)] * (size - len(tokens))


CHUNK_CASES = [
    # (pieces, options, expected chunks)
    ([("", 1.0)], {}, [_chunk([])]),
    ([("w1 w2", 1.0)], {}, [_chunk([1, 2])]),
    ([("w1 w2", 1.1), ("w3", 0.9)], {}, [[(1, 1.1), (2, 1.1), (3, 0.9)] + [(PAD, 1.0)] * 72]),
    ([(_words(1, 75), 1.0)], {}, [_chunk(list(range(1, 76)))]),
    ([(_words(1, 76), 1.0)], {}, [_chunk(list(range(1, 76))), _chunk([76])]),
    ([(_words(1, 150), 1.0)], {}, [_chunk(list(range(1, 76))), _chunk(list(range(76, 151)))]),
    # BREAK closes the chunk early, even an empty one; a BREAK at the end adds nothing
    ([("w1", 1.0), (BREAK, -1.0), ("w2", 1.0)], {}, [_chunk([1]), _chunk([2])]),
    ([("", 1.0), (BREAK, -1.0), ("w1", 1.0)], {}, [_chunk([]), _chunk([1])]),
    ([("w1", 1.0), (BREAK, -1.0), ("", 1.0)], {}, [_chunk([1])]),
    ([("w1", 1.0), (BREAK, -1.0), ("", 1.0), (BREAK, -1.0), ("w2", 1.0)], {}, [_chunk([1]), _chunk([]), _chunk([2])]),
    # the literal word with another weight is not a BREAK (the stand-in tokenizer ignores it)
    ([(BREAK, 1.0)], {}, [_chunk([])]),
    # comma backtrack: a comma within the last 20 tokens of a full chunk moves the words after it along
    (
        [(_words(1, 70) + " , " + _words(71, 10), 1.0)],
        {"comma_token": COMMA},
        [_chunk([*range(1, 71), COMMA]), _chunk(list(range(71, 81)))],
    ),
    # ... not when the comma is further back than comma_backtrack
    (
        [(_words(1, 50) + " , " + _words(51, 30), 1.0)],
        {"comma_token": COMMA},
        [_chunk([*range(1, 51), COMMA, *range(51, 75)]), _chunk(list(range(75, 81)))],
    ),
    # ... nor when it is turned off, or no comma token is known
    (
        [(_words(1, 70) + " , " + _words(71, 10), 1.0)],
        {"comma_token": COMMA, "comma_backtrack": 0},
        [_chunk([*range(1, 71), COMMA, 71, 72, 73, 74]), _chunk(list(range(75, 81)))],
    ),
    (
        [(_words(1, 70) + " , " + _words(71, 10), 1.0)],
        {},
        [_chunk([*range(1, 71), COMMA, 71, 72, 73, 74]), _chunk(list(range(75, 81)))],
    ),
    # a comma as the chunk's last token: nothing to move, an ordinary split
    (
        [(_words(1, 74) + " , " + _words(75, 3), 1.0)],
        {"comma_token": COMMA},
        [_chunk([*range(1, 75), COMMA]), _chunk([75, 76, 77])],
    ),
    # small chunks make the rules easy to read
    (
        [("w1 w2 w3 w4 w5", 1.0)],
        {"chunk_size": 2},
        [_chunk([1, 2], size=2), _chunk([3, 4], size=2), _chunk([5], size=2)],
    ),
    (
        [("w1 , w2 w3 w4", 1.0)],
        {"chunk_size": 4, "comma_token": COMMA, "comma_backtrack": 3},
        [_chunk([1, COMMA], size=4), _chunk([2, 3, 4], size=4)],
    ),
    # Surprising A1111 rule: a comma that arrives at a full chunk starts the next chunk but is not remembered
    # there, so it never triggers a backtrack (here comma_backtrack is wide enough that it otherwise would).
    (
        [("w1 w2 , w3 w4 w5", 1.0)],
        {"chunk_size": 2, "comma_token": COMMA, "comma_backtrack": 5},
        [_chunk([1, 2], size=2), _chunk([COMMA, 3], size=2), _chunk([4, 5], size=2)],
    ),
]


@pytest.mark.parametrize(("pieces", "options", "expected"), CHUNK_CASES)
def test_chunk_tokens(pieces: list[tuple[str, float]], options: dict, expected: list) -> None:
    chunks = chunk_tokens(pieces, _tokenize, pad_token=PAD, **options)
    assert chunks == expected
    assert all(len(chunk) == options.get("chunk_size", 75) for chunk in chunks)


def test_chunk_tokens_tokenizes_each_piece_alone_and_skips_breaks() -> None:
    seen: list[str] = []

    def recording(text: str) -> list[int]:
        seen.append(text)
        return _tokenize(text)

    pieces = parse_attention("w1 (w2) BREAK [w3]")
    chunk_tokens(pieces, recording, pad_token=PAD)
    assert seen == ["w1 ", "w2", "w3"]


def test_attention_then_chunks_carry_weights() -> None:
    chunks = chunk_tokens(parse_attention("w1 (w2:1.5) BREAK [w3]"), _tokenize, pad_token=PAD)
    assert [chunk[:2] for chunk in chunks] == [[(1, 1.0), (2, 1.5)], [(3, S), (PAD, 1.0)]]


@pytest.mark.parametrize("options", [{"chunk_size": 0}, {"comma_backtrack": -1}])
def test_chunk_tokens_refuses_nonsense_sizes(options: dict) -> None:
    with pytest.raises(ValueError):
        chunk_tokens([("w1", 1.0)], _tokenize, pad_token=PAD, **options)


# -- the whole prompt ------------------------------------------------------------------------------------------


def test_parse_prompt_takes_networks_out_before_scheduling() -> None:
    # A tag inside prompt editing still applies for every step, as in A1111.
    parsed = parse_prompt("a [<lora:style:0.6>cat:dog:5], (detailed:1.2)", steps=10)
    assert parsed.networks == (ExtraNetwork("lora", "style", 0.6, 0.6),)
    assert parsed.text == "a [cat:dog:5], (detailed:1.2)"
    assert parsed.schedule == ((5, "a cat, (detailed:1.2)"), (10, "a dog, (detailed:1.2)"))


def test_parse_prompt_without_syntax_is_one_entry() -> None:
    assert parse_prompt("a red circle", steps=20).schedule == ((20, "a red circle"),)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("<lora:x:abc>", "<lora:x:abc>"), ("(a:1.2.3)", "'1.2.3'"), ("(" * 1000, "brackets are open")],
)
def test_parse_prompt_errors_name_the_field(text: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_prompt(text, steps=20, field="negative_prompt")
    assert caught.value.field == "negative_prompt"
    assert fragment in str(caught.value)


# -- limits: long and deeply nested prompts ---------------------------------------------------------------------
# No timings: each case only has to finish and give the right answer. The parsers are linear, so these take
# milliseconds; a quadratic or recursive slip turns them into minutes or a RecursionError.

LONG = 100_000


def test_100k_character_prompt_attention() -> None:
    unit = "(masterpiece:1.2), best quality, "
    text = unit * (LONG // len(unit))
    pieces = parse_attention(text)
    assert len(text) >= LONG - len(unit)
    assert len(pieces) == 2 * (LONG // len(unit))
    assert pieces[0] == ("masterpiece", 1.2)
    assert "".join(piece for piece, _ in pieces) == text.replace("(", "").replace(":1.2)", "")


def test_100k_character_prompt_networks_and_schedule() -> None:
    unit = "<lora:detail v2:0.5> a [cat:dog:0.5] (sky), "
    text = unit * (LONG // len(unit))
    parsed = parse_prompt(text, steps=150)
    assert len(parsed.networks) == LONG // len(unit)
    assert [end for end, _ in parsed.schedule] == [75, 150]
    assert parsed.schedule[0][1] == " a cat (sky), " * (LONG // len(unit))


@pytest.mark.parametrize(
    "text",
    [
        " " * LONG,  # A1111's BREAK regex is quadratic on runs of spaces
        " " * LONG + "BREAK",
        ":" * LONG,
        ": 1" * (LONG // 3),
        "\\(" * (LONG // 2),
        "(a)" * (LONG // 3),
        "(" * (MAX_BRACKET_DEPTH - 1) + "(a)" * (LONG // 3),  # the most weighting work the limit allows
    ],
)
def test_100k_pathological_attention(text: str) -> None:
    pieces = parse_attention(text)
    assert pieces


@pytest.mark.parametrize(
    "text",
    [
        "<" + "a" * LONG,
        "<a:" * (LONG // 3),
        "<lora:" + "x" * LONG,
        "<lora:x:1>" * (LONG // 10),
    ],
)
def test_100k_pathological_networks(text: str) -> None:
    remaining, networks = extract_networks(text)
    assert len(remaining) + sum(len(f"<lora:{n.name}:1>") for n in networks) == len(text)


@pytest.mark.parametrize(
    ("text", "expected_entries"),
    [
        ("|" * LONG, 1),  # a top-level '|': used unchanged
        ("(" * LONG, 1),
        ("[" * (LONG // 2) + "]" * (LONG // 2), 1),
        ("[a:b:c]" * (LONG // 7), 1),
        ("([" * (LONG // 4) + "x" + "])" * (LONG // 4), 1),
        ("[a:b:3]" * (LONG // 7), 2),
        ("[a|b]" + "x" * LONG, 150),
    ],
)
def test_100k_pathological_schedule(text: str, expected_entries: int) -> None:
    assert len(schedule(text, 150)) == expected_entries


def test_deep_nesting_in_attention_is_refused_clearly() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_attention("(" * 10_000 + "a" + ")" * 10_000)
    assert f"more than {MAX_BRACKET_DEPTH} brackets are open at once" in str(caught.value)
    assert "\\(" in str(caught.value)  # says how to write a literal bracket


@pytest.mark.parametrize("depth", [1_000, 10_000])
def test_deep_nesting_in_schedule_needs_no_recursion(depth: int) -> None:
    # [[[a:1]:1]:1]...: every level adds its inside after step 1
    assert schedule("[" * depth + "a" + ":1]" * depth, 10) == [(1, ""), (10, "a")]
    assert schedule("(" * depth + "[a|b]" + ")" * depth, 2) == [
        (1, "(" * depth + "a" + ")" * depth),
        (2, "(" * depth + "b" + ")" * depth),
    ]
    assert schedule("[" * depth + "[x:y:1]" + "]" * depth, 2) == [
        (1, "[" * depth + "x" + "]" * depth),
        (2, "[" * depth + "y" + "]" * depth),
    ]
