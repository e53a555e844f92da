"""The anchor rule every ingress applies (services.core.reproducible)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.core.models import DEFAULT_ANCHOR, GenerateRequest
from services.core.reproducible import format_anchor, parse_anchor, pin

NOW = datetime(2031, 7, 4, 12, 0, tzinfo=UTC)
GIVEN = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seed", "anchor", "want_seed", "want_anchor"),
    [
        (7, GIVEN, 7, GIVEN),  # both given: kept
        (7, None, 7, DEFAULT_ANCHOR),  # a seed alone: the fixed anchor, not "now"
        (None, GIVEN, 99, GIVEN),  # an anchor alone: the ingress's seed
        (None, None, 99, NOW),  # neither: a fresh dataset, dated now
        (0, None, 0, DEFAULT_ANCHOR),  # seed 0 is a seed
    ],
)
def test_pin_fills_only_what_is_missing(seed, anchor, want_seed, want_anchor):
    req = pin(
        GenerateRequest(entity="cart", seed=seed, anchor=anchor), request_id="r", seed=99, now=NOW
    )
    assert (req.request_id, req.seed, req.anchor) == ("r", want_seed, want_anchor)
    assert pin(req, request_id="other", seed=1, now=DEFAULT_ANCHOR) == req  # idempotent


@pytest.mark.parametrize(
    "text",
    ["2026-03-01T00:00:00Z", "2026-03-01T02:00:00+02:00", "2026-03-01T00:00:00", "2026-03-01"],
)
def test_one_instant_parses_to_one_utc_anchor(text):
    assert parse_anchor(text) == GIVEN
    assert format_anchor(parse_anchor(text)) == "2026-03-01T00:00:00Z"


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01T00:00:00Z", "2026-03-01T25:00Z"])
def test_what_is_no_instant_is_a_value_error(text):
    with pytest.raises(ValueError):
        parse_anchor(text)
