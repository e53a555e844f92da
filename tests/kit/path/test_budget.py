"""The generation budget and time-sized slices, as pure state (no broker, no event loop)."""

from __future__ import annotations

import time

from services.core.report import ErrorKind
from services.kit.path.errors import Abandoned, OverBudget
from services.kit.path.generation import Budget
from services.traditional.service import MAX_SLICE, SlicePacer


def test_the_budget_ends_at_the_callers_deadline_when_that_comes_first():
    now_ms = int(time.time() * 1000)
    budget = Budget.start(300, deadline_ms=now_ms + 2_000)
    assert budget.ends < budget.started + 3
    stop = budget.stop(5, 10)
    assert isinstance(stop, Abandoned) and stop.kind == ErrorKind.EXPIRED


def test_the_budget_itself_ends_a_request_whose_caller_waits_longer():
    budget = Budget.start(0.5, deadline_ms=int(time.time() * 1000) + 60_000)
    assert budget.ends == budget.started + 0.5
    stop = budget.stop(5, 10)
    assert isinstance(stop, OverBudget) and "0.5 s spent after 5 of 10 records" in str(stop)
    assert not budget.spent()
    assert Budget(1.0, time.monotonic() - 2).spent()


def test_slices_start_at_one_record_and_grow_to_the_target_time():
    pacer = SlicePacer(target_s=0.005)
    sizes = []
    for _ in range(7):
        n = pacer.size(100_000)
        sizes.append(n)
        pacer.took(n, n * 2**-16)  # 15 us a record (exact in binary)
    assert sizes == [1, 4, 16, 64, 256, 327, 327]  # 327 x 15 us = 5 ms


def test_a_costly_record_gets_a_slice_of_its_own():
    pacer = SlicePacer(target_s=0.005)
    pacer.took(1, 0.040)  # one 40 ms record: a 10,000-field custom schema
    assert pacer.size(1000) == 1
    pacer.took(1, 0.001)  # cheaper ones again: growth resumes, a step at a time
    assert pacer.size(1000) == 4


def test_a_slice_never_exceeds_what_is_wanted_nor_the_cap():
    pacer = SlicePacer(target_s=0.005)
    assert pacer.size(0) == 1 and pacer.size(3) == 1
    pacer.took(MAX_SLICE, 0.0)  # too fast to measure
    assert pacer.size(10**9) == MAX_SLICE and pacer.size(7) == 7
