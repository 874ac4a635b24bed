"""``cocov-jobs tokens create``: issue a service token for the HTTP service API and the dashboard.

Tokens are Cocov's (``service_tokens``): ``cos_`` + 64 hex digits, of which only
``base64(sha256(token))`` is stored. The token is printed once, on standard output; it cannot
be shown again.

Every token has an owner (``users.id``). In a Cocov installation that is a Cocov user
(``--owner``); a standalone installation has no user, so without ``--owner`` the token belongs to
the operator user :data:`OPERATOR_LOGIN`, created the first time (an admin with GitHub id
:data:`OPERATOR_GITHUB_ID`, which no GitHub account has, and no GitHub token).
"""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from cocov_jobs.cli.common import fail, load, migrate_embedded, run_async
from cocov_jobs.crypto import new_service_token, service_token_digest
from cocov_jobs.db.models import ServiceToken, User, utc_now
from cocov_jobs.embedded import Stores
from cocov_jobs.services import Services

tokens_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Service tokens for the HTTP API and the dashboard.",
)

#: Login of the user that owns tokens created without ``--owner``.
OPERATOR_LOGIN = "cocov-jobs-operator"
#: Its ``users.github_id`` (GitHub ids start at 1).
OPERATOR_GITHUB_ID = 0


async def operator_user(session: AsyncSession) -> int:
    """The id of the operator user, created when missing (concurrent calls agree on one row)."""
    await session.execute(
        pg_insert(User)
        .values(login=OPERATOR_LOGIN, github_id=OPERATOR_GITHUB_ID, github_token="", admin=True)
        .on_conflict_do_nothing(index_elements=["login"])
    )
    return int(await session.scalar(select(User.id).where(User.login == OPERATOR_LOGIN)) or 0)


async def has_users(services: Services) -> bool:
    """Whether the users table has a row (``run`` says how to get a first token when not)."""
    async with services.sessions() as session:
        return await session.scalar(select(User.id).limit(1)) is not None


@tokens_app.command("create")
def create(
    description: Annotated[
        str, typer.Option(metavar="TEXT", help="What the token is for.")
    ] = "dashboard and API",
    owner: Annotated[
        int | None,
        typer.Option(
            metavar="USER_ID",
            help="The users.id that owns the token (a Cocov user). Without it, the operator"
            f" user {OPERATOR_LOGIN}, created the first time.",
        ),
    ] = None,
) -> None:
    """Create a service token and print it once (only its digest is stored). Log in to the
    dashboard with it, or send it as "Authorization: bearer TOKEN" to the API."""
    settings = load()

    async def body(services: Services, found: Stores) -> str | None:
        await migrate_embedded(services, found)
        token = new_service_token()
        async with services.sessions.begin() as session:
            if owner is None:
                owner_id = await operator_user(session)
            elif await session.scalar(select(User.id).where(User.id == owner)) is None:
                return None
            else:
                owner_id = owner
            await session.execute(
                insert(ServiceToken).values(
                    token_hash=service_token_digest(token),
                    description=description,
                    owner_id=owner_id,
                    created_at=utc_now(),
                    updated_at=utc_now(),
                )
            )
        return token

    token = run_async(settings, body)
    if token is None:
        raise fail(f"no user with id {owner}")
    typer.echo(token)
