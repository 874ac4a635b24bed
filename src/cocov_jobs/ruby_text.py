"""Ruby's way of writing values, where Cocov's text must come out byte for byte the same.

Cocov is a Ruby application: the manifest errors it shows quote values with ``inspect``, its
coverage status says ``"#{percent.round(2)}% covered"``, its ``blank?`` decides what counts as
a missing field, and it held early coverage uploads in Redis as ``Hash#inspect`` text, which
:func:`parse_ruby_string_hash` reads back. Each rule is written once here, after Ruby 3.1's C
source (``numeric.c``, ``string.c``) and ActiveSupport, and the tests compare it with a real
``ruby`` where one is installed.
"""

from __future__ import annotations

import math
import re
import unicodedata
from decimal import Decimal
from typing import Final

# --------------------------------------------------------------------------- inspect

_RUBY_STRING_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\f": "\\f",
    "\v": "\\v",
    "\b": "\\b",
    "\a": "\\a",
    "\x1b": "\\e",
}
# Categories Ruby's UTF-8 inspect escapes (controls, unassigned, surrogates, line/paragraph
# separators); U+0085 is a control Ruby nonetheless prints as is.
_RUBY_UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cn", "Cs", "Zl", "Zp"})


def ruby_inspect(value: object) -> str:
    """``value.inspect`` as Ruby 3.1 prints it, for YAML values (str, int, float, bool, None,
    list, dict): ``"a\\n"``, ``1``, ``0.5``, ``1.0e+16``, ``nil``, ``[1, "a"]``, ``{"a"=>1}``."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _ruby_inspect_string(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ruby_float_to_s(value)
    if isinstance(value, list):
        return "[" + ", ".join(ruby_inspect(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{ruby_inspect(k)}=>{ruby_inspect(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    return repr(value)


def _ruby_inspect_string(value: str) -> str:
    out = ['"']
    for index, char in enumerate(value):
        if char in _RUBY_STRING_ESCAPES:
            out.append(_RUBY_STRING_ESCAPES[char])
        elif char == "#" and value[index + 1 : index + 2] in ("{", "$", "@"):
            out.append("\\#")  # would start an interpolation in a Ruby literal
        elif char != "\x85" and unicodedata.category(char) in _RUBY_UNPRINTABLE_CATEGORIES:
            code = ord(char)
            out.append(f"\\u{code:04X}" if code < 0x10000 else f"\\u{{{code:X}}}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


# Reading inspect text back. A string literal: quotes around characters other than ``"`` and
# ``\``, or a backslash and the character it escapes (the unrolled loop never backtracks).
_STRING_LITERAL = r'"[^"\\]*(?:\\.[^"\\]*)*"'
# Ruby up to 3.3 writes ``"k"=>"v"``, Ruby 3.4 ``"k" => "v"``.
_PAIR = re.compile(rf"({_STRING_LITERAL})(?:=>| => )({_STRING_LITERAL})", re.DOTALL)
_STRING_HASH = re.compile(rf"\{{(?:{_PAIR.pattern}(?:, {_PAIR.pattern})*)?\}}", re.DOTALL)
_INSPECT_ESCAPE = re.compile(r"\\(u\{[0-9A-F]{1,6}\}|u[0-9A-F]{4}|.)", re.DOTALL)
_UNESCAPED = {escaped: char for char, escaped in _RUBY_STRING_ESCAPES.items()} | {"\\#": "#"}


def parse_ruby_string_hash(text: str) -> dict[str, str]:
    """The hash whose ``inspect`` is ``text``, for hashes of strings to strings only:
    ``{"a.rb"=>"eJw="}`` gives ``{"a.rb": "eJw="}``.

    A strict reader of what :func:`ruby_inspect` writes (Ruby 3.4's `` => `` too), never an
    evaluator: any other value (numbers, ``nil``, nested hashes), an escape Ruby does not
    write for valid UTF-8 (``\\x..``), a surrogate or a stray character raises ValueError.
    """
    if not _STRING_HASH.fullmatch(text):
        raise ValueError("not the inspect text of a hash of strings")
    return {_unquote(key): _unquote(value) for key, value in _PAIR.findall(text)}


def _unquote(literal: str) -> str:
    return _INSPECT_ESCAPE.sub(_unescape, literal[1:-1])


def _unescape(match: re.Match[str]) -> str:
    escape = match.group(0)
    if escape in _UNESCAPED:
        return _UNESCAPED[escape]
    if escape.startswith("\\u") and len(escape) > 2:
        code = int(escape[2:].strip("{}"), 16)
        if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF:
            return chr(code)
    raise ValueError(f"unexpected escape {escape!r} in inspect text")


# --------------------------------------------------------------------------- blank?

# Ruby's [[:space:]]: Python's whitespace minus the four information separators U+001C–U+001F.
_RUBY_SPACE_EXCLUDED = frozenset("\x1c\x1d\x1e\x1f")


def ruby_blank(value: object) -> bool:
    """ActiveSupport's ``blank?``: nil, false, empty collections, whitespace-only strings."""
    if isinstance(value, str):
        return all(c.isspace() and c not in _RUBY_SPACE_EXCLUDED for c in value)
    if isinstance(value, (list, dict)):
        return not value
    return value is None or value is False


# --------------------------------------------------------------------------- Float numbers

#: Decimal places :func:`ruby_round2` keeps.
_ROUND_DIGITS: Final = 2


def ruby_round2(x: float) -> float:
    """Ruby's ``Float#round(2)`` (``flo_round`` with ``round_half_up``, numeric.c).

    Half away from zero, on the decimal value the float was written as: with ``s = 100``,
    ``f = round(x * s)``, then ``f += 1`` when ``(f + 0.5) / s <= x`` (``x > 0``; mirrored
    for ``x < 0``); the result is ``f / s``. So 2.675 → 2.68 and 0.125 → 0.13, where Python's
    ``round`` gives 2.67 and 0.12. Zero, infinities and NaN are returned unchanged; values
    with more digits than a double holds are returned unchanged; tiny ones give 0.0.
    """
    if x == 0.0 or not math.isfinite(x):
        return x
    binexp = math.frexp(x)[1]
    if _round_overflows(_ROUND_DIGITS, binexp):
        return x
    if _round_underflows(_ROUND_DIGITS, binexp):
        return 0.0
    scale = 10.0**_ROUND_DIGITS
    return _round_half_up(x, scale) / scale


def _round_half_up(x: float, scale: float) -> float:
    rounded = _c_round(x * scale)
    # x * scale can fall just short of the half the decimal input had: 1.005 * 100 is
    # 100.49999999999999, yet (100 + 0.5) / 100 == 1.005, so 1.005 rounds up to 1.01.
    if x > 0:
        if (rounded + 0.5) / scale <= x:
            rounded += 1
    elif (rounded - 0.5) / scale >= x:
        rounded -= 1
    return rounded


def _c_round(x: float) -> float:
    """C ``round``: to nearest, halves away from zero."""
    magnitude = abs(x)
    whole = float(math.floor(magnitude))
    if magnitude - whole >= 0.5:
        whole += 1
    return math.copysign(whole, x)


# Ruby's float_round_overflow / float_round_underflow; DBL_DIG + 2 == 17.
_FLOAT_DIG: Final = 17


def _round_overflows(ndigits: int, binexp: int) -> bool:
    return ndigits >= _FLOAT_DIG - (_c_div(binexp, 4) if binexp > 0 else _c_div(binexp, 3) - 1)


def _round_underflows(ndigits: int, binexp: int) -> bool:
    return ndigits < -(_c_div(binexp, 3) + 1 if binexp > 0 else _c_div(binexp, 4))


def _c_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    quotient = abs(a) // b
    return quotient if a >= 0 else -quotient


#: Ruby prints whole floats whose decimal point falls after digit 15 (DBL_DIG) in e-notation.
_RUBY_MAX_FIXED_DECPT: Final = 15
_RUBY_MIN_FIXED_DECPT: Final = -3


def ruby_float_to_s(x: float) -> str:
    """Ruby's ``Float#to_s`` (``flo_to_s``): shortest round-trip digits, Ruby's layout.

    With ``d`` the shortest digits and ``p`` the decimal point position (``x = 0.d × 10^p``):
    ``d`` has digits after the point (``0 < p < len(d)``, so up to ``1234567890123456.8``) or
    ``p`` in ``1..15`` → fixed notation, always with a fraction (``94.29``, ``100.0``);
    ``p`` in ``-3..0`` → ``0.000ddd``; otherwise ``d.ddde±XX`` (``1.0e+15``, ``1.0e-05``).
    Also ``NaN``, ``Infinity``, ``-Infinity``, ``-0.0``.
    """
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    digits, decpt = _shortest_digits(abs(x))
    if 0 < decpt < len(digits):
        return f"{sign}{digits[:decpt]}.{digits[decpt:]}"
    if 0 < decpt <= _RUBY_MAX_FIXED_DECPT:
        return f"{sign}{digits}{'0' * (decpt - len(digits))}.0"
    if _RUBY_MIN_FIXED_DECPT <= decpt <= 0:
        return f"{sign}0.{'0' * -decpt}{digits}"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}e{decpt - 1:+03d}"


def _shortest_digits(x: float) -> tuple[str, int]:
    """Shortest digits ``d`` (no trailing zeros) and ``p`` with ``x == 0.d × 10^p``, x ≥ 0."""
    if x == 0.0:
        return "0", 1
    # repr() produces the same shortest round-trip digits as Ruby's dtoa mode 0.
    _sign, digit_tuple, exponent = Decimal(repr(x)).as_tuple()
    assert isinstance(exponent, int)  # finite input
    digits = "".join(map(str, digit_tuple))
    return digits.rstrip("0"), len(digits) + exponent
