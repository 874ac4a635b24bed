"""Ruby's ``inspect``, ``blank?``, ``Float#round(2)`` and ``Float#to_s``; expected values are
Ruby 3.1's, and where ``ruby`` is installed random inputs are compared with it directly."""

from __future__ import annotations

import json
import math
import random
import shutil
import struct
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cocov_jobs.ruby_text import (
    parse_ruby_string_hash,
    ruby_blank,
    ruby_float_to_s,
    ruby_inspect,
    ruby_round2,
)

needs_ruby = pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby is not installed")


def ruby_eval_lines(script: str, stdin: str) -> list[str]:
    """The lines one ``ruby -e script`` process prints for ``stdin``."""
    result = subprocess.run(
        ["ruby", "-e", script], input=stdin, capture_output=True, text=True, check=True
    )
    return result.stdout.split("\n")[:-1]  # not splitlines(): U+0085 is no line end here


# --------------------------------------------------------------------------- inspect


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "nil"),
        (True, "true"),
        (False, "false"),
        (1, "1"),
        (-(10**30), "-1000000000000000000000000000000"),
        (0.5, "0.5"),
        (100.0, "100.0"),
        (-0.0, "-0.0"),
        (1e14, "100000000000000.0"),
        (1e15, "1.0e+15"),
        (1.5e16, "1.5e+16"),
        (0.0001, "0.0001"),
        (0.00001, "1.0e-05"),
        (5e-324, "5.0e-324"),
        (123456789.123456789, "123456789.12345679"),
        (1965438708456390.2, "1965438708456390.2"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
        (float("nan"), "NaN"),
        ("a", '"a"'),
        ("", '""'),
        ('say "hi"\\', '"say \\"hi\\"\\\\"'),
        ("\n\r\t\f\v\b\a\x1b", '"\\n\\r\\t\\f\\v\\b\\a\\e"'),
        ("\x00\x7f\x80", '"\\u0000\\u007F\\u0080"'),
        ("\x85\xa0é😀", '"\x85\xa0é😀"'),
        ("\u2028\u2029", '"\\u2028\\u2029"'),
        ("\U0010ffff", '"\\u{10FFFF}"'),
        ("#{a} #$b #@c #d #", '"\\#{a} \\#$b \\#@c #d #"'),
        ([], "[]"),
        ([1, "a", None, [True]], '[1, "a", nil, [true]]'),
        ({}, "{}"),
        ({"a": 1, "b": {"c": [None]}}, '{"a"=>1, "b"=>{"c"=>[nil]}}'),
    ],
)
def test_ruby_inspect(value: object, shown: str) -> None:
    assert ruby_inspect(value) == shown


# --------------------------------------------------------------------------- reading inspect


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("{}", {}),
        ('{"a.rb"=>"eJw="}', {"a.rb": "eJw="}),
        ('{"a.rb" => "eJw=", "b.rb" => ""}', {"a.rb": "eJw=", "b.rb": ""}),  # Ruby 3.4
        ('{"say \\"hi\\"\\\\"=>"x"}', {'say "hi"\\': "x"}),
        ('{"\\n\\r\\t\\f\\v\\b\\a\\e"=>"x"}', {"\n\r\t\f\v\b\a\x1b": "x"}),
        ('{"\\#{a} #b \\#$c"=>"x"}', {"#{a} #b #$c": "x"}),
        ('{"\\u0000\\u007F\\u2028\\u{10FFFF}"=>"x"}', {"\x00\x7f\u2028\U0010ffff": "x"}),
        ('{"é😀\x85=>, "=>"x"}', {"é😀\x85=>, ": "x"}),
    ],
)
def test_parse_ruby_string_hash(text: str, parsed: dict[str, str]) -> None:
    assert parse_ruby_string_hash(text) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "",
        "bla",
        '"bla"',
        '{"a"=>1}',
        '{"a"=>nil}',
        '{"a"=>{"b"=>"c"}}',
        '{"a"=>["b"]}',
        '{:a=>"b"}',
        "{'a'=>'b'}",
        '{"a"=>"b",}',
        '{"a"=>"b"} ',
        '{"a"=>"b"}{}',
        '{"a" =>"b"}',
        '{"a"=>"b" , "c"=>"d"}',
        '{"a"=>"b"',
        '{"a=>"b"}',
        '{"a"=>"\\xFF"}',
        '{"a"=>"\\uD800"}',
        '{"a"=>"\\u{110000}"}',
        '{"a"=>"\\u00e9"}',
        '{"a"=>"\\q"}',
        '{"a"=>"b\\"}',
    ],
)
def test_parse_ruby_string_hash_rejects_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ruby_string_hash(text)


printable_text = st.text(st.characters(blacklist_categories=("Cs",)))


@given(st.dictionaries(printable_text, printable_text, max_size=5))
def test_parse_ruby_string_hash_reads_back_ruby_inspect(value: dict[str, str]) -> None:
    assert parse_ruby_string_hash(ruby_inspect(value)) == value


# --------------------------------------------------------------------------- blank?


@pytest.mark.parametrize(
    ("value", "blank"),
    [
        (None, True),
        (False, True),
        ("", True),
        (" \t\n\u3000", True),
        ([], True),
        ({}, True),
        ("\x1c", False),
        ("a", False),
        (0, False),
        (True, False),
        ([None], False),
    ],
)
def test_ruby_blank(value: object, blank: bool) -> None:
    assert ruby_blank(value) is blank


# --------------------------------------------------------------------------- floats


@pytest.mark.parametrize(
    ("value", "rounded"),
    # Expected values printed by Ruby 3.1's Float#round(2).
    [
        (2.675, 2.68),
        (1.005, 1.01),
        (0.125, 0.13),
        (94.28571428571429, 94.29),
        (33.335, 33.34),
        (0.285, 0.29),
        (1.115, 1.12),
        (8.345, 8.35),
        (10.005, 10.01),
        (99.995, 100.0),
        (99.994999, 99.99),
        (0.005, 0.01),
        (0.015, 0.02),
        (0.045, 0.05),
        (57.14285714285714, 57.14),
        (28.999999999999996, 29.0),
        (66.66666666666666, 66.67),
        (33.33333333333333, 33.33),
        (-1.005, -1.01),
        (-0.125, -0.13),
        (-2.675, -2.68),
        (1.0e-300, 0.0),
        (5.0e-324, 0.0),
        (123456789012345.67, 123456789012345.69),
        (1.0e20, 1.0e20),
        (0.30000000000000004, 0.3),
        (4503599627370495.5, 4503599627370495.5),
        (0.001, 0.0),
        (0.994999999999999, 0.99),
        (100.0, 100.0),
        (0.0, 0.0),
    ],
)
def test_ruby_round2(value: float, rounded: float) -> None:
    assert ruby_round2(value) == rounded


def test_ruby_round2_differs_from_python_round_on_decimal_halves() -> None:
    assert (round(2.675, 2), ruby_round2(2.675)) == (2.67, 2.68)


def test_ruby_round2_passes_through_non_finite_values_and_signed_zero() -> None:
    assert math.isnan(ruby_round2(math.nan))
    assert ruby_round2(math.inf) == math.inf
    assert math.copysign(1.0, ruby_round2(-0.0)) == -1.0


@pytest.mark.parametrize(
    ("value", "text"),
    # Expected values printed by Ruby 3.1's Float#to_s.
    [
        (94.29, "94.29"),
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (100.0, "100.0"),
        (50.5, "50.5"),
        (33.33, "33.33"),
        (5.0, "5.0"),
        (123456789012345.0, "123456789012345.0"),
        (1.0e15, "1.0e+15"),
        (1.0e16, "1.0e+16"),
        (1234567890123456.8, "1234567890123456.8"),
        (12345678901234567.0, "1.2345678901234568e+16"),
        (0.0001, "0.0001"),
        (0.00012, "0.00012"),
        (1.0e-05, "1.0e-05"),
        (1.5e300, "1.5e+300"),
        (-2.68, "-2.68"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
        (math.nan, "NaN"),
    ],
)
def test_ruby_float_to_s(value: float, text: str) -> None:
    assert ruby_float_to_s(value) == text


def random_floats(count: int) -> list[float]:
    """Floats from every range Ruby prints differently: raw bit patterns, values around the
    fixed/exponent borders (1e-4, 1e15, 1e16) and percentages with few decimals."""
    rng = random.Random(20240601)
    values: list[float] = []
    while len(values) < count:
        kind = rng.randrange(3)
        if kind == 0:
            value = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        elif kind == 1:
            value = rng.uniform(1, 10) * 10.0 ** rng.randint(-6, 18)
        else:
            value = round(rng.uniform(0, 100), rng.randint(0, 4)) + rng.choice((0.0, 0.005))
        if math.isfinite(value):
            values.append(value)
    return values


@needs_ruby
def test_float_to_s_round2_and_inspect_agree_with_ruby() -> None:
    values = random_floats(3000)
    texts = ["Hello", "#{x}", "tab\tnl\n", "\x00\x7f\x85\u2028", "é😀\U0010ffff"]
    # Floats travel as their exact bit pattern, strings as JSON.
    lines = ruby_eval_lines(
        "require 'json'; $stdin.each_line { |l| k, v = l.split(' ', 2); "
        "if k == 'f' then f = [v.to_i].pack('Q').unpack1('D'); puts f.to_s, f.round(2).to_s "
        "else puts JSON.parse(v).inspect end }",
        "".join(f"f {struct.unpack('<Q', struct.pack('<d', v))[0]}\n" for v in values)
        + "".join(f"s {json.dumps(text)}\n" for text in texts),
    )
    ours = [text for v in values for text in (ruby_float_to_s(v), ruby_float_to_s(ruby_round2(v)))]
    assert lines == ours + [ruby_inspect(text) for text in texts]
