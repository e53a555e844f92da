"""Caller regexes: checked, translated for RE2, and generated from by construction.

A pattern is parsed once with Python's own parser (callers write Python syntax), then:

- refused if it uses what no walk can honour: lookarounds, back-references, atomic groups,
  possessive repeats, word boundaries, anchors anywhere but at the ends, deep nesting;
- translated into an RE2 pattern with Python's meaning spelled out, because matching a
  caller's value against a caller's pattern must take linear time (Python's backtracking
  `re` can take seconds on `(a+)+$`). RE2's `\\d \\w \\s` are ASCII and Python's are
  Unicode, so they become `\\p{Nd}`, `[\\p{L}\\p{N}_]` and Python's whitespace set (ASCII
  classes under `(?a)`); `.` excludes only `\\n`, as in Python. Values are always matched
  whole (`fullmatch`), so anchors, which may stand only at the ends, are dropped: Python's
  `$` before a trailing newline never differs under fullmatch;
- turned into a tree of nodes that generates matches, free or of an exact length (so
  min_length/max_length next to a regex are met by construction, not by retrying).
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from re import _constants as c  # type: ignore[attr-defined]
from re import _parser as sre  # type: ignore[attr-defined]
from typing import Any

import re2

from services.core.errors import UnsupportedRegex

UNBOUNDED_CAP = 8  # `*`/`+` repeat at most this many extra times
MAX_NESTING = 50  # groups and repeats inside each other
_PRINTABLE = [ch for ch in string.printable if ch not in "\t\n\r\x0b\x0c"]
# Characters tried for classes that admit no printable ASCII one (`[^\x00-\x7f]`).
_NON_ASCII = "éüñßøçÀΩπЖ中日한\u00a0\u2003😀"
_SAMPLE_PER_RANGE = 512
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.max_mem = 4 << 20  # per pattern: program and lazily built DFA (RE2 default 8 MiB)
_RE2_OPTIONS.never_capture = True  # only the verdict is used

# Python's Unicode `\s` (str.isspace, Unicode 14), as ranges.
_SPACE_RANGES = (
    (0x09, 0x0D),
    (0x1C, 0x20),
    (0x85, 0x85),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
)
_ASCII_SPACE = ((0x09, 0x0D), (0x20, 0x20))
_ASCII_DIGIT = ((0x30, 0x39),)
_ASCII_WORD = ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))
_MAX_CP = 0x10FFFF

# Estimated RE2 program instructions per occurrence (measured: `\w` as Unicode is ~1,350).
_COST_UNICODE = {
    c.CATEGORY_DIGIT: 90,
    c.CATEGORY_NOT_DIGIT: 270,
    c.CATEGORY_WORD: 1350,
    c.CATEGORY_NOT_WORD: 1350,
    c.CATEGORY_SPACE: 20,
    c.CATEGORY_NOT_SPACE: 40,
}
_COST_WIDE_RANGE = 25
_COST_ANY = 10


# ---- nodes -------------------------------------------------------------------------------
def _bits(mask: int) -> list[int]:
    """The set bits of a length set, ascending."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def _is_interval(mask: int) -> bool:
    low = mask & -mask
    return mask != 0 and ((mask // low) + 1) & (mask // low) == 0


def _sumset(a: int, b: int) -> int:
    """Lengths {x + y}: iterates over the sparser set; intervals in O(1)."""
    if not a or not b:
        return 0
    if _is_interval(a) and _is_interval(b):
        lo = (a & -a).bit_length() + (b & -b).bit_length() - 2
        hi = a.bit_length() + b.bit_length() - 2
        return ((1 << (hi - lo + 1)) - 1) << lo
    if a.bit_count() > b.bit_count():
        a, b = b, a
    out = 0
    for x in _bits(a):
        out |= b << x
    return out


def _choose(rng: random.Random, first: int, rest: int, n: int) -> int:
    """A length x in `first` with n - x in `rest`, uniformly among those that exist."""
    if first & (first - 1) == 0:  # a fixed length: nothing to choose
        return first.bit_length() - 1
    options = [x for x in _bits(first) if x <= n and (rest >> (n - x)) & 1]
    return options[int(rng.random() * len(options))]


class Node:
    """A generatable piece of a pattern; `mask` is its set of lengths, as bits."""

    __slots__ = ("_mask",)

    def __init__(self) -> None:
        self._mask = -1

    def emit(self, rng: random.Random, out: list[str]) -> None:
        raise NotImplementedError

    def emit_len(self, rng: random.Random, n: int, out: list[str]) -> None:
        raise NotImplementedError

    def mask(self) -> int:
        if self._mask < 0:
            self._mask = self._compute_mask()
        return self._mask

    def _compute_mask(self) -> int:
        raise NotImplementedError


class Chars(Node):
    """One character from `chars` (filled in by `Pattern.ready`, after the cost check)."""

    __slots__ = ("chars",)

    def __init__(self, chars: list[str]):
        super().__init__()
        self.chars = chars

    def emit(self, rng: random.Random, out: list[str]) -> None:
        out.append(self.chars[0] if len(self.chars) == 1 else rng.choice(self.chars))

    def emit_len(self, rng: random.Random, n: int, out: list[str]) -> None:
        self.emit(rng, out)

    def _compute_mask(self) -> int:
        return 2


class Seq(Node):
    __slots__ = ("_suffix", "items")

    def __init__(self, items: list[Node]):
        super().__init__()
        self.items = items
        self._suffix: list[int] = []

    def emit(self, rng: random.Random, out: list[str]) -> None:
        for item in self.items:
            item.emit(rng, out)

    def _compute_mask(self) -> int:
        acc = 1
        suffix = [1]
        for item in reversed(self.items):
            acc = _sumset(acc, item.mask())
            suffix.append(acc)
        self._suffix = suffix[::-1]  # _suffix[i]: lengths of items[i:]
        return acc

    def emit_len(self, rng: random.Random, n: int, out: list[str]) -> None:
        self.mask()
        for i, item in enumerate(self.items):
            x = _choose(rng, item.mask(), self._suffix[i + 1], n)
            item.emit_len(rng, x, out)
            n -= x


class Alt(Node):
    __slots__ = ("branches",)

    def __init__(self, branches: list[Node]):
        super().__init__()
        self.branches = branches

    def emit(self, rng: random.Random, out: list[str]) -> None:
        rng.choice(self.branches).emit(rng, out)

    def _compute_mask(self) -> int:
        m = 0
        for b in self.branches:
            m |= b.mask()
        return m

    def emit_len(self, rng: random.Random, n: int, out: list[str]) -> None:
        fits = [b for b in self.branches if (b.mask() >> n) & 1]
        fits[int(rng.random() * len(fits))].emit_len(rng, n, out)


class Repeat(Node):
    __slots__ = ("_powers", "hi", "lo", "sub")

    def __init__(self, lo: int, hi: int, sub: Node):
        super().__init__()
        self.lo, self.hi, self.sub = lo, hi, sub
        self._powers: list[int] = []

    def emit(self, rng: random.Random, out: list[str]) -> None:
        for _ in range(rng.randint(self.lo, self.hi)):
            self.sub.emit(rng, out)

    def _power(self, k: int) -> int:
        """Lengths of exactly k copies (computed once, in order, as needed)."""
        p = self._powers
        if not p:
            p.append(1)
        s = self.sub.mask()
        while len(p) <= k:
            p.append(_sumset(p[-1], s))
        return p[k]

    def _compute_mask(self) -> int:
        m = 0
        for k in range(self.lo, self.hi + 1):
            m |= self._power(k)
        return m

    def emit_len(self, rng: random.Random, n: int, out: list[str]) -> None:
        counts = [k for k in range(self.lo, self.hi + 1) if (self._power(k) >> n) & 1]
        k = counts[int(rng.random() * len(counts))]
        s = self.sub.mask()
        for j in range(k):
            x = _choose(rng, s, self._power(k - 1 - j), n)
            self.sub.emit_len(rng, x, out)
            n -= x


# ---- parse and translate -----------------------------------------------------------------
def _hex(cp: int) -> str:
    ch = chr(cp)
    return ch if ch.isascii() and ch.isalnum() else f"\\x{{{cp:x}}}"


def _complement(ranges: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    out, nxt = [], 0
    for lo, hi in sorted(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = max(nxt, hi + 1)
    if nxt <= _MAX_CP:
        out.append((nxt, _MAX_CP))
    return tuple(out)


def _ranges_text(ranges: tuple[tuple[int, int], ...]) -> str:
    return "".join(_hex(a) if a == b else f"{_hex(a)}-{_hex(b)}" for a, b in ranges)


_ASCII_TABLE = {
    c.CATEGORY_DIGIT: _ASCII_DIGIT,
    c.CATEGORY_WORD: _ASCII_WORD,
    c.CATEGORY_SPACE: _ASCII_SPACE,
    c.CATEGORY_NOT_DIGIT: _complement(_ASCII_DIGIT),
    c.CATEGORY_NOT_WORD: _complement(_ASCII_WORD),
    c.CATEGORY_NOT_SPACE: _complement(_ASCII_SPACE),
}
_UNICODE_TEXT = {
    c.CATEGORY_DIGIT: r"\p{Nd}",
    c.CATEGORY_NOT_DIGIT: r"\P{Nd}",
    c.CATEGORY_WORD: r"\p{L}\p{N}_",
    c.CATEGORY_SPACE: _ranges_text(_SPACE_RANGES),
    c.CATEGORY_NOT_SPACE: _ranges_text(_complement(_SPACE_RANGES)),
}


def _ascii_swapcase(lo: int, hi: int) -> list[tuple[int, int]]:
    """The other case of the ASCII letters in [lo, hi] (Python's (?ai) folds only those)."""
    out = []
    for a, b, delta in ((0x41, 0x5A, 32), (0x61, 0x7A, -32)):
        x, y = max(lo, a), min(hi, b)
        if x <= y:
            out.append((x + delta, y + delta))
    return out


def _check_char(cp: int) -> None:
    if cp == 0:
        raise UnsupportedRegex("NUL characters cannot appear in values")
    if 0xD800 <= cp <= 0xDFFF:
        raise UnsupportedRegex("lone surrogates cannot appear in values")


@dataclass
class Piece:
    """A translated part of a pattern: its generator node, RE2 text and estimated cost."""

    node: Node
    text: str
    cost: int


class _Translator:
    """Walks Python's parse tree once, building nodes and the RE2 text side by side."""

    def __init__(self) -> None:
        # Atom text -> (nodes that draw from it, characters it names, its ASCII probe).
        self.atoms: dict[str, tuple[list[Chars], list[str], str]] = {}

    def seq(self, items: Any, flags: int, start: bool, end: bool) -> Piece:
        items = list(items)
        consuming = [i for i, (op, _) in enumerate(items) if op != c.AT]
        first = consuming[0] if consuming else len(items)
        last = consuming[-1] if consuming else -1
        nodes, texts, cost = [], [], 0
        for i, (op, av) in enumerate(items):
            at_start, at_end = start and i <= first, end and i >= last
            if op == c.AT:
                self.anchor(av, at_start, at_end)
                continue
            p = self.item(op, av, flags, at_start, at_end)
            nodes.append(p.node)
            texts.append(p.text)
            cost += p.cost
        node = nodes[0] if len(nodes) == 1 else Seq(nodes)
        return Piece(node, "".join(texts), cost)

    def anchor(self, av: Any, at_start: bool, at_end: bool) -> None:
        if av in (c.AT_BEGINNING, c.AT_BEGINNING_STRING):
            if not at_start:
                raise UnsupportedRegex("^ and \\A may only stand at the start of the pattern")
        elif av in (c.AT_END, c.AT_END_STRING):
            if not at_end:
                raise UnsupportedRegex("$ and \\Z may only stand at the end of the pattern")
        else:
            raise UnsupportedRegex("word boundaries (\\b, \\B) cannot be generated")

    def item(self, op: Any, av: Any, flags: int, start: bool, end: bool) -> Piece:
        if op == c.LITERAL:
            _check_char(av)
            return self.literal(av, flags)
        if op == c.NOT_LITERAL:
            return self.charclass([(c.NEGATE, None), (c.LITERAL, av)], flags)
        if op == c.ANY:
            text = "(?s:.)" if flags & re.DOTALL else "[^\\n]"
            return self.atom(text, _COST_ANY, [])
        if op == c.IN:
            return self.charclass(av, flags)
        if op == c.SUBPATTERN:
            _group, add, remove, sub = av
            p = self.seq(sub, (flags | add) & ~remove, start, end)
            return Piece(p.node, f"(?:{p.text})", p.cost + 1)
        if op == c.BRANCH:
            parts = [self.seq(b, flags, start, end) for b in av[1]]
            text = "(?:" + "|".join(p.text for p in parts) + ")"
            return Piece(Alt([p.node for p in parts]), text, sum(p.cost + 1 for p in parts))
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):  # lazy or greedy: same whole-string verdict
            lo, hi, sub = av  # counts above 1,000: RE2 refuses them once lengths are checked
            p = self.seq(sub, flags, False, False)
            if hi == c.MAXREPEAT:
                rep, copies, gen_hi = f"{{{lo},}}", max(lo, 1), lo + UNBOUNDED_CAP
            else:
                rep, copies, gen_hi = f"{{{lo},{hi}}}", max(hi, 1), hi
            return Piece(Repeat(lo, gen_hi, p.node), f"(?:{p.text}){rep}", (p.cost + 1) * copies)
        if op in (c.ASSERT, c.ASSERT_NOT):
            raise UnsupportedRegex("lookarounds cannot be generated")
        if op in (c.GROUPREF, c.GROUPREF_EXISTS):
            raise UnsupportedRegex("back-references cannot be generated")
        if op in (getattr(c, "ATOMIC_GROUP", None), getattr(c, "POSSESSIVE_REPEAT", None)):
            raise UnsupportedRegex("atomic groups and possessive repeats are not supported")
        raise UnsupportedRegex(f"unsupported construct {op}")

    def literal(self, cp: int, flags: int) -> Piece:
        if flags & re.IGNORECASE:
            return self.charclass([(c.LITERAL, cp)], flags)
        return Piece(Chars([chr(cp)]), _hex(cp), 1 if cp < 0x80 else 3)

    def charclass(self, items: Any, flags: int) -> Piece:
        icase = bool(flags & re.IGNORECASE)
        ascii_only = bool(flags & re.ASCII)
        negate, cost, not_word = False, 1, False
        parts: list[str] = []
        # The same class on ASCII alone (categories as ASCII ranges): it decides printable
        # candidates at the cost of a few instructions instead of a Unicode table's.
        probe: list[str] = []
        named: list[str] = []  # characters the class names: candidates when ASCII has none
        for op, av in items:
            if op == c.NEGATE:
                negate, cost = True, cost + _COST_ANY
            elif op in (c.LITERAL, c.RANGE):
                lo, hi = (av, av) if op == c.LITERAL else av
                parts.append(_hex(lo) if lo == hi else f"{_hex(lo)}-{_hex(hi)}")
                probe.append(parts[-1])
                cost += 1 if hi < 0x80 else (3 if lo == hi else _COST_WIDE_RANGE)
                top = min(hi, lo + _SAMPLE_PER_RANGE)
                named.extend(chr(x) for x in range(lo, top + 1) if not 0xD800 <= x <= 0xDFFF)
                if icase and ascii_only:
                    parts.append(_ranges_text(tuple(_ascii_swapcase(lo, hi))))
                    probe.append(parts[-1])
            elif op == c.CATEGORY:
                probe.append(_ranges_text(_ASCII_TABLE[av]))
                if ascii_only:
                    parts.append(probe[-1])
                    cost += 3
                elif av == c.CATEGORY_NOT_WORD:
                    not_word, cost = True, cost + _COST_UNICODE[av]
                else:
                    parts.append(_UNICODE_TEXT[av])
                    cost += _COST_UNICODE[av]
            else:
                raise UnsupportedRegex(f"unsupported class item {op}")
        body = "".join(parts)
        if not_word:  # Unicode \W is a negated class in RE2, so it joins by alternation
            if negate:
                raise UnsupportedRegex("[^\\W...] has no linear-time form; write it positively")
            text = "(?:[^\\p{L}\\p{N}_]" + (f"|[{body}]" if body else "") + ")"
        else:
            text = f"[{'^' if negate else ''}{body}]"
        ascii_text = f"[{'^' if negate else ''}{''.join(probe)}]"
        if icase and not ascii_only:
            text, cost = f"(?i:{text})", cost * 2 + 1
            ascii_text = f"(?i:{ascii_text})"
            negative = (c.CATEGORY_NOT_DIGIT, c.CATEGORY_NOT_WORD, c.CATEGORY_NOT_SPACE)
            if any(op == c.CATEGORY and av in negative for op, av in items):
                # Folding a complement's ranges (K, the Kelvin sign, folds to k) is not
                # folding then complementing: only the atom itself answers here.
                ascii_text = text
        return self.atom(text, cost, named, ascii_text)

    def atom(self, text: str, cost: int, named: list[str], probe: str | None = None) -> Piece:
        node = Chars([])
        nodes, _, _ = self.atoms.setdefault(text, ([], named, probe or text))
        nodes.append(node)
        return Piece(node, text, cost)


def _whole(text: str) -> Callable[[str], bool]:
    """RE2's whole-string match as a predicate. Values go in as UTF-8 bytes: on str the
    wrapper maps every match offset back to characters, which doubles the cost."""
    rx = re2.compile(text, _RE2_OPTIONS)

    def match(value: str) -> bool:
        try:
            return rx.fullmatch(value.encode("utf-8")) is not None
        except UnicodeEncodeError:  # a lone surrogate: no pattern can accept it
            return False

    return match


@lru_cache(maxsize=1024)
def _atom_matcher(text: str) -> Callable[[str], bool]:
    return _whole(text)


def _candidates(text: str, named: list[str], probe: str) -> list[str]:
    """Characters the generator may draw for one atom, each tested with RE2 (so a drawn
    character always matches): printable ASCII first (realistic test data), tested with
    the atom's ASCII probe, which agrees with it on ASCII; else the characters the class
    names, else a few common non-ASCII ones, tested with the atom itself. Never NUL (a
    value may not hold it) and never a surrogate (not encodable)."""
    try:
        match = _atom_matcher(probe)
        chars = sorted({ch for ch in _PRINTABLE if match(ch)})
        if chars:
            return chars
        match = _atom_matcher(text)
    except re2.error as exc:
        raise UnsupportedRegex(f"RE2 cannot compile {text}: {_re2_reason(exc)}") from exc
    for pool in (named, _NON_ASCII):
        chars = sorted({ch for ch in pool if ch != "\x00" and match(ch)})
        if chars:
            return chars
    return []


def _re2_reason(exc: Exception) -> str:
    msg = exc.args[0] if exc.args else exc
    return msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)


def _nesting(parsed: Any) -> int:
    """Depth of groups and repeats, found without recursion (the tree is the caller's)."""
    deepest, stack = 0, [(parsed, 1)]
    while stack:
        items, d = stack.pop()
        deepest = max(deepest, d)
        if d > MAX_NESTING:
            break
        for op, av in items:
            if op == c.SUBPATTERN:
                stack.append((av[-1], d + 1))
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
                stack.append((av[2], d + 1))
            elif op == c.BRANCH:
                stack.extend((b, d + 1) for b in av[1])
            elif op in (c.ASSERT, c.ASSERT_NOT):
                stack.append((av[1], d + 1))
            elif op == getattr(c, "ATOMIC_GROUP", None):
                stack.append((av, d + 1))
    return deepest


def _span(node: Node) -> tuple[int, int]:
    """Shortest and longest generated length, without building length sets."""
    if isinstance(node, Chars):
        return 1, 1
    if isinstance(node, Seq):
        spans = [_span(i) for i in node.items]
        return sum(a for a, _ in spans), sum(b for _, b in spans)
    if isinstance(node, Alt):
        spans = [_span(b) for b in node.branches]
        return min(a for a, _ in spans), max(b for _, b in spans)
    assert isinstance(node, Repeat)
    a, b = _span(node.sub)
    return node.lo * a, node.hi * b


class Pattern:
    """A caller pattern, parsed and translated: its generator tree, RE2 text, the length
    range the generator makes and the estimated RE2 program size. Nothing expensive has
    run yet: a planner checks `hi` and `cost` first, then calls `ready`."""

    def __init__(
        self, source: str, piece: Piece, atoms: dict[str, tuple[list[Chars], list[str], str]]
    ):
        self.source = source
        self.root = piece.node
        self.re2_text = piece.text
        self.cost = piece.cost + len(piece.text)
        self.lo, self.hi = _span(self.root)
        self._atoms = atoms
        self._match: Callable[[str], bool] | None = None

    def ready(self) -> Callable[[str], bool]:
        """Compile under RE2 and fill the generator's character choices (once); the
        whole-string matcher, or UnsupportedRegex."""
        if self._match is None:
            for text, (nodes, named, probe) in self._atoms.items():
                chars = _candidates(text, named, probe)
                if not chars:
                    raise UnsupportedRegex(f"{text} matches no character a value may hold")
                for n in nodes:
                    n.chars = chars
            try:
                self._match = _whole(self.re2_text)
            except re2.error as exc:
                raise UnsupportedRegex(f"RE2 cannot compile it: {_re2_reason(exc)}") from exc
        return self._match

    def generate(self, rng: random.Random) -> str:
        self.ready()
        out: list[str] = []
        self.root.emit(rng, out)
        return "".join(out)

    def generate_len(self, rng: random.Random, n: int) -> str:
        """A match of exactly n characters; n must be one of `lengths()`."""
        self.ready()
        out: list[str] = []
        self.root.emit_len(rng, n, out)
        return "".join(out)

    def lengths(self) -> int:
        """Every length the generator can make, as bits (only call once `hi` is bounded)."""
        return self.root.mask()


@lru_cache(maxsize=128)  # bounds memory: each holds an RE2 program of up to max_mem
def compile_pattern(pattern: str) -> Pattern:
    """Parse and translate once (linear in the pattern's length); UnsupportedRegex says
    why a pattern is refused."""
    try:
        parsed = sre.parse(pattern)
    except re.error as exc:
        raise UnsupportedRegex(f"invalid regex: {exc}") from exc
    except RecursionError as exc:
        raise UnsupportedRegex(f"groups nested more than {MAX_NESTING} deep") from exc
    if _nesting(parsed) > MAX_NESTING:
        raise UnsupportedRegex(f"groups nested more than {MAX_NESTING} deep")
    t = _Translator()
    piece = t.seq(parsed, parsed.state.flags, True, True)
    return Pattern(pattern, piece, t.atoms)


def matcher(pattern: str) -> Callable[[str], bool]:
    """Linear-time whole-string match for a pattern (RE2); UnsupportedRegex if refused."""
    return compile_pattern(pattern).ready()


def length_bounds(pattern: str) -> tuple[int, int]:
    """Shortest and longest string the generator can produce for the pattern."""
    p = compile_pattern(pattern)
    return p.lo, p.hi


@lru_cache(maxsize=256)
def allowed_lengths(pattern: str, min_len: int | None, max_len: int | None) -> tuple[int, ...]:
    """Lengths the generator can make within the bounds, () when none, or (-1,) when all
    it makes are within them (then it generates freely). Only for patterns whose `hi` a
    planner has bounded."""
    p = compile_pattern(pattern)
    a = 0 if min_len is None else max(min_len, 0)
    b = p.hi if max_len is None else max_len
    if a <= p.lo and p.hi <= b:
        return (-1,)
    if a > min(b, p.hi):
        return ()
    window = ((1 << (min(b, p.hi) - a + 1)) - 1) << a
    return tuple(_bits(p.lengths() & window))


def generate(pattern: str, rng: random.Random) -> str:
    return compile_pattern(pattern).generate(rng)


def check_regex(pattern: str) -> str | None:
    """None when the pattern is valid, generatable and compiles under RE2, else why not.
    (A planner checks length and cost between parsing and compiling: see registry.)"""
    try:
        matcher(pattern)
    except UnsupportedRegex as exc:
        return refusal(exc)
    return None


def refusal(exc: UnsupportedRegex) -> str:
    msg = str(exc)
    return msg if msg.startswith("invalid regex") else f"unsupported regex: {msg}"
