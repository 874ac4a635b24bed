"""Repository membership levels from GitHub permissions (docs/architecture.md §5.9).

Levels are ordered integers, the values of ``repository_members.level``: ``user`` (0) <
``maintainer`` (1) < ``admin`` (2); repository-scoped authorization checks ``level >= required``.
"""

from __future__ import annotations

from collections.abc import Mapping

#: ``repository_members.level`` of a user who may read (push, triage or pull).
USER = 0
#: ``repository_members.level`` of a maintainer.
MAINTAINER = 1
#: ``repository_members.level`` of an administrator.
ADMIN = 2


def level_from_github(permissions: Mapping[str, bool]) -> int:
    """``admin`` → 2, else ``maintain`` → 1, else 0, from a GitHub ``permissions`` object."""
    if permissions.get("admin"):
        return ADMIN
    if permissions.get("maintain"):
        return MAINTAINER
    return USER
