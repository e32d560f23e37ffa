"""Bounce profiles: when to retry a deferred message, and when to give up.

Theory of operation
-------------------
Times are POSIX seconds on the engine's clock, passed in. A message's first
attempt is at ``first_attempt_at``; every later attempt is a *retry*. After a
failed attempt at ``now`` (``attempts_done`` attempts so far, the first one
included), :func:`next_attempt` gives the time of the next retry, or None when
the message must hard-bounce now (docs/gateway-behaviour.md §4, CISCO 9.1 UG p.24-39):

* right after the retry that uses up ``max_retries``;
* immediately before any attempt that would fall past ``max_queue_seconds``
  after the first attempt (the bounce comes now, not at the expiry time).

Retry *n* waits ``initial_retry * 2**(n-1)`` seconds, capped at ``max_retry``
(doubling is [INF]; ``growth = "constant"`` waits ``initial_retry`` every time,
still capped). With the defaults the 72-hour limit ends the schedule before the
100th retry: 60, 120, …, 1920, then 3600 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "BounceProfile",
    "Growth",
    "delay_warning_due",
    "expires_at",
    "next_attempt",
    "retry_interval",
]


class Growth(StrEnum):
    """How retry intervals grow ([INF]: the appliance's curve is undocumented)."""

    DOUBLING = "doubling"
    CONSTANT = "constant"


@dataclass(frozen=True, slots=True)
class BounceProfile:
    """A bounce profile; defaults from the AsyncOS Advanced Configuration Guide, Table 2-5.

    Attributes:
        name: the profile's name (``bounce_profile`` in Destination Controls refers to it).
        max_retries: retries after the first attempt before a hard bounce.
        max_queue_seconds: maximum time in queue, from the first attempt.
        initial_retry: the wait before the first retry.
        max_retry: the cap on any wait between retries.
        growth: the interval curve.
        delay_warnings: send delay-warning DSNs (off by default; CISCO 212837).
    """

    name: str = "default"
    max_retries: int = 100
    max_queue_seconds: float = 259_200.0
    initial_retry: float = 60.0
    max_retry: float = 3_600.0
    growth: Growth = Growth.DOUBLING
    delay_warnings: bool = False


def retry_interval(retry_number: int, profile: BounceProfile) -> float:
    """The wait before retry ``retry_number`` (1 = the first retry).

    Args:
        retry_number: which retry, counting from 1.
        profile: the bounce profile.

    Returns:
        Seconds, never more than ``max_retry``.

    Raises:
        ValueError: ``retry_number`` is below 1.
    """
    if retry_number < 1:
        raise ValueError(f"retry_number must be >= 1, got {retry_number!r}")
    if profile.growth is Growth.CONSTANT:
        return min(profile.initial_retry, profile.max_retry)
    # [INF] docs/gateway-behaviour.md §4: doubling from the initial wait, capped at the maximum. The
    # exponent is bounded so a large retry number cannot overflow the float.
    return min(profile.initial_retry * 2.0 ** min(retry_number - 1, 64), profile.max_retry)


def expires_at(first_attempt_at: float, profile: BounceProfile) -> float:
    """The end of the maximum time in queue."""
    return first_attempt_at + profile.max_queue_seconds


def next_attempt(
    first_attempt_at: float, attempts_done: int, now: float, profile: BounceProfile
) -> float | None:
    """When to try again after a failed attempt, or None to hard-bounce now.

    Args:
        first_attempt_at: time of the first delivery attempt.
        attempts_done: attempts made so far, the first one included (>= 1).
        now: time of the attempt that just failed.
        profile: the bounce profile.

    Returns:
        The time of the next retry, or None: the retry count is used up, or the next
        attempt would fall past the maximum time in queue.

    Raises:
        ValueError: ``attempts_done`` is below 1.
    """
    if attempts_done < 1:
        raise ValueError(f"attempts_done must be >= 1, got {attempts_done!r}")
    retries_done = attempts_done - 1
    # CISCO 9.1 UG p.24-39: hard bounce right after the retry that uses up the count.
    if retries_done >= profile.max_retries:
        return None
    when = now + retry_interval(retries_done + 1, profile)
    # CISCO 9.1 UG p.24-39: bounce immediately before an attempt that would fall past the
    # maximum time in queue.
    if when > expires_at(first_attempt_at, profile):
        return None
    return when


def delay_warning_due(
    profile: BounceProfile, *, attempt_number: int, reply_code: int | None
) -> bool:
    """Whether a failed attempt triggers a delay-warning DSN.

    CISCO 212837: off by default; when on, only on the **second** delivery attempt
    and only after a 4xx reply.

    Args:
        profile: the bounce profile.
        attempt_number: the attempt that just failed (1 = the first attempt).
        reply_code: the SMTP reply code, or None for a failure without one.

    Returns:
        True when a delay warning is due now.
    """
    return (
        profile.delay_warnings
        and attempt_number == 2
        and reply_code is not None
        and 400 <= reply_code < 500
    )
