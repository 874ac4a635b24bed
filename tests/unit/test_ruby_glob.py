"""Ruby's ``File.fnmatch`` with ``FNM_PATHNAME | FNM_EXTGLOB``, checked against Ruby itself."""

from __future__ import annotations

import json
import random
import shutil
import subprocess

import pytest

from cocov_jobs.ruby_glob import PatternTooComplexError, glob_match

# Ruby File.fnmatch(pattern, path, File::FNM_PATHNAME | File::FNM_EXTGLOB), from its
# documented behaviour; every row was also confirmed with Ruby 3.1.
GLOB_CASES = [
    # plain text, case-sensitive, whole path
    ("cat", "cat", True),
    ("cat", "category", False),
    ("cat", "CAT", False),
    ("", "", True),
    ("a/b", "a/b", True),
    ("a/b", "a/b/", False),
    ("a/", "a", False),
    # ? and * never cross "/"
    ("c?t", "cat", True),
    ("c??t", "cat", False),
    ("c*", "cats", True),
    ("c*t", "c/a/b/t", False),
    ("?", "/", False),
    ("*", "/", False),
    ("*", "", True),
    ("coverage/*", "coverage/a.rb", True),
    ("coverage/*", "coverage/x/a.rb", False),
    ("coverage/*", "coverage/", True),
    ("coverage/**", "coverage/x/a.rb", False),
    ("*/*.rb", "lib/song.rb", True),
    ("a*b*c", "axxbyyc", True),
    ("a*b*c", "axxbyy", False),
    # **/ is zero or more whole directories, only at the start of a component
    ("**/*.rb", "a.rb", True),
    ("**/*.rb", "x/y/a.rb", True),
    ("**/foo", "a/b/c/foo", True),
    ("**/foo", "/a/b/c/foo", True),
    ("**/foo", "c:/a/b/c/foo", True),
    ("**/foo", "a/.b/c/foo", False),
    ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/y/b", True),
    ("a/**/b", "a//b", True),
    ("a/**/**/b", "a/x/b", True),
    ("a**/b", "ax/b", True),
    ("a**/b", "a/x/b", False),
    ("a/**/", "a/x/", True),
    ("a/**/", "a/x", False),
    ("spec/**/.ignore", "spec/.ignore", True),
    ("spec/**/.ignore", "spec/a/.ignore", True),
    ("spec/**/.ignore", "spec/a/b/.ignore", True),
    ("spec/**/.ignore", "spec/.a/.ignore", False),
    ("spec/**/.ignore", "spec/a/ignore", False),
    # leading dots are matched only by a literal dot
    ("*", ".hidden", False),
    (".*", ".profile", True),
    ("?hidden", ".hidden", False),
    ("[.]hidden", ".hidden", False),
    ("\\.hidden", ".hidden", True),
    ("a/*", "a/.b", False),
    ("*/b", ".a/b", False),
    ("*.rb", "a.b.rb", True),
    ("a*", "a.b", True),
    ("**/*", ".a", False),
    ("**/*", "x/.a", False),
    ("**/.*", "x/.a", True),
    ("{.,}*", ".a", True),
    # bracket expressions
    ("ca[a-z]", "cat", True),
    ("ca[^t]", "cat", False),
    ("ca[!t]", "cab", True),
    ("[a-c].rb", "b.rb", True),
    ("[a-c].rb", "d.rb", False),
    ("[a-c].rb", "B.rb", False),
    ("[c-a]", "b", False),
    ("[c-a]", "a", True),
    ("[a-]", "-", True),
    ("[-a]", "-", True),
    ("[\\]]", "]", True),
    ("[\\?]", "?", True),
    ("[/]", "/", False),
    ("a[/]b", "a/b", False),
    ("[!a]", "/", False),
    ("[]", "]", False),
    ("[]a]", "a", False),
    ("[!]", "x", True),
    ("[!]]", "x]", True),
    ("[abc", "[abc", False),
    ("[abc", "a", False),
    ("[é]", "é", True),
    # escapes
    ("\\*.rb", "*.rb", True),
    ("\\*.rb", "a.rb", False),
    ("\\?", "?", True),
    ("\\a", "a", True),
    ("a\\/b", "a/b", True),
    ("a\\", "a", True),
    ("\\{a,b}", "{a,b}", True),
    ("\\{a,b}", "a", False),
    # braces
    ("c{at,ub}s", "cats", True),
    ("c{at,ub}s", "cubs", True),
    ("c{at,ub}s", "cs", False),
    ("{lib,app}/*.rb", "lib/a.rb", True),
    ("{lib,app}/*.rb", "app/a.rb", True),
    ("{lib,app}/*.rb", "spec/a.rb", False),
    ("{a,{b,c}d}", "cd", True),
    ("{a,{b,c}d}", "c", False),
    ("{,a}b", "b", True),
    ("{}", "", True),
    ("{a", "{a", False),
    ("{a", "a", False),
    ("a}", "a}", True),
    ("{a,b}}", "a}", True),
    ("{a\\,b}", "a,b", True),
    ("{**/,}x", "y/z/x", True),
    ("[{a,b]}", "a", False),
    ("[{a,b]}", "b", True),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), GLOB_CASES)
def test_glob_match(pattern: str, path: str, expected: bool) -> None:
    assert glob_match(pattern, path) is expected


def ruby_fnmatch(cases: list[tuple[str, str]]) -> list[bool]:
    """Ruby's own answers, from one ``ruby`` process."""
    script = (
        "require 'json'; f = File::FNM_PATHNAME | File::FNM_EXTGLOB; "
        "puts JSON.generate(JSON.parse($stdin.read).map { |p, s| File.fnmatch(p, s, f) })"
    )
    result = subprocess.run(
        ["ruby", "-e", script], input=json.dumps(cases), capture_output=True, text=True, check=True
    )
    answers: list[bool] = json.loads(result.stdout)
    return answers


RUBY = shutil.which("ruby")
needs_ruby = pytest.mark.skipif(RUBY is None, reason="ruby is not installed")


@needs_ruby
def test_glob_table_agrees_with_ruby() -> None:
    assert ruby_fnmatch([(p, s) for p, s, _ in GLOB_CASES]) == [e for _, _, e in GLOB_CASES]


@needs_ruby
def test_glob_match_agrees_with_ruby_on_generated_cases() -> None:
    # Paths are built from the same pattern tokens so that about half the cases match.
    instances = {
        "*": ["", "a", "ab", ".", "a.b"],
        "**/": ["", "a/", ".a/", "a/b/", "a/.b/"],
        "?": ["a", ".", "/"],
        "[a-b]": ["a", "b", "c"],
        "[!a]": ["a", "b", "."],
        "[b-a]": ["a", "b", "ab"],
        "[!]": ["x", "."],
        "{a,b}": ["a", "b"],
        "{,.}": ["", "."],
        "{a,{b,.}}": ["a", "b", "."],
        "\\*": ["*", "a"],
        "\\/": ["/"],
        "[a-]": ["-", "a"],
        "[\\]]": ["]"],
        "{**/,}": ["", "x/", ".x/"],
        "[{a,b]}": ["a", "b", "{", "]"],
        "[": ["[", "a"],
        "{": ["{", ""],
    }
    tokens = [*instances, "a", "b", ".", "/", "-", "]", "}", ",", "\\", "é"]
    rng = random.Random(20240601)
    cases = []
    for _ in range(3000):
        chosen = [rng.choice(tokens) for _ in range(rng.randint(0, 7))]
        path = "".join(rng.choice(instances.get(token, [token])) for token in chosen)
        cases.append(("".join(chosen), path))
    expected = ruby_fnmatch(cases)
    assert [(p, s, glob_match(p, s)) for p, s in cases] == [
        (p, s, e) for (p, s), e in zip(cases, expected, strict=True)
    ]


def test_brace_expansion_over_budget_raises() -> None:
    with pytest.raises(PatternTooComplexError):
        glob_match("{a,b}" * 20, "a")
    assert glob_match("{a,b}/{c,d}/{e,f}/{g,h}/*.rb", "b/c/f/g/x.rb")
