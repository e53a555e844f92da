"""Caller regexes: matched in linear time (RE2) with Python's meaning, generated from by
construction, refused when neither can be guaranteed."""

from __future__ import annotations

import random
import re
import sys
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core import regexgen
from services.core.models import FieldConstraint, FieldSpec, FieldType
from services.core.validate import check_value

ATOMS = [
    "a",
    "b",
    "0",
    "-",
    r"\.",
    " ",
    "é",
    "[a-c]",
    "[^a]",
    r"[\d_]",
    r"[\w-]",
    r"[\s]",
    r"\d",
    r"\D",
    r"\w",
    r"\W",
    r"\s",
    r"\S",
    ".",
    "[é-ü]",
    r"[\W]",
    r"[\Wa]",
    "[^é]",
]
QUANTIFIERS = ["", "", "*", "+", "?", "{2}", "{1,3}", "{0,2}", "*?", "{2,}"]
ALPHABET = list("ab0123-._ \n\t\x0bAé٣É_xyzüſK\u00a0\u2003İı")


@st.composite
def patterns(draw: st.DrawFn, depth: int = 0) -> str:
    def piece() -> str:
        if depth < 1 and draw(st.integers(0, 4)) == 2:  # Python (the oracle) must stay fast
            opener = draw(st.sampled_from(["(", "(?:", "(?i:", "(?s:"]))
            atom = opener + draw(patterns(depth + 1)) + ")"
        else:
            atom = draw(st.sampled_from(ATOMS))
        return atom + draw(st.sampled_from(QUANTIFIERS))

    branches = [
        "".join(piece() for _ in range(draw(st.integers(1, 3))))
        for _ in range(draw(st.integers(1, 2)))
    ]
    body = "|".join(branches)
    if depth:
        return body
    flags = draw(st.sampled_from(["", "", "(?i)", "(?s)", "(?a)", "(?ai)"]))
    start = draw(st.sampled_from(["", "^", r"\A"]))
    end = draw(st.sampled_from(["", "$", r"\Z"]))
    return f"{flags}{start}(?:{body}){end}"


SAME = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@SAME
@given(patterns(), st.lists(st.text(alphabet=ALPHABET, max_size=6), max_size=8))
def test_re2_verdicts_equal_python_fullmatch(pattern: str, texts: list[str]) -> None:
    """The translation keeps Python's meaning: same verdict on any text, and what the
    generator makes matches, within the length range it reports. (Python's `re` is the
    oracle only on short texts: these random patterns make it backtrack for minutes.)"""
    p = regexgen.compile_pattern(pattern)
    match = p.ready()
    py = re.compile(pattern)
    rng = random.Random(len(pattern))
    made = [p.generate(rng) for _ in range(5)]
    for text in [*texts, *(m for m in made if len(m) <= 6)]:
        assert bool(match(text)) == bool(py.fullmatch(text)), (pattern, text, p.re2_text)
    for text in made:
        assert match(text), (pattern, text)
        assert p.lo <= len(text) <= p.hi


@SAME
@given(patterns(), st.integers(0, 30), st.integers(0, 30))
def test_exact_lengths_are_made_by_construction(pattern: str, a: int, b: int) -> None:
    p = regexgen.compile_pattern(pattern)
    match = p.ready()
    lo, hi = min(a, b), max(a, b)
    lengths = regexgen.allowed_lengths(pattern, lo, hi)
    rng = random.Random(a * 31 + b)
    if lengths == (-1,):
        assert lo <= p.lo and p.hi <= hi
        return
    for n in lengths:
        text = p.generate_len(rng, n)
        assert len(text) == n and lo <= n <= hi
        assert match(text), (pattern, n, text)
    everything = {len(p.generate(rng)) for _ in range(200)}
    assert {n for n in everything if lo <= n <= hi} <= set(lengths)


def test_catastrophic_backtracking_pattern_is_decided() -> None:
    """(a+)+$ takes Python's re seconds on ~28 a's and '!'; RE2 decides 10,000 at once."""
    f = FieldSpec(name="s", type=FieldType.STRING, constraint=FieldConstraint(regex="(a+)+$"))
    errs = check_value(f, "a" * 10_000 + "!", "s")
    assert [e.message for e in errs] == ["does not match (a+)+$"]
    assert check_value(f, "a" * 10_000, "s") == []


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("(?=x)abc", "lookarounds"),
        (r"(a)\1", "back-references"),
        (r"\bfoo", "word boundaries"),
        ("a^b", "start of the pattern"),
        ("a$b", "end of the pattern"),
        ("(^a)*", "start of the pattern"),
        ("a*+", "possessive"),
        ("(?>a)", "atomic"),
        (r"[^\W\d_]", "positively"),
        (r"a\x00", "NUL"),
        (r"[\x00]", "NUL"),
        (r"[^\x00-\U0010ffff]", "no character"),
        ("a{1001}", "RE2 cannot compile"),
        ("(" * 60 + "a" + ")" * 60, "nested more than"),
        ("([a-z", "invalid regex"),
    ],
)
def test_refusals_say_why(pattern: str, why: str) -> None:
    reason = regexgen.check_regex(pattern)
    assert reason is not None and why in reason, reason


def test_deeply_nested_pattern_is_refused_not_a_recursion_error() -> None:
    depth = sys.getrecursionlimit()
    assert "nested" in (regexgen.check_regex("(" * depth + ")" * depth) or "")


@pytest.mark.parametrize(
    ("cls", "pred"),
    [
        (r"\d", str.isdecimal),
        (r"\w", lambda ch: ch.isalnum() or ch == "_"),
        (r"\s", str.isspace),
    ],
)
def test_unicode_classes_mean_what_python_means(cls: str, pred: object) -> None:
    """RE2's \\d \\w \\s are ASCII; ours follow Python's Unicode classes. Checked on every
    code point Python's Unicode database assigns (RE2's tables may be newer)."""
    positive = regexgen.matcher(cls)
    negative = regexgen.matcher(cls.upper())
    differ = []
    for cp in range(0x30000):
        ch = chr(cp)
        if 0xD800 <= cp <= 0xDFFF or unicodedata.category(ch) == "Cn":
            continue
        want = bool(pred(ch))  # type: ignore[operator]
        if bool(positive(ch)) != want or bool(negative(ch)) == want:
            differ.append(hex(cp))
    assert not differ, differ[:20]


def test_trailing_newline_and_anchors_keep_python_verdicts() -> None:
    """Python's $ matches before a final newline, but a whole-string match must consume
    it: `abc$` never matched "abc\\n" under fullmatch, and does not now."""
    m = regexgen.matcher("^abc$")
    assert m("abc") and not m("abc\n") and not re.fullmatch("^abc$", "abc\n")
    assert regexgen.matcher(r"abc\n")("abc\n")


def test_cost_and_length_are_known_before_compiling() -> None:
    p = regexgen.compile_pattern(r"\w{300}")
    assert p.hi == 300 and p.cost > 300 * 1000  # Unicode \w is ~1,350 RE2 instructions
    assert regexgen.compile_pattern("[A-Za-z0-9_]{300}").cost < 5_000


@pytest.mark.parametrize(
    "pattern", [r"(?i)\W", r"(?i)\S", r"(?i)\D", r"(?i)[^\w]", r"\W", r"(?i)[a-z]", r"(?ai)\W"]
)
def test_drawn_characters_match_under_case_folding(pattern: str) -> None:
    """Candidates are found with an ASCII probe of each class; under (?i) the probe of a
    negative category would fold K (Kelvin) onto k, so those classes are asked directly."""
    p = regexgen.compile_pattern(pattern)
    match = p.ready()
    rng = random.Random(7)
    for ch in {p.generate(rng) for _ in range(300)}:
        assert match(ch) and re.fullmatch(pattern, ch), (pattern, ch)
