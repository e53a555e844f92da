"""Themes from words: which occasions, categories or products a request's text is about.

Deterministic and cheap: the text is cut into tokens with a light stemmer (plurals,
possessives), then matched, longest first, against three indexes built once from the
catalogue: occasion synonyms ("marathon runners", "new parents", "wedding registry"),
category names ("jewelry", "luggage") and the distinctive words of product names and brands
("headphones", "espresso", "Lululemon"). A theme is a string a plan resolves back to the
products it names: `occasion:<name>`, `category:<name>` or `product:<words>`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from services.core.intent import Match
from services.core.pools import Occasion, Product, get_pools

_TOKEN = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")
# Words that carry no theme: grammar, quantities, and the nouns of the entities themselves.
STOP = frozenset(
    """
    a an and are as at be by for from in into is it of on or the to with without who
    that this these those their them they we our your my some any all each every per
    than more less most least over under about around between set pack piece inch oz qt
    lb cart order payment user customer product item review record data test shopping
    shop buyer shopper people person someone gift gifts new one two three four five six
    seven eight nine ten first last high low top best classic original premium essential
    pro plus max mini ultra light large small medium big little good great very real day
    days week weeks time times style edition series collection type kind
    """.split()  # noqa: SIM905
)
MAX_PRODUCT_DF = 12  # a word in more product names than this is too common to select by


def stem(word: str) -> str:
    """Plural and possessive endings off: "runners" -> "runner", "babies" -> "baby"."""
    w = word.lower()
    if w.endswith("'s"):
        w = w[:-2]
    elif w.endswith("'"):
        w = w[:-1]
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 4 and w.endswith(("ches", "shes", "sses", "xes")):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def tokens(text: str) -> list[tuple[str, int, int]]:
    """(stem, start, end) of every word."""
    return [(stem(m.group()), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def _key(phrase: str) -> tuple[str, ...]:
    return tuple(t for t, _, _ in tokens(phrase.replace("-", " ")))


@lru_cache(maxsize=1)
def _indexes() -> tuple[
    dict[tuple[str, ...], str], dict[str, str], dict[str, frozenset[int]], tuple[Product, ...]
]:
    pools = get_pools()
    phrases: dict[tuple[str, ...], str] = {}
    for occ in pools.occasions:
        for syn in (*occ.synonyms, occ.name.replace("_", " ")):
            phrases.setdefault(_key(syn), occ.name)  # first occasion claiming it wins
    products = tuple(p for occ in pools.occasions for p in occ.products)
    categories = {}
    for p in products:
        k = _key(p.category)
        if len(k) == 1:
            categories[k[0]] = p.category
    by_word: dict[str, set[int]] = {}
    for i, p in enumerate(products):
        for w in {*_key(p.name), *_key(p.brand)}:
            if len(w) >= 3 and not w.isdigit() and w not in STOP:
                by_word.setdefault(w, set()).add(i)
    words = {w: frozenset(ix) for w, ix in by_word.items() if len(ix) <= MAX_PRODUCT_DF}
    return phrases, categories, words, products


def recognize(text: str) -> list[Match]:
    """Occasion, category and product themes in `text`, longest phrases first."""
    phrases, categories, words, _ = _indexes()
    toks = tokens(text.replace("-", " "))
    taken = [False] * len(toks)
    out: list[Match] = []
    longest = max((len(k) for k in phrases), default=1)
    for n in range(longest, 0, -1):  # occasion synonyms, longest first
        for i in range(len(toks) - n + 1):
            if any(taken[i : i + n]):
                continue
            occ = phrases.get(tuple(t for t, _, _ in toks[i : i + n]))
            if occ is not None and not (n == 1 and toks[i][0] in STOP):
                taken[i : i + n] = [True] * n
                out.append(_match(toks, i, i + n, f"occasion {occ}", f"occasion:{occ}"))
    i = 0
    while i < len(toks):  # categories, then runs of product words ("wireless headphones")
        if taken[i]:
            i += 1
            continue
        w = toks[i][0]
        if w in categories:
            taken[i] = True
            cat = categories[w]
            out.append(_match(toks, i, i + 1, f"category {cat}", f"category:{cat}"))
            i += 1
            continue
        j = i
        while (
            j < len(toks) and not taken[j] and toks[j][0] in words and toks[j][0] not in categories
        ):
            j += 1
        if j > i:
            key = " ".join(t for t, _, _ in toks[i:j])
            n = len(resolve_products(f"product:{key}"))
            meaning = f"products matching {key!r} ({n}; unless an occasion is named)"
            out.append(_match(toks, i, j, meaning, f"product:{key}"))
            i = j
        else:
            i += 1
    out.sort(key=lambda m: m.start)
    return out


def _match(toks: list[tuple[str, int, int]], i: int, j: int, meaning: str, theme: str) -> Match:
    return Match(start=toks[i][1], end=toks[j - 1][2], meaning=meaning, themes=(theme,))


@lru_cache(maxsize=1024)
def resolve_products(theme: str) -> tuple[Product, ...]:
    """The products a `product:` or `category:` theme names (every word of a product
    theme if some product has them all, else any of them)."""
    _, _, words, products = _indexes()
    kind, _, value = theme.partition(":")
    if kind == "category":
        return tuple(p for p in products if p.category == value)
    if kind != "product":
        return ()
    sets = [words[w] for w in value.split() if w in words]
    if not sets:
        return ()
    both = frozenset.intersection(*sets)
    chosen = both or frozenset.union(*sets)
    return tuple(products[i] for i in sorted(chosen))


def resolve(themes: Iterable[str]) -> tuple[Occasion, ...]:
    """Occasions to draw records from: named occasions as they are, categories and
    product words as one occasion of their products each. Product words are the weakest
    sign ("training" may just be a verb): they count only where no occasion or category
    is named. Empty: no theme resolved."""
    pools = get_pools()
    by_name = {o.name: o for o in pools.occasions}
    themes = list(themes)
    if any(not t.startswith("product:") for t in themes):
        themes = [t for t in themes if not t.startswith("product:")]
    out: list[Occasion] = []
    for theme in themes:
        kind, _, value = theme.partition(":")
        if kind == "occasion" and value in by_name:
            out.append(by_name[value])
        elif prods := resolve_products(theme):
            out.append(Occasion(theme, (), prods))
    return tuple(out)
