"""Putting one request's result stream back together: the one rule, for every reader.

A request's chunks arrive keyed by its request id, each with the `correlation-id` of the
attempt that asked (absent when the asker set none) and, from a path whose reruns differ,
the `run-id` of the run that made it. What arrives is not always one clean run: a
redelivered request regenerates its chunks (duplicates, or, from llm/rag/hybrid, a second
run with other data), a retry with the same request id has its own attempt, and a broker
may lose a chunk. `Assembler` is pure state (no I/O, no asyncio, after aiokafka's
SubscriptionState): each chunk offered gets a `Verdict`, and the chunks to hand on, in
order, come back with it. The bridge inbox, the agent client, `testdata publish` and the
datasets log reader all ask it, so they cannot disagree on what one dataset is.

Life cycle (`State`)::

    OPEN ──chunk 0 of some run──► RUNNING ──its final chunk──► COMPLETE
      │                            │  ▲ │
      │                            │  └─┘ chunk 0 of a newer run, restartable caller:
      │                            │      start over with it (RESTARTED_RUN)
      └──────────┬─────────────────┘
                 ▼
              BROKEN: a chunk missing for good (GAP), a newer run for a caller that
                      cannot start over (RESTARTED_RUN), or `finish()` before the final

COMPLETE and BROKEN are terminal: every later chunk is DONE. The rules:

- another request's or another attempt's chunk (correlation differs) is FOREIGN;
- the first chunk 0 delivered fixes the run; runs seen before it are abandoned;
- an index already delivered or buffered is a DUPLICATE; an abandoned run's chunk, or one
  of a run whose chunk 0 never came, is STALE;
- a chunk ahead of the next index WAITs in a buffer of at most `window` chunks (0: the
  transport keeps order, so ahead means lost: GAP at once; None: unbounded, for a reader
  of a whole log that calls `finish()` at its end);
- a newer run's chunk 0 after another run's chunks were delivered can never be spliced
  onto them: a restartable caller (one that has passed nothing on yet) starts over with
  it, any other fails;
- a failed final chunk without a run id continues whichever run is being assembled: the
  machinery that gives up on a request knows no run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from services.kit.wire.messages import ResultChunk


class Verdict(Enum):
    DELIVER = "deliver"  # hand on `Step.chunks` (this one and buffered successors)
    DUPLICATE = "duplicate"  # an index already delivered or buffered: drop
    STALE = "stale"  # an abandoned run's, or a run not started here: drop
    FOREIGN = "foreign"  # another request's or another attempt's: drop
    WAIT = "wait"  # ahead of the next index: buffered
    GAP = "gap"  # a chunk is missing for good: the stream is BROKEN
    RESTARTED_RUN = "restarted_run"  # a newer run: start over (`Step.chunks`) or BROKEN
    DONE = "done"  # the stream is over already: ignored


class State(Enum):
    OPEN = "open"  # nothing delivered yet
    RUNNING = "running"  # chunks of one run delivered, not yet its final
    COMPLETE = "complete"  # the final chunk delivered
    BROKEN = "broken"  # `problem` says why


#: Verdicts that hand nothing on and change nothing: the chunk is dropped.
DROPPED = frozenset({Verdict.DUPLICATE, Verdict.STALE, Verdict.FOREIGN, Verdict.DONE})


@dataclass(frozen=True)
class Step:
    """What to do with one offered chunk."""

    verdict: Verdict
    chunks: tuple[ResultChunk, ...] = ()  # to hand on now, in order
    problem: str | None = None  # set when this step broke the stream

    @property
    def restarted(self) -> bool:
        """The caller must forget what it was handed so far: `chunks` start a new run."""
        return self.verdict is Verdict.RESTARTED_RUN and self.problem is None


RESTARTED = (
    "generation restarted (the request was redelivered) after part of an earlier, "
    "different run was sent; retry the request"
)


@dataclass
class Assembler:
    """One request's chunk stream, as one caller must see it (see the module docstring)."""

    request_id: str
    correlation: str | None = None  # None: the caller tells no attempts apart
    restartable: bool = False
    window: int | None = 0
    state: State = State.OPEN
    run: str | None = None  # the run being delivered ("" for a path without run ids)
    old_runs: set[str] = field(default_factory=set)
    next_index: int = 0
    restarts: int = 0
    problem: str | None = None
    missing_index: int | None = None  # the chunk a GAP is about
    _ahead: dict[tuple[str, int], ResultChunk] = field(default_factory=dict)

    # ---- asking --------------------------------------------------------------------------
    def judge(self, chunk: ResultChunk, correlation: str | None, run: str = "") -> Verdict:
        """The verdict `offer` would give, changing nothing."""
        if chunk.request_id != self.request_id or (
            self.correlation is not None and correlation != self.correlation
        ):
            return Verdict.FOREIGN
        if self.state in (State.COMPLETE, State.BROKEN):
            return Verdict.DONE
        index = chunk.chunk_index
        if self.run is not None and run != self.run and not self._ends_run(chunk, run):
            if run in self.old_runs:
                return Verdict.STALE
            if index == 0:
                return Verdict.RESTARTED_RUN
            return Verdict.WAIT if self._room() else Verdict.STALE
        run = self.run if self.run is not None else run
        if index < self.next_index or (run, index) in self._ahead:
            return Verdict.DUPLICATE
        if index == self.next_index:
            return Verdict.DELIVER
        if (final := self._final_index(run)) is not None and index > final:
            return Verdict.STALE  # beyond its run's final chunk
        return Verdict.WAIT if self._room() else Verdict.GAP

    # ---- telling -------------------------------------------------------------------------
    def offer(self, chunk: ResultChunk, correlation: str | None, run: str = "") -> Step:
        """Judge the chunk and act on it: buffer it, deliver it, start over, or break."""
        verdict = self.judge(chunk, correlation, run)
        if verdict in DROPPED:
            return Step(verdict)
        if self.run is not None and self._ends_run(chunk, run):
            run = self.run
        if verdict is Verdict.WAIT:
            self._ahead[(run, chunk.chunk_index)] = chunk
            return Step(verdict)
        if verdict is Verdict.GAP:
            return Step(verdict, problem=self._break_gap(self.next_index))
        if verdict is Verdict.RESTARTED_RUN:
            if not self.restartable:
                return Step(verdict, problem=self._break(RESTARTED))
            assert self.run is not None
            self.old_runs.add(self.run)
            self.restarts += 1
            self.run, self.next_index = None, 0
        return Step(verdict, self._deliver(chunk, run))

    def finish(self) -> str | None:
        """No more chunks will come (the log ends, the caller stops waiting): unless
        complete, the stream is BROKEN; returns its problem."""
        if self.state in (State.OPEN, State.RUNNING):
            missing = self.missing()
            if missing and missing[0] < self._last_known():
                self._break_gap(missing[0])
            elif self.next_index:
                self._break(f"no final chunk after chunk {self.next_index - 1}")
            else:
                self._break("no chunk came")
        return self.problem

    def missing(self) -> list[int]:
        """Indexes not here, from the next one up to the current run's buffered final
        (or its furthest buffered chunk, and the one after it, when no final is known)."""
        run = self._current_run()
        top = self._last_known()
        have = {i for (r, i) in self._ahead if r == run}
        return [i for i in range(self.next_index, top + 1) if i not in have]

    @property
    def done(self) -> bool:
        return self.state in (State.COMPLETE, State.BROKEN)

    # ---- inside --------------------------------------------------------------------------
    def _deliver(self, chunk: ResultChunk, run: str) -> tuple[ResultChunk, ...]:
        if self.run is None:  # the first chunk 0 fixes the run; others seen are abandoned
            self.run = run
            self.old_runs |= {r for (r, _) in self._ahead if r != run}
            self._ahead = {k: c for k, c in self._ahead.items() if k[0] == run}
            self.state = State.RUNNING
        out = [chunk]
        self.next_index = chunk.chunk_index + 1
        while not out[-1].is_final and (nxt := self._ahead.pop((run, self.next_index), None)):
            out.append(nxt)
            self.next_index += 1
        if out[-1].is_final:
            self.state = State.COMPLETE
            self._ahead.clear()
        return tuple(out)

    def _ends_run(self, chunk: ResultChunk, run: str) -> bool:
        return run == "" and chunk.is_final and not chunk.success

    def _room(self) -> bool:
        return self.window is None or len(self._ahead) < self.window

    def _current_run(self) -> str:
        """The run being delivered; before one is, the run of the latest buffered chunk."""
        if self.run is not None:
            return self.run
        return next(reversed(self._ahead))[0] if self._ahead else ""

    def _final_index(self, run: str) -> int | None:
        return next((i for (r, i), c in self._ahead.items() if r == run and c.is_final), None)

    def _last_known(self) -> int:
        run = self._current_run()
        final = self._final_index(run)
        if final is not None:
            return final
        return max((i + 1 for (r, i) in self._ahead if r == run), default=self.next_index)

    def _break_gap(self, index: int) -> str:
        self.missing_index = index
        return self._break(f"chunk {index} is missing (result chunks were lost in the broker)")

    def _break(self, problem: str) -> str:
        self.state, self.problem = State.BROKEN, problem
        self._ahead.clear()
        return problem
