"""The retry policy: what the engine does after each kind of failure."""

from __future__ import annotations

import pytest
import sqlalchemy.exc

from cocov_jobs.engine.retry import (
    RECONNECT_DELAY,
    Deferred,
    PermanentError,
    RetryPolicy,
    TransientError,
    decide,
    lock_busy,
)

POLICY = RetryPolicy(max_attempts=3, base_delay=10.0, max_delay=25.0)


def test_permanent_errors_give_up_at_once() -> None:
    assert decide(PermanentError("gone"), 0, POLICY) is None


def test_other_errors_back_off_with_jitter_until_the_last_attempt() -> None:
    first = decide(ConnectionError("reset"), 0, POLICY)
    second = decide(ConnectionError("reset"), 1, POLICY)
    assert first is not None and first.counted and 10.0 <= first.delay <= 12.5
    assert second is not None and second.counted and 20.0 <= second.delay <= 25.0
    assert decide(ConnectionError("reset"), 2, POLICY) is None


def test_backoff_is_capped() -> None:
    assert POLICY.backoff(30) <= 25.0 * 1.25


def test_retry_after_replaces_the_backoff() -> None:
    decision = decide(TransientError("503", retry_after=7.0), 0, POLICY)
    assert decision is not None and decision.delay == 7.0 and decision.counted


@pytest.mark.parametrize("attempts", [0, 2, 100])
def test_deferrals_never_use_an_attempt(attempts: int) -> None:
    decision = decide(Deferred("rate limited", delay=30.0), attempts, POLICY)
    assert decision is not None and not decision.counted and decision.delay == 30.0


def test_a_busy_lock_is_a_short_jittered_deferral() -> None:
    delays = {lock_busy("held").delay for _ in range(50)}
    assert all(2.0 <= d <= 3.0 for d in delays) and len(delays) > 1


def test_a_dead_database_connection_is_retried_soon_without_using_an_attempt() -> None:
    dead = sqlalchemy.exc.DBAPIError(
        "SELECT 1", None, ConnectionResetError(), connection_invalidated=True
    )
    decision = decide(dead, 2, POLICY)
    assert decision is not None and not decision.counted and decision.delay == RECONNECT_DELAY
    alive = sqlalchemy.exc.DBAPIError("SELECT 1", None, ValueError())
    assert decide(alive, 2, POLICY) is None  # an ordinary error on the last attempt
