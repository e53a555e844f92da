"""The restart policy alone: backoff, reset after a stable run, crash-loop detection."""

from __future__ import annotations

from services.kit.ops.restart import RestartPolicy


def quick_deaths(policy: RestartPolicy, times: list[float], uptime: float = 1.0) -> list[float]:
    """Start at each `t - uptime`, die at `t`; the delays the policy asked for."""
    delays = []
    for t in times:
        policy.started(t - uptime)
        delays.append(policy.exited(t))
    return delays


def test_backoff_doubles_from_half_a_second_up_to_the_cap():
    p = RestartPolicy()
    assert quick_deaths(p, [100.0 * i for i in range(1, 9)]) == [
        0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0
    ]  # fmt: skip


def test_a_run_of_a_minute_resets_the_backoff():
    p = RestartPolicy()
    quick_deaths(p, [1.0, 3.0, 6.0])
    p.started(10.0)
    assert p.exited(70.0) == 0.5  # up 60 s: back to the first delay
    assert p.exits == 1


def test_five_exits_within_a_minute_is_crash_looping():
    p = RestartPolicy()
    quick_deaths(p, [1.0, 2.0, 3.0, 4.0])
    assert not p.crash_looping
    quick_deaths(p, [50.0])
    assert p.crash_looping and p.exits == 5


def test_exits_spread_over_more_than_the_window_are_not_a_loop():
    p = RestartPolicy()
    quick_deaths(p, [0.0, 16.0, 32.0, 48.0, 64.0], uptime=15.0)
    assert not p.crash_looping  # the first exit left the 60 s window


def test_crash_looping_lasts_until_a_run_stays_up():
    p = RestartPolicy()
    quick_deaths(p, [1.0, 2.0, 3.0, 4.0, 5.0])
    # exits at the capped delay age out of the window, yet the service is still broken
    quick_deaths(p, [40.0, 80.0, 120.0])
    assert p.crash_looping
    p.started(130.0)
    assert p.settle(150.0) is False and p.crash_looping  # up 20 s: not yet
    assert p.settle(190.0) is True  # up 60 s: recovered, reported once
    assert not p.crash_looping and p.exits == 0
    assert p.settle(200.0) is False
    assert p.exited(200.0) == 0.5


def test_settle_without_a_running_process_changes_nothing():
    p = RestartPolicy(initial_delay_s=0.1, max_delay_s=0.4)
    quick_deaths(p, [1.0])
    assert p.settle(1000.0) is False
    assert p.exited(1001.0) == 0.2  # still backing off: it never ran meanwhile
