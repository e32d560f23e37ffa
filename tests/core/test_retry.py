"""engine.core.retry: the bounce profile schedule (docs/gateway-behaviour.md §4)."""

from __future__ import annotations

import pytest

from engine.core.retry import (
    BounceProfile,
    Growth,
    delay_warning_due,
    expires_at,
    next_attempt,
    retry_interval,
)

DEFAULT = BounceProfile()
T0 = 1_767_225_600.0


def run_until_bounce(profile: BounceProfile, start: float = T0) -> list[float]:
    """Attempt times of a message that never gets through (first attempt included)."""
    times = [start]
    while (when := next_attempt(start, len(times), times[-1], profile)) is not None:
        times.append(when)
    return times


def test_defaults_from_the_cisco_table() -> None:
    assert (DEFAULT.max_retries, DEFAULT.max_queue_seconds) == (100, 259_200)
    assert (DEFAULT.initial_retry, DEFAULT.max_retry) == (60, 3_600)
    assert DEFAULT.growth is Growth.DOUBLING and DEFAULT.delay_warnings is False


def test_schedule_doubles_from_60_and_caps_at_3600() -> None:
    intervals = [retry_interval(n, DEFAULT) for n in range(1, 10)]
    assert intervals == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
    assert retry_interval(10_000, DEFAULT) == 3600  # no overflow


def test_first_retry_comes_initial_wait_after_first_attempt() -> None:
    assert next_attempt(T0, 1, T0, DEFAULT) == T0 + 60
    assert next_attempt(T0, 2, T0 + 60, DEFAULT) == T0 + 180


def test_72h_expiry_bounces_before_an_attempt_past_max_time_in_queue() -> None:
    times = run_until_bounce(DEFAULT)
    assert times[-1] <= expires_at(T0, DEFAULT)
    # The next wait would have crossed the limit, so the bounce comes now, not at expiry.
    assert times[-1] + retry_interval(len(times), DEFAULT) > expires_at(T0, DEFAULT)
    assert len(times) - 1 < DEFAULT.max_retries  # with the defaults, time runs out first
    assert len(times) - 1 == 6 + (259_200 - 3_780) // 3_600  # 6 growing waits, then hourly


def test_attempt_exactly_at_expiry_is_still_made() -> None:
    profile = BounceProfile(max_queue_seconds=60)
    assert next_attempt(T0, 1, T0, profile) == T0 + 60
    assert next_attempt(T0, 1, T0 + 1, profile) is None


def test_100_retries_then_hard_bounce() -> None:
    profile = BounceProfile(max_queue_seconds=10**9)
    times = run_until_bounce(profile)
    assert len(times) == 1 + 100  # the first attempt and 100 retries
    assert next_attempt(T0, 100, T0, profile) is not None  # 99 retries done: one more
    assert next_attempt(T0, 101, T0, profile) is None


def test_max_retries_zero_bounces_after_first_attempt() -> None:
    assert next_attempt(T0, 1, T0, BounceProfile(max_retries=0)) is None


def test_constant_growth() -> None:
    profile = BounceProfile(growth=Growth.CONSTANT, initial_retry=300)
    assert [retry_interval(n, profile) for n in (1, 2, 50)] == [300, 300, 300]


@pytest.mark.parametrize("bad", [0, -1])
def test_invalid_counts_raise(bad: int) -> None:
    with pytest.raises(ValueError, match="attempts_done"):
        next_attempt(T0, bad, T0, DEFAULT)
    with pytest.raises(ValueError, match="retry_number"):
        retry_interval(bad, DEFAULT)


def test_delay_warnings_off_by_default() -> None:
    assert not delay_warning_due(DEFAULT, attempt_number=2, reply_code=451)


@pytest.mark.parametrize(
    ("attempt", "code", "due"),
    [
        (2, 451, True),
        (2, 421, True),
        (1, 451, False),
        (3, 451, False),
        (2, 550, False),
        (2, None, False),
    ],
)
def test_delay_warning_only_on_second_attempt_after_4xx(
    attempt: int, code: int | None, due: bool
) -> None:
    profile = BounceProfile(delay_warnings=True)
    assert delay_warning_due(profile, attempt_number=attempt, reply_code=code) is due
