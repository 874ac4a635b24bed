"""Ruby's ``File.fnmatch(pattern, path, File::FNM_PATHNAME | File::FNM_EXTGLOB)``.

Cocov excludes files from checks and coverage with the manifest's ``exclude_paths`` through
that call, so a pattern must match here exactly the paths it matches there: :func:`glob_match`
is checked against Ruby's own answers in the tests. Patterns are compiled to regular
expressions once (cached); brace expansion is bounded by :data:`MAX_PATTERN_EXPANSION_CHARS`
so a hostile pattern cannot take unbounded time or memory.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

#: Brace expansion budget of one pattern: characters of all the partial and final expansions
#: together (``{a,b}/{c,d}`` uses 26). Bounds compile time and regex size.
MAX_PATTERN_EXPANSION_CHARS = 64 * 1024
#: Compiled patterns kept: every pattern of a few manifests at their maximum size.
COMPILED_PATTERNS_CACHED = 4096


class PatternTooComplexError(ValueError):
    """The pattern's brace expansion exceeds :data:`MAX_PATTERN_EXPANSION_CHARS`."""


def glob_match(pattern: str, path: str) -> bool:
    """Ruby's ``File.fnmatch(pattern, path, File::FNM_PATHNAME | File::FNM_EXTGLOB)``.

    * ``{a,b}`` alternation, nested allowed, expanded textually first as Ruby does; a ``{``
      without its ``}`` makes the whole pattern match nothing;
    * ``*``, ``?`` and ``[...]`` never match ``/``; ``[!...]``/``[^...]`` negate; ``a-c`` is a
      range (a reversed range ``c-a`` matches just its two ends); an unterminated or empty
      ``[...]`` matches nothing, ``[!]`` matches any one character;
    * ``**/`` at the start of a segment matches zero or more whole directories;
    * a path component starting with ``.`` is matched only by a pattern component starting
      with a literal ``.`` (no DOTMATCH), and ``**/`` never descends into such directories;
    * ``\\`` escapes the next character (``\\/`` is a separator; a trailing ``\\`` is ignored);
      matching is case-sensitive. A NUL character is an ordinary character (Ruby would end the
      pattern there).

    Raises :class:`PatternTooComplexError` for a pattern over the expansion budget (the
    manifest parser rejects such patterns up front with :func:`compile_glob`).
    """
    return compile_glob(pattern).fullmatch(path) is not None


@functools.lru_cache(maxsize=COMPILED_PATTERNS_CACHED)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regex :func:`glob_match` uses for ``pattern``; raises
    :class:`PatternTooComplexError` when its brace expansion is over budget."""
    alternatives = [_glob_to_regex(expanded) for expanded in _expand_braces(pattern)]
    return re.compile("|".join(f"(?:{regex})" for regex in alternatives) or _NEVER)


def _expand_braces(pattern: str) -> Iterator[str]:
    """Ruby's ``ruby_brace_expand``: the first top-level ``{...}`` group is replaced by each of
    its comma-separated alternatives and the results are expanded again (iteratively)."""
    pending = [pattern]
    budget = MAX_PATTERN_EXPANSION_CHARS
    while pending:
        current = pending.pop()
        budget -= len(current)
        if budget < 0:
            raise PatternTooComplexError(pattern)
        start, end = _first_brace_group(current) if "{" in current else (-1, -1)
        if start < 0:
            yield current
            continue
        if end < 0:
            continue  # an unclosed "{": Ruby calls the matcher for no expansion at all
        prefix, suffix = current[:start], current[end + 1 :]
        alternatives = _brace_alternatives(current, start, end)
        pending.extend(prefix + alternative + suffix for alternative in reversed(alternatives))


def _first_brace_group(pattern: str) -> tuple[int, int]:
    """Indexes of the first top-level unescaped ``{`` and of its matching ``}``; -1 for none."""
    depth, start, index = 0, -1, 0
    while index < len(pattern):
        char = pattern[index]
        if char == "{":
            if depth == 0:
                start = index
            depth += 1
        elif char == "}" and start >= 0:
            depth -= 1
            if depth == 0:
                return start, index
        elif char == "\\":
            index += 1
        index += 1
    return start, -1


def _brace_alternatives(pattern: str, start: int, end: int) -> list[str]:
    """The comma-separated alternatives of the group ``pattern[start..end]`` (nested groups and
    escaped commas stay inside their alternative)."""
    alternatives = []
    index = start
    while index < end:
        index += 1
        first, depth = index, 0
        while index < end and not (pattern[index] == "," and depth == 0):
            if pattern[index] == "{":
                depth += 1
            elif pattern[index] == "}":
                depth -= 1
            elif pattern[index] == "\\":
                index += 1
            index += 1
        alternatives.append(pattern[first:index])
    return alternatives


_NEVER = "(?!)"
_ANY_DIRECTORIES = r"(?:(?!\.)[^/]*/)*"
_NO_LEADING_DOT = r"(?!\.)"


def _glob_to_regex(pattern: str) -> str:
    """Regex for one brace-free pattern (Ruby ``fnmatch`` with ``FNM_PATHNAME``).

    A wildcard that starts a pattern component gets a "not a dot" guard: in Ruby a component
    starting with ``.`` only matches a pattern component whose first character is ``.``.
    """
    out: list[str] = []
    index, length = 0, len(pattern)
    component_start = True
    while index < length:
        if component_start and pattern.startswith("**/", index):
            while pattern.startswith("**/", index):
                index += 3
            out.append(_ANY_DIRECTORIES)
            continue
        guard = _NO_LEADING_DOT if component_start else ""
        char = pattern[index]
        component_start = False
        if char == "*":
            while index < length and pattern[index] == "*":
                index += 1
            out.append(f"{guard}[^/]*")
        elif char == "?":
            index += 1
            out.append(f"{guard}[^/]")
        elif char == "[":
            bracket = _bracket_to_regex(pattern, index + 1)
            if bracket is None:
                return _NEVER
            regex, index = bracket
            out.append(guard + regex)
        else:
            if char == "\\":
                index += 1
                if index == length:
                    break
                char = pattern[index]
            index += 1
            component_start = char == "/"
            out.append("/" if component_start else re.escape(char))
    return "".join(out)


def _bracket_to_regex(pattern: str, index: int) -> tuple[str, int] | None:
    """Regex and end index of the bracket expression whose body starts at ``index`` (Ruby's
    ``bracket()``), or None if it is unterminated (it then never matches)."""
    negated = pattern[index : index + 1] in ("!", "^")
    index += negated
    items: list[str] = []
    while index < len(pattern) and pattern[index] != "]":
        first = _bracket_char(pattern, index)
        if first is None or first[1] >= len(pattern):
            return None
        low, index = first
        if pattern[index] == "-" and pattern[index + 1 : index + 2] != "]":
            last = _bracket_char(pattern, index + 1)
            if last is None:
                return None
            high, index = last
            items.append(
                f"{re.escape(low)}-{re.escape(high)}" if low <= high else re.escape(low + high)
            )
        else:
            items.append(re.escape(low))
    if index >= len(pattern):
        return None
    body = "".join(items)
    if negated:
        return f"[^/{body}]", index + 1
    return (f"(?!/)[{body}]" if body else _NEVER), index + 1


def _bracket_char(pattern: str, index: int) -> tuple[str, int] | None:
    """The (possibly escaped) character at ``index`` and the index after it."""
    if pattern[index : index + 1] == "\\":
        index += 1
    if index >= len(pattern):
        return None
    return pattern[index], index + 1
