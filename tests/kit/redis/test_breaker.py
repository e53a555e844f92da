"""The circuit breaker's states, on a clock the test moves."""

from __future__ import annotations

from services.kit.redis.breaker import Breaker, Circuit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_failures_in_a_row_open_the_circuit_and_calls_skip():
    clock = Clock()
    b = Breaker(failures=3, cool_off=10.0, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.failed_once()
    assert b.state == Circuit.CLOSED
    b.succeeded()  # a success in between resets the count
    for _ in range(3):
        assert b.allow()
        b.failed_once()
    assert b.state == Circuit.OPEN and not b.allow()
    clock.now += 4
    assert not b.allow() and b.retry_in() == 6.0


def test_after_the_cool_off_one_trial_call_goes_through():
    clock = Clock()
    b = Breaker(failures=1, cool_off=10.0, clock=clock)
    b.failed_once()
    clock.now += 10
    assert b.allow() and b.state == Circuit.HALF_OPEN
    assert not b.allow()  # the others keep skipping while the trial is out
    b.succeeded()
    assert b.state == Circuit.CLOSED and b.allow()


def test_a_failed_trial_opens_the_circuit_for_another_cool_off():
    clock = Clock()
    b = Breaker(failures=5, cool_off=10.0, clock=clock)
    for _ in range(5):
        b.failed_once()
    clock.now += 11
    assert b.allow()
    b.failed_once()  # one failure is enough in HALF_OPEN
    assert b.state == Circuit.OPEN and b.retry_in() == 10.0
