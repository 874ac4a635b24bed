"""The metrics' roll-up arithmetic: which hours are rolled up, and the error of the percentiles
read from the histograms (:mod:`cocov_jobs.engine.history`)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from cocov_jobs.engine import history
from cocov_jobs.engine.history import (
    HISTOGRAM_BASE,
    HISTOGRAM_BUCKETS,
    HISTOGRAM_RATIO,
    ROLL_UP_MARGIN,
    WINDOWS,
    Bounds,
    histogram_percentiles,
)


def _bucket(value: float) -> int:
    """The bucket the roll-up's SQL gives ``value`` (``_bucket_sql``), in Python."""
    if value < HISTOGRAM_BASE:
        return 0
    index = 1 + math.floor(math.log(value / HISTOGRAM_BASE) / math.log(HISTOGRAM_RATIO))
    return min(HISTOGRAM_BUCKETS - 1, index)


def _percentile_cont(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    if position == low:
        return ordered[low]
    return ordered[low] + (position - low) * (ordered[low + 1] - ordered[low])


@pytest.mark.parametrize("offset", [UTC, timezone(timedelta(hours=5, minutes=30))])
def test_only_complete_utc_hours_that_ended_a_margin_ago_are_rolled(offset: timezone) -> None:
    start = datetime(2026, 12, 5, 13, 0, tzinfo=UTC)
    for minute in range(0, 150, 7):
        now = (start + timedelta(minutes=minute, seconds=13)).astimezone(offset)
        bounds = Bounds(now)
        cutoff = bounds.cutoff
        assert cutoff.astimezone(UTC).minute == cutoff.second == cutoff.microsecond == 0
        # Every hour before the cutoff ended a margin ago; the cutoff's own hour did not.
        assert cutoff <= now - ROLL_UP_MARGIN < cutoff + timedelta(hours=1)
        for name, span in WINDOWS.items():
            first = bounds.first_hour(span)
            assert bounds.start(span) < first <= bounds.start(span) + timedelta(hours=1)
            if name in history.EXACT_WINDOWS:  # no rolled hour inside: all from the runs
                assert first >= cutoff


def test_histogram_percentiles_are_within_five_percent_or_half_a_millisecond() -> None:
    rng = random.Random(27)
    worst = 0.0
    for trial in range(2000):
        size = rng.choice([1, 2, 3, 10, 100, 1000])
        kind = trial % 3
        if kind == 0:
            values = [10 ** rng.uniform(-5, 5.5) for _ in range(size)]
        elif kind == 1:
            values = [rng.choice([0.0, 0.0004, 0.002, 1.5, 3600.0]) for _ in range(size)]
        else:
            values = [rng.expovariate(20) for _ in range(size)]
        counts: dict[int, int] = {}
        for value in values:
            counts[_bucket(value)] = counts.get(_bucket(value), 0) + 1
        estimates = histogram_percentiles(counts, (0.5, 0.95), max(values))
        for q, estimate in zip((0.5, 0.95), estimates, strict=True):
            exact = _percentile_cont(values, q)
            assert abs(estimate - exact) <= max(0.05 * exact, 0.0005), (values, q)
            assert estimate <= max(values)
            if min(values) >= HISTOGRAM_BASE:
                worst = max(worst, abs(estimate - exact) / exact)
    assert worst <= math.sqrt(HISTOGRAM_RATIO) - 1 + 1e-9
