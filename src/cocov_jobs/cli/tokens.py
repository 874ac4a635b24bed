"""``cocov-jobs tokens create``: issue a service token for the HTTP service API.

Tokens are Cocov's (``service_tokens``): ``cos_`` + 64 hex digits, of which only
``base64(sha256(token))`` is stored. The token is printed once, on standard output; it cannot
be shown again.
"""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy import insert, select

from cocov_jobs.cli.common import fail, load, run_async
from cocov_jobs.crypto import new_service_token, service_token_digest
from cocov_jobs.db.models import ServiceToken, User, utc_now
from cocov_jobs.embedded import Stores
from cocov_jobs.services import Services

tokens_app = typer.Typer(no_args_is_help=True, help="Service tokens for the HTTP API.")


@tokens_app.command("create")
def create(
    description: Annotated[str, typer.Option(help="What the token is for.")],
    owner: Annotated[int, typer.Option(help="users.id of the token's owner.")],
) -> None:
    """Create a service token and print it (only its digest is stored)."""
    settings = load()

    async def body(services: Services, found: Stores) -> str | None:
        token = new_service_token()
        async with services.sessions.begin() as session:
            if await session.scalar(select(User.id).where(User.id == owner)) is None:
                return None
            await session.execute(
                insert(ServiceToken).values(
                    token_hash=service_token_digest(token),
                    description=description,
                    owner_id=owner,
                    created_at=utc_now(),
                    updated_at=utc_now(),
                )
            )
        return token

    token = run_async(settings, body)
    if token is None:
        raise fail(f"no user with id {owner}")
    typer.echo(token)
