"""What the engine tells a model on a retry, and what it salvages from a cut-off answer.

Pure functions, no I/O:
* `quote_errors` groups validation errors by problem, naming the affected `_index`es;
* `coherence_notes` says concretely why a cart/order/review record scored low;
* `salvage_records` reads the complete objects of a JSON array the model did not finish
  (it ran out of output tokens), so only the missing records need asking for again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from services.core.coherence import (
    TOL,
    affinity,
    chronology,
    items_of,
    line_sum,
    num,
    quantities,
    sentiment,
)
from services.core.models import FieldError

VALUE_LIMIT = 60


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= VALUE_LIMIT else text[: VALUE_LIMIT - 3] + "..."


def _indices(idx: Sequence[int]) -> str:
    label = "_index" if len(idx) == 1 else "_indexes"
    shown = ", ".join(str(i) for i in idx[:8])
    more = f" and {len(idx) - 8} more" if len(idx) > 8 else ""
    return f"{label} {shown}{more}"


def quote_errors(errors: Mapping[int, Iterable[FieldError]]) -> list[str]:
    """One line per distinct (path, message), listing the record indexes that have it:
    `_indexes 3, 7: currency: not one of ['USD', 'CAD'] (got "EUR")`. Index-specific
    array positions (`items[2].price`) are kept: they locate the problem exactly."""
    grouped: dict[tuple[str, str], tuple[list[int], Any]] = {}
    for index, errs in errors.items():
        for e in errs:
            key = (e.path, e.message)
            if key not in grouped:
                grouped[key] = ([], e.value)
            if index not in grouped[key][0]:
                grouped[key][0].append(index)
    lines = []
    for (path, message), (idx, value) in grouped.items():
        got = f" (got {_short(value)})" if value is not None else ""
        lines.append(f"{_indices(idx)}: {path}: {message}{got}")
    return lines


def _money_notes(rec: Mapping[str, Any], entity: str) -> list[str]:
    notes = []
    items = items_of(rec)
    sub, tax, total = (num(rec.get(k)) for k in ("subtotal", "tax", "total"))
    lines = line_sum(items)
    if lines is not None and sub is not None and abs(lines - sub) > TOL:
        notes.append(f"subtotal {sub:.2f} is not sum(quantity x price) = {lines:.2f}")
    if sub is not None and tax is not None and total is not None:
        if entity == "order":
            ship = num(rec.get("shipping")) or 0.0
            disc = num(rec.get("discount")) or 0.0
            expected = sub + tax + ship - disc
            formula = "subtotal + tax + shipping - discount"
        else:
            expected, formula = sub + tax, "subtotal + tax"
        if abs(expected - total) > TOL:
            notes.append(f"total {total:.2f} is not {formula} = {expected:.2f}")
    pay = rec.get("payment")
    if entity == "order" and isinstance(pay, dict) and total is not None:
        amount = num(pay.get("amount"))
        if amount is not None and abs(amount - total) > TOL:
            notes.append(f"payment.amount {amount:.2f} is not the total {total:.2f}")
    return notes


def coherence_notes(entity: str, rec: Mapping[str, Any]) -> list[str]:
    """Concrete reasons a record is incoherent, in the scorer's terms (may be empty)."""
    rec = dict(rec)
    if entity in ("cart", "order"):
        notes = _money_notes(rec, entity)
        items = items_of(rec)
        if items and affinity(items) < 1.0:
            notes.append("the items do not all belong to one shopping occasion")
        if items and quantities(items) < 1.0:
            notes.append("an item quantity is outside 1..10")
        keys = (
            ("created_at", "updated_at")
            if entity == "cart"
            else ("created_at", "paid_at", "shipped_at", "delivered_at")
        )
        if chronology(rec, keys) < 1.0:
            notes.append(f"timestamps must be present and in order: {' <= '.join(keys)}")
        return notes
    if entity == "review":
        rating = num(rec.get("rating"))
        if rating is None:
            return ["rating is missing or not a number"]
        expected = "positive" if rating >= 4 else "neutral" if rating == 3 else "negative"
        got = sentiment(f"{rec.get('title', '')}. {rec.get('body', '')}")
        if got != expected:
            return [f"rating {rating:g} calls for a {expected} title and body, they read {got}"]
    return []


def salvage_records(text: str) -> list[dict[str, Any]]:
    """The complete objects at the start of a JSON array that was cut off.

    Looks for the first `[` followed by `{` and reads objects until one is incomplete.
    Returns [] when nothing complete can be read; never guesses at a partial object.
    """
    decoder = json.JSONDecoder()
    start = text.find("[")
    while start != -1:
        pos = start + 1
        out: list[dict[str, Any]] = []
        while True:
            while pos < len(text) and text[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(text) or text[pos] != "{":
                break
            try:
                value, pos = decoder.raw_decode(text, pos)
            except ValueError:
                break
            if not isinstance(value, dict):
                break
            out.append(value)
        if out:
            return out
        start = text.find("[", start + 1)
    return []
