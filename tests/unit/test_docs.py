"""The repository is self-contained: citations point at sections of docs/architecture.md that
exist, and nothing refers to design documents outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
#: Where docstrings and comments cite sections.
CITING = ("src", "tests", "bench")
#: A section number: ``§4``, ``§6.12``. Other documents' sections are named (``RFC 4648 §4``).
SECTION = re.compile(r"(?<!RFC \d{4} )§(\d+(?:\.\d+)?)")
#: References that only make sense beside the repository (spelt in pieces, so that this file
#: does not match itself).
OUTSIDE = re.compile(
    "|".join(("[.][.]" + "/shared", "/work" + "/shared", "DESIGN" + " §", "reference" + " §"))
)


def sections() -> set[str]:
    """``"4"``, ``"4.4"``, … for every numbered heading of docs/architecture.md."""
    headings = re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", ARCHITECTURE.read_text(), re.MULTILINE)
    return set(headings)


def sources() -> list[Path]:
    return [
        path
        for top in CITING
        for path in sorted((ROOT / top).rglob("*"))
        if path.suffix in (".py", ".md", ".sh", ".rb") and path.is_file()
    ]


def test_architecture_has_numbered_sections() -> None:
    assert {"1", "4.4", "6.12", "7.1"} <= sections()


def test_every_cited_section_exists() -> None:
    known = sections() | {str(n) for n in range(1, 8)}
    cited = {
        (path.relative_to(ROOT).as_posix(), number)
        for path in sources()
        for number in SECTION.findall(path.read_text(errors="replace"))
    }
    assert cited, "no citation found: the pattern is wrong"
    assert sorted((path, n) for path, n in cited if n not in known) == []


def test_nothing_refers_to_documents_outside_the_repository() -> None:
    files = [*sources(), ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = [
        f"{path.relative_to(ROOT)}:{line_no}: {line.strip()}"
        for path in files
        for line_no, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert found == []
