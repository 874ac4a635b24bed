"""Coverage uploads: wire format, per-file metrics, totals and status text.

An upload (docs/architecture.md §6.7) maps a repository-relative file path to the standard base64 of
that file's *wire format*: one token per source line, in line order.

=========================  ================================  =========================
Wire bytes                 Meaning                           Parsed line
=========================  ================================  =========================
ASCII digits ``[0-9]+``    covered, hit count (decimal)      ``int(digits)``
``0x15``                   missed (executable, never hit)    ``0``
``0x00``                   neutral (not executable)          :data:`NEUTRAL`
``0x1B``                   ignored (``nocov``)               :data:`IGNORED`
``0x1E``                   separator between two numbers     nothing
=========================  ================================  =========================

A run of zeros (``0``, ``00``) reads as 0, a missed line; the reporter never writes one.
Any other byte is a :class:`CoverageFormatError` whose message is Cocov's
``Error decoding coverage data: Unexpected control byte 0x<hex>``, with ``<hex>`` always
two lower-case digits (``0x0a``; Cocov prints ``0xa``).  A number longer than
:data:`MAX_HIT_COUNT_DIGITS` digits is rejected too (the reporter's counts are int64).

Unlike Cocov's parser, :func:`parse_lines` never guesses whether its input is still
base64: callers always pass decoded bytes (Cocov's guess re-decoded files made only of
digits, such as a single covered line ``"3"``).

Metrics follow Cocov exactly: accountable lines are the numeric ones,
``lines_total = covered + missed``, per-file ``percent_covered = int(covered / total * 100)``
(truncated, so 29 of 100 lines is 28 %, as in Cocov) and the upload's
``percent_covered = covered / total * 100`` as a float; both are 0 when ``total`` is 0.
"""

from __future__ import annotations

import binascii
import enum
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from cocov_jobs.engine.retry import PermanentError
from cocov_jobs.ruby_text import ruby_float_to_s, ruby_round2

#: Wire byte of a neutral line (not executable).
NEUTRAL_BYTE: Final = 0x00
#: Wire byte of an ignored line (excluded with ``nocov``).
IGNORED_BYTE: Final = 0x1B
#: Wire byte of a missed line (executable, zero hits).
MISSED_BYTE: Final = 0x15
#: Wire byte written between two consecutive hit counts.
SEPARATOR_BYTE: Final = 0x1E
#: Longest accepted run of digits: the reporter's hit counts are int64 (at most 19 digits).
MAX_HIT_COUNT_DIGITS: Final = 19
#: Longest accepted file path, in characters.
MAX_PATH_LENGTH: Final = 1024

_DIGITS: Final = b"0123456789"
_WIRE_BYTES: Final = _DIGITS + bytes((NEUTRAL_BYTE, IGNORED_BYTE, MISSED_BYTE, SEPARATOR_BYTE))
_TOKEN: Final = re.compile(rb"[0-9]+|[\x00\x15\x1b]")
_DIGIT_RUN: Final = re.compile(rb"[0-9]+")
# Byte classes for counting without building line lists: "1"-"9" → "d", "0" → "z", others → ".";
# a digit run starts wherever "." is followed by "d" or "z".
_BYTE_CLASSES: Final = bytes(
    ord("z") if byte == ord("0") else ord("d") if byte in _DIGITS else ord(".")
    for byte in range(256)
)
_TOO_LONG_DIGIT_RUN: Final = b"d" * (MAX_HIT_COUNT_DIGITS + 1)
_WINDOWS_DRIVE: Final = re.compile(r"[A-Za-z]:")
_CONTROL_CHARACTER: Final = re.compile(r"[\x00-\x1f\x7f]")
_SHOWN_PATH_LENGTH: Final = 80


class CoverageFormatError(PermanentError):
    """The upload (or one of its files) does not follow the coverage wire format."""


class Marker(enum.Enum):
    """A line that carries no hit count."""

    NEUTRAL = "neutral"
    IGNORED = "ignored"


#: A line that is not executable.
NEUTRAL: Final = Marker.NEUTRAL
#: A line excluded from coverage (``nocov``).
IGNORED: Final = Marker.IGNORED

#: One source line: a marker, or the hit count of an executable line (0 means missed).
Line: TypeAlias = int | Marker

_MARKER_LINES: Final[dict[bytes, Line]] = {
    bytes((NEUTRAL_BYTE,)): NEUTRAL,
    bytes((IGNORED_BYTE,)): IGNORED,
    bytes((MISSED_BYTE,)): 0,
}
_MARKER_BYTES: Final[dict[Marker, bytes]] = {
    NEUTRAL: bytes((NEUTRAL_BYTE,)),
    IGNORED: bytes((IGNORED_BYTE,)),
}


# --------------------------------------------------------------------------- wire format


def parse_lines(raw: bytes) -> list[Line]:
    """Decode wire bytes into one :data:`Line` per source line (see the module table).

    Digits accumulate into a number, flushed by any other wire byte or the end of input.
    """
    _check_wire_bytes(raw)
    markers = _MARKER_LINES
    return [markers[token] if token in markers else int(token) for token in _TOKEN.findall(raw)]


def encode_lines(lines: Iterable[Line]) -> bytes:
    """Encode lines as the Go reporter does; ``parse_lines(encode_lines(x)) == list(x)``
    for hit counts below ``10**19``.

    A hit count ``n > 0`` is written in decimal, preceded by ``0x1E`` only when the previous
    token was also a decimal number; ``0`` is written as ``0x15``. Negative counts raise
    :class:`ValueError`.
    """
    out = bytearray()
    previous_was_number = False
    for line in lines:
        if isinstance(line, Marker):
            out += _MARKER_BYTES[line]
            previous_was_number = False
        elif line < 0:
            raise ValueError(f"hit counts cannot be negative: {line}")
        elif line == 0:
            out.append(MISSED_BYTE)
            previous_was_number = False
        else:
            if previous_was_number:
                out.append(SEPARATOR_BYTE)
            out += str(line).encode("ascii")
            previous_was_number = True
    return bytes(out)


def decode_payload(file: str, encoded: str) -> bytes:
    """Decode one upload value: standard base64 alphabet (RFC 4648 §4), padding optional.

    Characters outside the alphabet (whitespace included), ``=`` anywhere but at the end,
    or a length of ``4k + 1`` raise :class:`CoverageFormatError` naming ``file``.
    """
    try:
        data = encoded.encode("ascii")
    except UnicodeEncodeError:
        raise _base64_error(file, "non-ASCII character") from None
    data += b"=" * (-len(data) % 4)
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except binascii.Error as exc:
        raise _base64_error(file, str(exc)) from None


def _base64_error(file: str, why: str) -> CoverageFormatError:
    return CoverageFormatError(f"Invalid base64 coverage data for {_shown(file)}: {why}")


def _check_wire_bytes(raw: bytes) -> bytes:
    """Raise unless ``raw`` is wire format; return ``b"." + raw`` mapped by ``_BYTE_CLASSES``."""
    unexpected = raw.translate(None, _WIRE_BYTES)
    if unexpected:
        raise CoverageFormatError(
            f"Error decoding coverage data: Unexpected control byte 0x{unexpected[0]:02x}"
        )
    classes = b"." + raw.translate(_BYTE_CLASSES)
    # Keeps int() far from its 4300-digit limit and rejects absurd counts.
    if _TOO_LONG_DIGIT_RUN in classes.replace(b"z", b"d"):
        raise CoverageFormatError(
            f"Error decoding coverage data: hit count longer than {MAX_HIT_COUNT_DIGITS} digits"
        )
    return classes


# --------------------------------------------------------------------------- paths


def validate_path(path: str) -> None:
    """Accept only canonical repository-relative POSIX paths, else raise CoverageFormatError.

    Rejected: the empty path; more than :data:`MAX_PATH_LENGTH` characters; ASCII control
    characters (NUL included); backslashes; absolute paths (leading ``/`` or a Windows drive
    such as ``C:``); and any empty, ``.`` or ``..`` component — so ``./a``, ``a//b`` and
    ``a/`` are rejected rather than normalised, and each file has exactly one spelling.
    """
    problem = _path_problem(path)
    if problem is not None:
        raise CoverageFormatError(f"Invalid coverage file path {_shown(path)}: {problem}")


def _path_problem(path: str) -> str | None:
    if not path:
        return "empty path"
    if len(path) > MAX_PATH_LENGTH:
        return f"longer than {MAX_PATH_LENGTH} characters"
    if _CONTROL_CHARACTER.search(path):
        return "contains a control character"
    if "\\" in path:
        return "contains a backslash"
    if path.startswith("/") or _WINDOWS_DRIVE.match(path):
        return "absolute path"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "empty, '.' or '..' component"
    return None


def _shown(path: str) -> str:
    """``path`` quoted for a message, cut to a readable length."""
    if len(path) > _SHOWN_PATH_LENGTH:
        return repr(path[:_SHOWN_PATH_LENGTH] + "…")
    return repr(path)


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True, slots=True)
class FileCoverage:
    """One ``coverage_files`` row (without ids)."""

    file: str
    raw_data: bytes
    lines_total: int
    lines_missed: int
    lines_covered: int
    percent_covered: int


@dataclass(frozen=True, slots=True)
class Totals:
    """The ``coverage_infos`` figures of an upload."""

    lines_total: int
    lines_covered: int
    percent_covered: float


@dataclass(frozen=True, slots=True)
class RejectedFile:
    """A file left out of the upload, and why."""

    file: str
    reason: str


@dataclass(frozen=True, slots=True)
class CoverageReport:
    """Accepted files in payload order, their totals, and the rejected files."""

    files: tuple[FileCoverage, ...]
    totals: Totals
    rejected: tuple[RejectedFile, ...]


def measure_file(file: str, raw: bytes) -> FileCoverage:
    """Metrics of one file's wire bytes; equal to counting the lines of ``parse_lines(raw)``."""
    # Count tokens straight from the byte classes: ~10x faster than building the line list.
    classes = _check_wire_bytes(raw)
    zero_led_runs = classes.count(b".z")
    digit_runs = classes.count(b".d") + zero_led_runs
    zero_runs = _count_zero_runs(raw) if zero_led_runs else 0
    missed = raw.count(MISSED_BYTE) + zero_runs
    total = digit_runs - zero_runs + missed
    covered = total - missed
    return FileCoverage(
        file=file,
        raw_data=raw,
        lines_total=total,
        lines_missed=missed,
        lines_covered=covered,
        percent_covered=int(percent_of(covered, total)),
    )


def _count_zero_runs(raw: bytes) -> int:
    """Digit runs worth 0 (``0``, ``00``…): the reporter never writes them; Cocov reads 0."""
    return sum(1 for run in _DIGIT_RUN.findall(raw) if not run.strip(b"0"))


def percent_of(covered: int, total: int) -> float:
    """``covered / total * 100`` evaluated in that order (as Cocov does); 0.0 when total is 0."""
    return covered / total * 100 if total else 0.0


def summarize(
    upload: Mapping[str, object], *, excluded: Callable[[str], bool] | None = None
) -> CoverageReport:
    """Validate, decode and measure every file of an upload, in payload order.

    Per file: the path is checked (:func:`validate_path`); a path for which ``excluded``
    returns true is skipped without decoding its data; the value is base64-decoded
    (:func:`decode_payload`) and measured (:func:`measure_file`). A file failing any step is
    listed in ``rejected`` with the reason and left out of the totals; the other files are
    processed. Raises :class:`CoverageFormatError` only when ``upload`` is not a mapping.
    """
    if not isinstance(upload, Mapping):
        raise CoverageFormatError("Coverage upload must map file paths to base64 data")
    files: list[FileCoverage] = []
    rejected: list[RejectedFile] = []
    for path, encoded in upload.items():
        try:
            validate_path(path)
            if excluded is not None and excluded(path):
                continue
            files.append(measure_file(path, _decode_value(path, encoded)))
        except CoverageFormatError as exc:
            rejected.append(RejectedFile(path, str(exc)))
    return CoverageReport(tuple(files), _totals(files), tuple(rejected))


def _decode_value(path: str, encoded: object) -> bytes:
    if not isinstance(encoded, str):
        raise CoverageFormatError(f"Coverage data for {_shown(path)} is not a string")
    return decode_payload(path, encoded)


def _totals(files: Sequence[FileCoverage]) -> Totals:
    total = sum(file.lines_total for file in files)
    covered = sum(file.lines_covered for file in files)
    return Totals(
        lines_total=total, lines_covered=covered, percent_covered=percent_of(covered, total)
    )


# --------------------------------------------------------------------------- status text


def coverage_description(percent: float, min_percent: int | None) -> str:
    """The ``cocov/coverage`` status description, as Cocov words it.

    ``"<P>% covered"``, plus ``" (at least <min>% is required)"`` when ``percent < min``
    (unrounded), with ``P = ruby_float_to_s(ruby_round2(percent))``.
    """
    text = f"{ruby_float_to_s(ruby_round2(percent))}% covered"
    if min_percent is not None and percent < min_percent:
        return f"{text} (at least {min_percent}% is required)"
    return text
