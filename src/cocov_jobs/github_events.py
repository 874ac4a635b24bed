"""GitHub webhook events and their effects (docs/architecture.md §6.10).

:func:`apply_event` runs, in the caller's transaction, every rule of :data:`RULES` whose event
matches and whose action filter accepts the payload's ``action``, in table order; the caller
commits, then calls :meth:`EventEffects.after_commit`. Rules:

============  ====================  ===============================================================
event         actions               effect
============  ====================  ===============================================================
push          any                   branch ``refs/heads/<b>``: register the head commit
                                    (:func:`~cocov_jobs.registration.register_head_commit`),
                                    moving the head only from ``before`` (or onto a new branch,
                                    or ``forced``; else noted on the delivery); tags,
                                    ``deleted: true`` and ``head_commit: null`` do nothing
delete        any                   ``ref_type: branch``: delete the branch and its histories
repository    all but ``deleted``   ``update_repo_permissions``
repository    ``deleted``           ``destroy_repository``
repository    ``edited``            copy ``description`` and ``default_branch`` when ``changes``
                                    names either
repository    ``renamed``           set the name; ``move_repository_storage`` moves stored clones
public        any                   ``update_repo_permissions``
member        all but ``deleted``   ``update_repo_permissions`` and ``update_user_permissions``
team_add      any                   ``update_repo_permissions``
organization  all but ``deleted``,  ``update_user_permissions``
              ``renamed``,
              ``member_invited``
membership    any                   ``update_user_permissions``
============  ====================  ===============================================================

Repositories are found by ``repository.id`` (``repositories.github_id``), users by
``member.id`` or ``membership.user.id`` (``users.github_id``); an unknown one makes that rule a
no-op, as does any other event. A payload missing what a rule must write (the head commit's
sha, a renamed repository's name) raises :class:`MalformedPayload`, a permanent error.

Statements go straight to the session's asyncpg connection, in its transaction (a push is
registered by one statement: :func:`~cocov_jobs.registration.register_pushed_commit`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from cocov_jobs.engine import queue
from cocov_jobs.engine.retry import PermanentError
from cocov_jobs.gitstore.layout import check_sha
from cocov_jobs.registration import HeadCommit, register_pushed_commit

log = structlog.get_logger(__name__)

#: Prefix of a branch ref in push events (tags are ``refs/tags/…``).
BRANCH_REF_PREFIX = "refs/heads/"
#: Largest value of the ``integer`` columns ``github_id``: larger ids match no local row.
MAX_GITHUB_ID = 2**31 - 1

Payload = dict[str, Any]
_NOTE_DELIVERY = "UPDATE cocov_jobs_webhook_deliveries SET note = $2 WHERE delivery_id = $1"
_REPOSITORY = "SELECT id, name FROM repositories WHERE github_id = $1"
_USER = "SELECT id FROM users WHERE github_id = $1"
_BRANCH = "SELECT id FROM branches WHERE repository_id = $1 AND name = $2"
#: A branch's histories, then the branch.
_DELETE_BRANCH = (
    *(f"DELETE FROM {history} WHERE branch_id IN ({_BRANCH})"
      for history in ("coverage_histories", "issue_histories")),
    "DELETE FROM branches WHERE repository_id = $1 AND name = $2",
)  # fmt: skip
_COPY_DETAILS = (
    "UPDATE repositories SET description = $2, default_branch = COALESCE($3, default_branch),"
    " updated_at = timezone('utc', now()) WHERE id = $1"
)
_NAME_HOLDER = "SELECT id FROM repositories WHERE name = $1 AND id <> $2"
_RENAME = "UPDATE repositories SET name = $2, updated_at = timezone('utc', now()) WHERE id = $1"
AfterCommit = Callable[[], Awaitable[None]]


class MalformedPayload(PermanentError):
    """The payload lacks what its event's handler must write."""


@dataclass
class EventEffects:
    """What :func:`apply_event` did; :meth:`after_commit` once the transaction committed."""

    session: AsyncSession
    redis: aioredis.Redis
    handlers: list[str] = field(default_factory=list)
    #: What the delivery did not apply, and why (recorded on the delivery).
    notes: list[str] = field(default_factory=list)
    _after_commit: list[AfterCommit] = field(default_factory=list, repr=False)

    def on_commit(self, step: AfterCommit) -> None:
        """Run ``step`` from :meth:`after_commit`."""
        self._after_commit.append(step)

    async def after_commit(self) -> None:
        """Run the post-commit steps (best effort: the committed effects stand either way)."""
        for step in self._after_commit:
            try:
                await step()
            except Exception:
                log.warning("post-commit step of a webhook failed", exc_info=True)
        self._after_commit.clear()


Handler = Callable[[EventEffects, Payload], Awaitable[None]]


@dataclass(frozen=True)
class Rule:
    """Run ``handler`` for ``event`` when the action is in ``only`` (if set), not in ``never``."""

    event: str
    handler: Handler
    only: frozenset[str] | None = None
    never: frozenset[str] = frozenset()

    def matches(self, event: str, action: str | None) -> bool:
        if event != self.event or action in self.never:
            return False
        return self.only is None or action in self.only


def event_action(payload: Payload) -> str | None:
    action = payload.get("action")
    return action if isinstance(action, str) else None


async def apply_event(
    session: AsyncSession, redis: aioredis.Redis, event: str, payload: Payload, delivery_id: str
) -> EventEffects:
    """Apply every matching rule of :data:`RULES` in the caller's transaction; what was not
    applied is noted on the (recorded) delivery ``delivery_id``."""
    effects = EventEffects(session, redis)
    action = event_action(payload)
    for rule in RULES:
        if rule.matches(event, action):
            await rule.handler(effects, payload)
            effects.handlers.append(rule.handler.__name__)
    if effects.notes:
        connection = await queue.asyncpg_connection(session)
        await connection.execute(_NOTE_DELIVERY, delivery_id, "; ".join(effects.notes))
        log.warning("webhook not fully applied", delivery_id=delivery_id, notes=effects.notes)
    return effects


# Lookups -------------------------------------------------------------------------------------


def _github_id(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_GITHUB_ID:
        return value
    return None


def _field(payload: Payload, *path: str) -> object:
    """``payload[path[0]][path[1]]…``, or None where a level is missing or not an object."""
    value: object = payload
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


async def _repository(effects: EventEffects, payload: Payload) -> tuple[int, str] | None:
    """``(id, name)`` of the local repository of ``repository.id``."""
    github_id = _github_id(_field(payload, "repository", "id"))
    if github_id is None:
        return None
    connection = await queue.asyncpg_connection(effects.session)
    row = await connection.fetchrow(_REPOSITORY, github_id)
    return (int(row["id"]), str(row["name"])) if row is not None else None


async def _user_id(effects: EventEffects, payload: Payload) -> int | None:
    """Id of the local user of ``member.id``, else of ``membership.user.id``."""
    github_id = _github_id(_field(payload, "member", "id")) or _github_id(
        _field(payload, "membership", "user", "id")
    )
    if github_id is None:
        return None
    connection = await queue.asyncpg_connection(effects.session)
    user_id = await connection.fetchval(_USER, github_id)
    return int(user_id) if user_id is not None else None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


# Handlers ------------------------------------------------------------------------------------


async def register_push(effects: EventEffects, payload: Payload) -> None:
    ref = _text(payload.get("ref"))
    branch = ref.removeprefix(BRANCH_REF_PREFIX)
    head = payload.get("head_commit")
    if ref == branch or not branch or payload.get("deleted") is True or head is None:
        return
    github_id = _github_id(_field(payload, "repository", "id"))
    if github_id is None:
        return
    try:
        sha = check_sha(_text(_field(head, "id")).lower())
    except ValueError as exc:
        raise MalformedPayload(f"push head_commit.id: {exc}") from None
    before = _text(payload.get("before")).lower()
    commit = HeadCommit(
        branch=branch,
        sha=sha,
        message=_text(_field(head, "message")),
        author_name=_text(_field(head, "author", "name")),
        author_email=_text(_field(head, "author", "email")),
        expected_head=None if payload.get("forced") is True else before,
    )
    registration = await register_pushed_commit(
        effects.session, effects.redis, github_id=github_id, commit=commit
    )
    if registration is None:  # not a repository of ours
        return
    if registration.kept_head is not None:
        effects.notes.append(
            f"head of {branch} not moved to {sha}: the push starts from {before or 'nothing'},"
            f" the head is {registration.kept_head}"
        )
    effects.on_commit(functools.partial(registration.after_commit, effects.redis))


async def delete_branch(effects: EventEffects, payload: Payload) -> None:
    name = _text(payload.get("ref"))
    if payload.get("ref_type") != "branch" or not name:
        return
    repository = await _repository(effects, payload)
    if repository is None:
        return
    connection = await queue.asyncpg_connection(effects.session)
    for statement in _DELETE_BRANCH:
        await connection.execute(statement, repository[0], name)


async def refresh_repository_permissions(effects: EventEffects, payload: Payload) -> None:
    repository = await _repository(effects, payload)
    if repository is not None:
        await queue.enqueue(effects.session, "update_repo_permissions", repository_id=repository[0])


async def refresh_user_permissions(effects: EventEffects, payload: Payload) -> None:
    user_id = await _user_id(effects, payload)
    if user_id is not None:
        await queue.enqueue(effects.session, "update_user_permissions", user_id=user_id)


async def destroy_repository(effects: EventEffects, payload: Payload) -> None:
    repository = await _repository(effects, payload)
    if repository is not None:
        await queue.enqueue(effects.session, "destroy_repository", repository_id=repository[0])


async def copy_repository_details(effects: EventEffects, payload: Payload) -> None:
    changes = payload.get("changes")
    if not isinstance(changes, dict) or not {"description", "default_branch"} & changes.keys():
        return
    repository = await _repository(effects, payload)
    if repository is None:
        return
    description = _field(payload, "repository", "description")
    default_branch = _field(payload, "repository", "default_branch")
    connection = await queue.asyncpg_connection(effects.session)
    await connection.execute(
        _COPY_DETAILS,
        repository[0],
        description if isinstance(description, str) else None,
        default_branch if isinstance(default_branch, str) else None,
    )


async def rename_repository(effects: EventEffects, payload: Payload) -> None:
    repository = await _repository(effects, payload)
    if repository is None:
        return
    repository_id, old_name = repository
    new_name = _field(payload, "repository", "name")
    if not isinstance(new_name, str) or not new_name:
        raise MalformedPayload("renamed repository without repository.name")
    if new_name == old_name:
        return
    connection = await queue.asyncpg_connection(effects.session)
    holder = await connection.fetchval(_NAME_HOLDER, new_name, repository_id)
    if holder is not None:
        # GitHub names are unique in an organization: the other row is stale (a rename or a
        # deletion we never heard of). Retrying cannot help; an operator must decide.
        raise PermanentError(
            f"cannot rename repository {repository_id} to {new_name!r}: it is already the name"
            f" of repository {holder}"
        )
    await connection.execute(_RENAME, repository_id, new_name)
    await queue.enqueue(
        effects.session, "move_repository_storage", repository_id=repository_id, old_name=old_name
    )


#: The handler table; see the module docstring.
RULES: tuple[Rule, ...] = (
    Rule("push", register_push),
    Rule("delete", delete_branch),
    Rule("repository", refresh_repository_permissions, never=frozenset({"deleted"})),
    Rule("repository", destroy_repository, only=frozenset({"deleted"})),
    Rule("repository", copy_repository_details, only=frozenset({"edited"})),
    Rule("repository", rename_repository, only=frozenset({"renamed"})),
    Rule("public", refresh_repository_permissions),
    Rule("member", refresh_repository_permissions, never=frozenset({"deleted"})),
    Rule("member", refresh_user_permissions, never=frozenset({"deleted"})),
    Rule("team_add", refresh_repository_permissions),
    Rule(
        "organization",
        refresh_user_permissions,
        never=frozenset({"deleted", "renamed", "member_invited"}),
    ),
    Rule("membership", refresh_user_permissions),
)
