"""The sample organization of ``cocov-jobs demo``, served by the GitHub fake.

:data:`ORG` has three repositories. :data:`REPO` is a small Python project committed by
:data:`AUTHOR` in one commit: a ``.cocov.yaml`` (:data:`MANIFEST`: two checks,
``coverage: {min_percent: 80}``, ``tests/**`` excluded), the :data:`SOURCES` and a few other
files. :func:`coverage_data` is what Cocov's coverage reporter would upload for it: 12 of the
14 executable lines outside ``tests/`` are covered (85.71 %). :data:`COLLABORATORS` have roles
on it; :data:`OPERATOR_LOGIN` owns the dashboard's service token.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from cocov_jobs.coverage import NEUTRAL, Line, encode_lines
from cocov_jobs.testing import FakeGitHub

#: GitHub organization of the demo.
ORG: Final = "cocov-demo"
#: The repository the flow adds to Cocov.
REPO: Final = "calculator"
#: Its description; also how a later run recognises the repository as the demo's.
REPO_DESCRIPTION: Final = "Sample project of cocov-jobs demo"
#: Other repositories of the organization (listed by the org sync only).
OTHER_REPOS: Final = ("handbook", "website")
#: Branch the sample commit is on.
BRANCH: Final = "main"
#: Author of the sample commit: name and e-mail.
AUTHOR: Final = ("Ada Lovelace", "ada@cocov-demo.test")
#: GitHub login of the author, who signs in to Cocov during the flow.
AUTHOR_LOGIN: Final = "ada-cocov-demo"
#: GitHub login of the operator who owns the dashboard's service token.
OPERATOR_LOGIN: Final = "operator-cocov-demo"
#: Users the demo creates; a later run removes them first.
DEMO_LOGINS: Final = (AUTHOR_LOGIN, OPERATOR_LOGIN)
#: Collaborators of :data:`REPO` and their GitHub roles.
COLLABORATORS: Final[Mapping[str, str]] = {
    AUTHOR_LOGIN: "admin",
    "grace-cocov-demo": "maintain",
    "linus-cocov-demo": "write",
}
#: Description of the service token created for the dashboard.
TOKEN_DESCRIPTION: Final = "cocov-jobs demo dashboard"

MANIFEST: Final = """\
version: "0.1.alpha"
coverage:
  min_percent: 80
exclude_paths:
  - tests/**
checks:
  - plugin: cocov/pylint:v0.1
  - plugin: cocov/semgrep:v0.1
    envs:
      SEMGREP_RULES: p/python
"""

#: Source files with the hit count CI measured for each line (``None``: not executable).
SOURCES: Final[Mapping[str, tuple[tuple[int | None, str], ...]]] = {
    "calculator/__init__.py": (
        (None, '"""A tiny calculator: the sample project of cocov-jobs demo."""'),
        (None, ""),
        (1, "from calculator.ops import add, divide, multiply, power, subtract"),
        (None, ""),
        (1, '__all__ = ["add", "divide", "multiply", "power", "subtract"]'),
    ),
    "calculator/ops.py": (
        (None, '"""Arithmetic on floats."""'),
        (None, ""),
        (None, ""),
        (1, "def add(a: float, b: float) -> float:"),
        (4, "    return a + b"),
        (None, ""),
        (None, ""),
        (1, "def subtract(a: float, b: float) -> float:"),
        (2, "    return a - b"),
        (None, ""),
        (None, ""),
        (1, "def multiply(a: float, b: float) -> float:"),
        (3, "    return a * b"),
        (None, ""),
        (None, ""),
        (1, "def divide(a: float, b: float) -> float:"),
        (2, "    if b == 0:"),
        (0, '        raise ZeroDivisionError("cannot divide by zero")'),
        (2, "    return a / b"),
        (None, ""),
        (None, ""),
        (1, "def power(base: float, exponent: int) -> float:"),
        (0, "    return base**exponent"),
    ),
    "tests/test_ops.py": (
        (1, "from calculator import add, divide"),
        (None, ""),
        (None, ""),
        (1, "def test_add() -> None:"),
        (1, "    assert add(2, 3) == 5"),
        (None, ""),
        (None, ""),
        (1, "def test_divide() -> None:"),
        (1, "    assert divide(6, 3) == 2"),
    ),
}

OTHER_FILES: Final[Mapping[str, str]] = {
    ".cocov.yaml": MANIFEST,
    "README.md": "# calculator\n\nThe sample project of `cocov-jobs demo`.\n",
    "pyproject.toml": '[project]\nname = "calculator"\nversion = "0.1.0"\n',
}


@dataclass(frozen=True)
class Sample:
    """The GitHub fake with the sample organization, and what the flow needs to know of it."""

    fake: FakeGitHub
    sha: str
    operator_token: str
    author_token: str


def source_text(lines: tuple[tuple[int | None, str], ...]) -> str:
    return "".join(f"{line}\n" for _, line in lines)


def coverage_data() -> dict[str, str]:
    """The coverage reporter's ``data``: each file's line hits, wire format, base64."""
    data = {}
    for path, lines in SOURCES.items():
        hits: list[Line] = [NEUTRAL if count is None else count for count, _ in lines]
        data[path] = base64.b64encode(encode_lines(hits)).decode()
    return data


@contextlib.contextmanager
def sample_github() -> Iterator[Sample]:
    """Start the GitHub fake with the sample organization; stop it on exit."""
    with FakeGitHub(org=ORG) as fake:
        operator_token = fake.add_user(OPERATOR_LOGIN)
        tokens = {login: fake.add_user(login) for login in COLLABORATORS}
        fake.add_repo(REPO, description=REPO_DESCRIPTION, files={})
        files = {**OTHER_FILES, **{path: source_text(src) for path, src in SOURCES.items()}}
        sha = fake.commit(REPO, files, message="Add the calculator", author=AUTHOR)
        for login, role in COLLABORATORS.items():
            fake.grant(login, REPO, role)
        for name in OTHER_REPOS:
            fake.add_repo(name, private=False)
        yield Sample(fake, sha, operator_token, tokens[AUTHOR_LOGIN])
