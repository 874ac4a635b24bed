"""How times and durations are written for people, in the command line and the dashboard
alike: one format, always in UTC, saying so (``2026-12-01 14:03:27 UTC``).

Cocov's own tables store naive timestamps that are UTC (Rails); they are read as UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

#: The one format of a point in time.
TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"


def utc_text(value: datetime | None) -> str:
    """``value`` in :data:`TIME_FORMAT`; ``—`` for none."""
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime(TIME_FORMAT)


def parse_utc(text: str) -> datetime:
    """A point in time typed by a person: ISO 8601 (``2026-12-01``, ``2026-12-01 14:03``,
    ``2026-12-01T14:03:27+01:00``); without a zone it is UTC. ``ValueError`` otherwise."""
    try:
        value = datetime.fromisoformat(text.strip().removesuffix("UTC").strip())
    except ValueError:
        raise ValueError(f"not a time: {text!r} (write 2026-12-01 14:03, in UTC)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def duration_text(seconds: float | None) -> str:
    """A duration the way it reads best: ``850 µs``, ``12 ms``, ``3.4 s``, ``2 min 5 s``,
    ``3 h 20 min``; ``—`` for none."""
    if seconds is None:
        return "—"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"
