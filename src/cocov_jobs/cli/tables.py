"""The tables the inspection commands print (``jobs list``, ``jobs show``, ``stats``), with the
dashboard's columns and the one time format (:mod:`cocov_jobs.times`)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from rich.table import Table
from rich.text import Text

from cocov_jobs.engine import admin, history
from cocov_jobs.times import duration_text, utc_text

#: Characters of an error shown in a table cell.
ERROR_CHARS = 120


def plain_row(table: Table, *cells: str) -> None:
    """Add a row of plain text: data never goes through rich's markup (``[/bold]`` in an
    argument or an error would break the table)."""
    table.add_row(*(Text(cell) for cell in cells))


def queue_table(rows: Iterable[admin.JobRow]) -> Table:
    table = Table(
        "id", "job", "arguments", "state", "attempts", "enqueued by", "worker", "last error"
    )
    for r in rows:
        plain_row(
            table,
            str(r.id),
            r.job,
            json.dumps(r.arguments),
            r.state,
            str(r.attempts),
            r.enqueued_by or "",
            r.worker or "",
            r.error_text[:ERROR_CHARS],
        )
    return table


def runs_table(rows: Iterable[history.RunRow], *, with_job: bool = True) -> Table:
    """Finished runs; ``with_job`` adds the run id (``--before``), job id, name, arguments and
    who enqueued it."""
    job_columns = ("run", "id", "job", "arguments", "enqueued by") if with_job else ()
    table = Table(
        *job_columns,
        "attempt",
        "outcome",
        "started",
        "finished",
        "duration",
        "wait",
        "worker",
        "error",
    )
    for r in rows:
        job_cells = (
            (str(r.id), str(r.job_id), r.job, json.dumps(r.arguments), r.enqueued_by or "")
            if with_job
            else ()
        )
        plain_row(
            table,
            *job_cells,
            str(r.attempt),
            r.outcome,
            utc_text(r.started_at),
            utc_text(r.finished_at),
            duration_text(r.duration),
            duration_text(r.wait),
            r.worker or "",
            (r.error or "")[:ERROR_CHARS],
        )
    return table


def metrics_table(figures: Iterable[history.Figures]) -> Table:
    table = Table(
        "job",
        "last",
        "runs",
        "failures",
        "duration p50",
        "p95",
        "max",
        "wait p50",
        "p95",
        "max",
        title="Runs by job (job history)",
        caption="day and week p50/p95 from hourly histograms, within 5 %; the rest exact",
    )
    for f in figures:
        plain_row(
            table,
            f.job,
            f.window,
            str(f.runs),
            str(f.failures),
            *(
                duration_text(v)
                for v in (
                    f.duration_p50,
                    f.duration_p95,
                    f.duration_max,
                    f.wait_p50,
                    f.wait_p95,
                    f.wait_max,
                )
            ),
        )
    return table


def workers_table(workers: Iterable[dict[str, object]]) -> Table:
    table = Table("host", "pid", "concurrency", "running", "quiet", "heartbeat", "RSS MiB")
    for w in workers:
        rss = w["rss_bytes"]
        plain_row(
            table,
            str(w["host"]),
            str(w["pid"]),
            str(w["concurrency"]),
            str(w["running"]),
            "yes" if w["quiet"] else "",
            utc_text(w["heartbeat_at"]) + ("" if w["alive"] else " (stale)"),  # type: ignore[arg-type]
            f"{rss / 2**20:.0f}" if isinstance(rss, int) else "",
        )
    return table
