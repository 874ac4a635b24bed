"""``cocov-jobs sidekiq import [--dry-run]``: move what a replaced Sidekiq left in its ``retry``
and ``dead`` sets (:mod:`cocov_jobs.sidekiq.leftovers`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from cocov_jobs.cli.common import console, fail, load, run_async
from cocov_jobs.db.migrate import upgrade
from cocov_jobs.embedded import Stores
from cocov_jobs.services import Services
from cocov_jobs.sidekiq import leftovers
from cocov_jobs.sidekiq.payload import CoverageUpload, JobRequest
from cocov_jobs.sidekiq.store import Entry
from cocov_jobs.times import utc_text

sidekiq_app = typer.Typer(no_args_is_help=True, help="Cocov's Sidekiq, being replaced.")


@sidekiq_app.command("import")
def import_leftovers(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be moved; change nothing.")
    ] = False,
) -> None:
    """Move Sidekiq's retry set (due at their retry time) and dead set (held as failed)."""
    settings = load()
    if not settings.sidekiq_redis_url:
        raise fail("COCOV_SIDEKIQ_REDIS_URL is not set: no Sidekiq to import from")

    async def preview(services: Services, found: Stores) -> list[Entry]:
        return await leftovers.preview(services)

    async def move(services: Services, found: Stores) -> leftovers.Moved:
        if found.embedded:
            await upgrade(services.engine, found.database_url)
        return await leftovers.move(services)

    if dry_run:
        entries = run_async(settings, preview)
        table = Table("set", "jid", "class", "becomes", "when")
        for entry in entries:
            table.add_row(
                entry.source,
                entry.payload.key,
                entry.payload.ruby_class,
                _becomes(entry),
                _when(entry),
            )
        console.print(table)
        typer.echo(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} would be moved")
        return
    moved = run_async(settings, move)
    for name in leftovers.SETS:
        typer.echo(
            f"{name}: {moved.taken[name]} job(s), {moved.kept[name]} kept as failed"
            f" (cannot become a job), {moved.replayed[name]} moved before"
        )


def _becomes(entry: Entry) -> str:
    request, problem = entry.payload.request, entry.payload.problem
    if isinstance(request, JobRequest):
        return f"{request.definition.name} {json.dumps(request.args)}"
    if isinstance(request, CoverageUpload):
        return (
            f"coverage upload of {len(request.data)} file(s) for {request.sha[:12]}"
            f" of repository {request.repository_id}"
        )
    return f"kept as failed: {problem}"


def _when(entry: Entry) -> str:
    if entry.dead or entry.payload.problem is not None:
        return "held as failed"
    if entry.run_at is None:
        return "now"
    return utc_text(datetime.fromtimestamp(entry.run_at, UTC))
