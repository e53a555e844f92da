"""The reply-stream assembler, without a broker: every way a result stream arrives."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.kit.wire.assembler import Assembler, State, Verdict
from services.kit.wire.messages import ResultChunk

D, DUP, STALE, FOREIGN, WAIT, GAP, RESTARTED, DONE = (
    Verdict.DELIVER,
    Verdict.DUPLICATE,
    Verdict.STALE,
    Verdict.FOREIGN,
    Verdict.WAIT,
    Verdict.GAP,
    Verdict.RESTARTED_RUN,
    Verdict.DONE,
)


def chunk(index: int, final: bool = False, rid: str = "r", data: str = "", ok: bool = True):
    return ResultChunk(
        request_id=rid, chunk_index=index, is_final=final, success=ok, data=data or f"{index}"
    )


def feed(asm: Assembler, *items) -> list[tuple[Verdict, list[str]]]:
    """(verdict, delivered data) per offered (index, final, run[, correlation])."""
    out = []
    for item in items:
        index, final, run, *corr = item
        step = asm.offer(chunk(index, final, data=f"{run}{index}"), corr[0] if corr else None, run)
        out.append((step.verdict, [c.data for c in step.chunks]))
    return out


def test_in_order_chunks_are_delivered_then_the_stream_is_complete():
    asm = Assembler("r")
    assert asm.state is State.OPEN
    assert feed(asm, (0, False, ""), (1, False, ""), (2, True, "")) == [
        (D, ["0"]),
        (D, ["1"]),
        (D, ["2"]),
    ]
    assert asm.state is State.COMPLETE and asm.done and asm.finish() is None
    assert feed(asm, (3, True, "")) == [(DONE, [])]


def test_duplicates_of_a_redelivery_without_run_ids_are_dropped():
    asm = Assembler("r")
    verdicts = feed(asm, *[(i, i == 2, "") for i in (0, 0, 1, 0, 1, 2, 2)])
    assert [v for v, _ in verdicts] == [D, DUP, D, DUP, DUP, D, DONE]
    assert [d for _, ds in verdicts for d in ds] == ["0", "1", "2"]


def test_out_of_order_chunks_wait_within_the_window():
    asm = Assembler("r", window=4)
    assert feed(asm, (0, False, ""), (2, False, ""), (3, True, ""), (2, False, "")) == [
        (D, ["0"]),
        (WAIT, []),
        (WAIT, []),
        (DUP, []),  # already buffered
    ]
    assert asm.missing() == [1]
    assert feed(asm, (1, False, "")) == [(D, ["1", "2", "3"])]  # the final came early
    assert asm.state is State.COMPLETE


def test_more_chunks_ahead_than_the_window_is_a_gap_naming_the_missing_one():
    asm = Assembler("r", window=2)
    assert [v for v, _ in feed(asm, (0, False, ""), (2, False, ""), (3, False, ""))] == [
        D,
        WAIT,
        WAIT,
    ]
    step = asm.offer(chunk(4), None)
    assert step.verdict is GAP and step.problem and "chunk 1 is missing" in step.problem
    assert asm.state is State.BROKEN and asm.missing_index == 1
    assert asm.offer(chunk(1), None).verdict is DONE


def test_with_no_window_a_chunk_ahead_is_a_gap_at_once():
    """An ordered transport (one partition, one producer per run): ahead means lost."""
    asm = Assembler("r")
    assert asm.offer(chunk(0), None).verdict is D
    step = asm.offer(chunk(2, final=True), None)
    assert step.verdict is GAP and asm.missing_index == 1 and not step.chunks
    assert asm.offer(chunk(1), None).verdict is DONE


def test_a_missing_first_chunk_is_a_gap_too():
    asm = Assembler("r")
    assert asm.offer(chunk(1), None).verdict is GAP and asm.missing_index == 0


def test_other_requests_and_other_attempts_are_foreign():
    asm = Assembler("r", correlation="mine")
    assert asm.offer(chunk(0, rid="other"), "mine").verdict is FOREIGN
    assert asm.offer(chunk(0), "an-earlier-attempt").verdict is FOREIGN
    assert asm.offer(chunk(0), None).verdict is FOREIGN
    assert asm.offer(chunk(0), "mine").verdict is D
    anyone = Assembler("r")  # a caller that set no correlation takes any attempt's
    assert anyone.offer(chunk(0), "whoever").verdict is D


def test_a_newer_run_fails_a_caller_that_cannot_start_over():
    asm = Assembler("r")
    assert feed(asm, (0, False, "A"), (1, False, "A")) == [(D, ["A0"]), (D, ["A1"])]
    step = asm.offer(chunk(0), None, "B")
    assert step.verdict is RESTARTED and not step.restarted and not step.chunks
    assert step.problem and "generation restarted" in step.problem
    assert asm.state is State.BROKEN and asm.run == "A"
    assert feed(asm, (1, False, "B"), (2, True, "A")) == [(DONE, []), (DONE, [])]


def test_a_restartable_caller_starts_over_with_the_newer_run_whole():
    asm = Assembler("r", restartable=True)
    got = feed(asm, (0, False, "A"), (0, False, "B"), (1, False, "A"), (1, True, "B"))
    assert got == [(D, ["A0"]), (RESTARTED, ["B0"]), (STALE, []), (D, ["B1"])]
    assert asm.state is State.COMPLETE and asm.run == "B" and asm.old_runs == {"A"}
    assert asm.restarts == 1


def test_two_interleaved_runs_never_mix():
    asm = Assembler("r", restartable=True)
    order = [("A", 0), ("B", 0), ("A", 1), ("B", 1), ("A", 2), ("B", 2)]
    got = feed(asm, *[(i, i == 2, run) for run, i in order])
    delivered_after_restart = [d for v, ds in got[1:] for d in ds]
    assert delivered_after_restart == ["B0", "B1", "B2"]
    assert asm.state is State.COMPLETE


def test_a_newer_runs_early_chunks_wait_for_its_start_within_the_window():
    asm = Assembler("r", restartable=True, window=4)
    assert feed(asm, (0, False, "A"), (1, False, "B"), (0, False, "B"), (2, True, "B")) == [
        (D, ["A0"]),
        (WAIT, []),
        (RESTARTED, ["B0", "B1"]),
        (D, ["B2"]),
    ]


def test_a_run_whose_start_was_never_seen_is_stale_without_a_window():
    asm = Assembler("r", restartable=True)
    assert feed(asm, (0, False, "A"), (1, False, "B"), (1, True, "A")) == [
        (D, ["A0"]),
        (STALE, []),
        (D, ["A1"]),
    ]


def test_runs_seen_before_the_first_delivery_are_abandoned():
    asm = Assembler("r", restartable=True, window=4)
    assert feed(asm, (1, False, "A"), (0, False, "B"), (0, False, "A")) == [
        (WAIT, []),
        (D, ["B0"]),
        (STALE, []),
    ]
    assert asm.old_runs == {"A"} and asm.restarts == 0


def test_a_failed_final_without_a_run_id_ends_the_run_being_assembled():
    """The machinery that gives up on a request (answer_failure) knows no run."""
    asm = Assembler("r")
    assert feed(asm, (0, False, "A"), (1, False, "A")) == [(D, ["A0"]), (D, ["A1"])]
    step = asm.offer(chunk(2, final=True, ok=False), None, "")
    assert step.verdict is D and not step.chunks[0].success
    assert asm.state is State.COMPLETE
    # a successful chunk without a run id is no part of run A, though
    other = Assembler("r")
    feed(other, (0, False, "A"))
    assert other.offer(chunk(0), None, "").verdict is RESTARTED


def test_a_late_final_after_the_end_is_ignored():
    asm = Assembler("r", restartable=True)
    feed(asm, (0, False, "A"), (1, True, "A"))
    assert asm.offer(chunk(1, final=True), None, "B").verdict is DONE
    assert asm.offer(chunk(1, final=True), None, "A").verdict is DONE


def test_a_chunk_beyond_its_runs_final_is_stale():
    asm = Assembler("r", window=None)
    assert feed(asm, (0, False, ""), (2, True, ""), (3, False, "")) == [
        (D, ["0"]),
        (WAIT, []),
        (STALE, []),
    ]


def test_judging_changes_nothing():
    asm = Assembler("r", restartable=True)
    feed(asm, (0, False, "A"))
    before = (asm.state, asm.run, asm.next_index, set(asm.old_runs))
    assert asm.judge(chunk(0), None, "B") is RESTARTED
    assert asm.judge(chunk(1), None, "A") is D
    assert asm.judge(chunk(3), None, "A") is GAP
    assert (asm.state, asm.run, asm.next_index, asm.old_runs) == before


@pytest.mark.parametrize(
    ("items", "problem", "missing_index"),
    [
        ([(0, False, "A"), (2, True, "A")], "chunk 1 is missing", 1),
        ([(1, False, "A"), (3, True, "A")], "chunk 0 is missing", 0),
        ([(0, False, "A"), (1, False, "A")], "no final chunk after chunk 1", None),
        ([(0, False, "A"), (2, False, "A")], "chunk 1 is missing", 1),
        ([], "no chunk came", None),
    ],
)
def test_finish_says_what_is_missing(items, problem, missing_index):
    """A reader of a whole log (no window) learns at its end what never came."""
    asm = Assembler("r", window=None)
    feed(asm, *items)
    assert problem in (asm.finish() or "")
    assert asm.state is State.BROKEN and asm.missing_index == missing_index


def test_missing_lists_every_hole_up_to_the_final():
    asm = Assembler("r", window=None)
    feed(asm, (0, False, "A"), (2, False, "A"), (5, True, "A"))
    assert asm.missing() == [1, 3, 4]


@st.composite
def arrivals(draw):
    """Two runs of one request (A then B, each in order, B possibly cut short), their
    chunks interleaved, some duplicated."""
    n_a, n_b = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    a = [("A", i, i == n_a - 1) for i in range(n_a)]
    b = [("B", i, i == n_b - 1) for i in range(n_b)][: draw(st.integers(1, n_b))]
    merged, ia, ib = [], 0, 0
    while ia < len(a) or ib < len(b):
        take_a = ib >= len(b) or (ia < len(a) and draw(st.booleans()))
        item = a[ia] if take_a else b[ib]
        ia, ib = (ia + 1, ib) if take_a else (ia, ib + 1)
        merged.append(item)
        if draw(st.booleans()) and draw(st.booleans()):
            merged.append(item)  # a duplicate
    return merged


@settings(max_examples=300, derandomize=True)
@given(arrivals(), st.booleans())
def test_whatever_arrives_the_caller_gets_one_run_in_order(items, restartable):
    asm = Assembler("r", restartable=restartable)
    since_restart: list[tuple[str, int]] = []
    for run, index, final in items:
        step = asm.offer(chunk(index, final), None, run)
        if step.restarted:
            since_restart = []
        since_restart += [(run, c.chunk_index) for c in step.chunks]
    runs = {r for r, _ in since_restart}
    assert len(runs) <= 1  # never a mix
    assert [i for _, i in since_restart] == list(range(len(since_restart)))
    if asm.state is State.COMPLETE:
        (run,) = runs
        whole = [i for r, i, _ in items if r == run]
        assert len(since_restart) == max(whole) + 1
