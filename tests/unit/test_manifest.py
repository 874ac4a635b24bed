"""Tests for the ``.cocov.yaml`` parser (docs/architecture.md §6.6, §7.13)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cocov_jobs.manifest import (
    DUPLICATED_MOUNT_DESTINATION,
    INVALID_MOUNT_SOURCE,
    INVALID_OR_MISSING_DATA,
    MANIFEST_FILE,
    MAX_CHECKS,
    MAX_EXCLUDE_PATHS,
    MAX_MANIFEST_BYTES,
    MAX_NESTING_DEPTH,
    MISSING_VERSION,
    ROOT_MUST_BE_MAPPING,
    VERSION_TYPE_MISMATCH,
    VERSION_UNSUPPORTED,
    Check,
    CoverageSettings,
    InvalidManifestError,
    Manifest,
    Mount,
    parse_manifest,
)
from cocov_jobs.ruby_glob import MAX_PATTERN_EXPANSION_CHARS

DATA = Path(__file__).parent.parent / "data" / "manifests"
V = 'version: "0.1.alpha"\n'
ALL_CODES = {
    ROOT_MUST_BE_MAPPING,
    MISSING_VERSION,
    VERSION_TYPE_MISMATCH,
    VERSION_UNSUPPORTED,
    INVALID_OR_MISSING_DATA,
    DUPLICATED_MOUNT_DESTINATION,
    INVALID_MOUNT_SOURCE,
}


def error_of(text: str | bytes) -> InvalidManifestError:
    with pytest.raises(InvalidManifestError) as info:
        parse_manifest(text)
    return info.value


def assert_error(text: str | bytes, code: str, message: str) -> None:
    error = error_of(text)
    assert (error.code, error.message) == (code, message)


def invalid_data_message(text: str | bytes) -> str:
    error = error_of(text)
    assert error.code == INVALID_OR_MISSING_DATA
    return error.message


def mount(source: str, destination: str) -> Mount:
    return Mount(source=source, destination=destination)


# --- Fixtures (copied from Cocov's spec/fixtures/manifests) ------------------------------------


def test_manifest_file_name() -> None:
    assert MANIFEST_FILE == ".cocov.yaml"


def test_complete_fixture() -> None:
    manifest = parse_manifest((DATA / "v0.1alpha" / "complete.yaml").read_bytes())
    assert manifest == Manifest(
        version="0.1.alpha",
        coverage=CoverageSettings(min_percent=90),
        exclude_paths=("coverage/*", "spec/**/.ignore"),
        checks=(
            Check(plugin="cocov/rubocop:v0.1", envs={"TEST": "true"}, mounts=None),
            Check(
                plugin="cocov/brakeman:v0.1",
                envs=None,
                mounts=(mount("secrets:FOO", "~/test"),),
            ),
        ),
    )
    assert manifest.checks[1].mounts is not None
    assert manifest.checks[1].mounts[0].secret_name == "FOO"


def test_complete_fixture_exclusions() -> None:
    manifest = parse_manifest((DATA / "v0.1alpha" / "complete.yaml").read_text())
    assert manifest.path_excluded("coverage/index.html")
    assert not manifest.path_excluded("coverage/assets/app.js")
    assert manifest.path_excluded("spec/.ignore")
    assert manifest.path_excluded("spec/models/.ignore")
    assert not manifest.path_excluded("spec/models/user_spec.rb")
    assert not manifest.path_excluded("lib/coverage/a.rb")


def test_with_defaults_fixture() -> None:
    manifest = parse_manifest((DATA / "v0.1alpha" / "with_defaults.yaml").read_text())
    envs, mounts = {"TEST": "true"}, (mount("secrets:FOO", "~/test"),)
    assert manifest.checks == (
        Check(plugin="cocov/rubocop:v0.1", envs=envs, mounts=mounts),
        Check(plugin="cocov/brakeman:v0.1", envs=envs, mounts=mounts),
    )
    assert manifest.checks[0].envs is not manifest.checks[1].envs


def test_check_envs_fixture() -> None:
    manifest = parse_manifest((DATA / "v0.1alpha" / "check_envs.yaml").read_text())
    assert [(c.plugin, c.envs, c.mounts) for c in manifest.checks] == [
        ("cocov/golangci-lint:v0.1", {"GOPRIVATE": "github.com/cocov-ci"}, None),
        ("cocov/brakeman:v0.1", None, None),
        ("cocov/bundler-audit:v0.1", None, None),
    ]
    assert manifest.exclude_paths == ()


def test_check_mounts_fixture() -> None:
    manifest = parse_manifest((DATA / "v0.1alpha" / "check_mounts.yaml").read_text())
    assert manifest.checks[0].mounts == (mount("secrets:GIT_CONFIG", "~/.gitconfig"),)
    assert manifest.checks[0].mounts[0].secret_name == "GIT_CONFIG"
    assert manifest.checks[1].mounts is None


@pytest.mark.parametrize(
    ("fixture", "code", "message"),
    [
        (
            "invalid_mapping.yaml",
            ROOT_MUST_BE_MAPPING,
            "Invalid manifest: Root should be a mapping",
        ),
        ("no_version.yaml", MISSING_VERSION, "Invalid manifest: Missing version field"),
        (
            "invalid_version.yaml",
            VERSION_TYPE_MISMATCH,
            "Invalid manifest: Version must be a string",
        ),
        ("unknown_version.yaml", VERSION_UNSUPPORTED, "Invalid manifest: Unsupported version bla"),
        (
            "v0.1alpha/check_invalid_mounts.yaml",
            INVALID_MOUNT_SOURCE,
            "Invalid mount source `https://GIT_CONFIG' in plugin `cocov/golangci-lint:v0.1': "
            "Only secrets are mountable.",
        ),
        (
            "v0.1alpha/extra_check_keys.yaml",
            INVALID_OR_MISSING_DATA,
            "Unexpected extra key `unexpected_key' on `checks.1'",
        ),
        (
            "v0.1alpha/extra_coverage_keys.yaml",
            INVALID_OR_MISSING_DATA,
            "Unexpected extra key `unexpected_key' on `coverage'",
        ),
    ],
)
def test_invalid_fixtures(fixture: str, code: str, message: str) -> None:
    assert_error((DATA / fixture).read_bytes(), code, message)


def test_error_str_is_the_message() -> None:
    error = error_of("- 1")
    assert str(error) == error.message == "Invalid manifest: Root should be a mapping"
    assert error.args == (error.message,)


# --- Error table, in order ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ["- a", "a", "1", "~", "", "# only a comment\n", "---\n", "[]"])
def test_root_must_be_mapping(text: str) -> None:
    assert_error(text, ROOT_MUST_BE_MAPPING, "Invalid manifest: Root should be a mapping")


@pytest.mark.parametrize(
    "text",
    [
        "checks: []",
        "version: ~",
        "version:",
        'version: ""',
        'version: "  \\t"',
        'version: "\\u00a0\\u3000"',
        "version: false",
        "version: []",
        "version: {}",
        "{}",
    ],
)
def test_missing_version(text: str) -> None:
    assert_error(text, MISSING_VERSION, "Invalid manifest: Missing version field")


@pytest.mark.parametrize(
    "text", ["version: 0.1", "version: 1", "version: true", "version: [a]", "version: {a: b}"]
)
def test_version_type_mismatch(text: str) -> None:
    assert_error(text, VERSION_TYPE_MISMATCH, "Invalid manifest: Version must be a string")


def test_version_of_information_separators_is_not_blank() -> None:
    # U+001C..U+001F are whitespace to Python, not to Ruby's [[:space:]].
    assert_error(
        'version: "\\x1c"', VERSION_UNSUPPORTED, "Invalid manifest: Unsupported version \x1c"
    )


@pytest.mark.parametrize(
    ("version", "shown"),
    [
        ("bla", "bla"),
        ('"0.1.ALPHA"', "0.1.ALPHA"),
        ('"0.1.alpha "', "0.1.alpha "),
        ("0.1.0", "0.1.0"),
    ],
)
def test_version_unsupported(version: str, shown: str) -> None:
    assert_error(
        f"version: {version}", VERSION_UNSUPPORTED, f"Invalid manifest: Unsupported version {shown}"
    )


def test_errors_are_checked_in_table_order() -> None:
    assert error_of("- version: 1").code == ROOT_MUST_BE_MAPPING
    assert error_of("foo: 1\nchecks: 3").code == MISSING_VERSION
    assert error_of("version: 2\nfoo: 1").code == VERSION_TYPE_MISMATCH
    assert error_of("version: x\nfoo: 1").code == VERSION_UNSUPPORTED
    schema_and_mounts = (
        V + "checks:\n  - {plugin: a, mounts: [{source: x, destination: y}]}\n  - {plugin: 1}\n"
    )
    assert error_of(schema_and_mounts).code == INVALID_OR_MISSING_DATA


# --- Validator messages ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("foo: 1", "Unexpected extra key `foo' on `'"),
        (
            "coverage: {min_percent: 0.5}",
            "Expected coverage.min_percent to match Integer. "
            "Assertion failed due to current object's value: 0.5",
        ),
        (
            'coverage: {min_percent: "90"}',
            "Expected coverage.min_percent to match Integer. "
            'Assertion failed due to current object\'s value: "90"',
        ),
        (
            "coverage: {min_percent: true}",
            "Expected coverage.min_percent to match Integer. "
            "Assertion failed due to current object's value: true",
        ),
        (
            "coverage: {min_percent: 1.0e+20}",
            "Expected coverage.min_percent to match Integer. "
            "Assertion failed due to current object's value: 1.0e+20",
        ),
        (
            "coverage: {min_percent: -.inf}",
            "Expected coverage.min_percent to match Integer. "
            "Assertion failed due to current object's value: -Infinity",
        ),
        (
            'coverage: [1, "a"]',
            "Expected coverage to match Hash. "
            'Assertion failed due to current object\'s value: [1, "a"]',
        ),
        ("coverage: {extra: 1}", "Unexpected extra key `extra' on `coverage'"),
        (
            "exclude_paths: foo",
            "Expected exclude_paths to match Array. "
            'Assertion failed due to current object\'s value: "foo"',
        ),
        ('exclude_paths: [""]', "Expected exclude_paths.0 to not be blank"),
        ("exclude_paths: [a, ' ']", "Expected exclude_paths.1 to not be blank"),
        (
            "exclude_paths: [a, 1]",
            "Expected exclude_paths.1 to match string. "
            "Assertion failed due to current object's value: 1",
        ),
        (
            "exclude_paths: [~]",
            "Expected exclude_paths.0 to match string. "
            "Assertion failed due to current object's value: nil",
        ),
        (
            "checks: {a: 1}",
            "Expected checks to match Array. "
            'Assertion failed due to current object\'s value: {"a"=>1}',
        ),
        (
            "checks: [~]",
            "Expected checks.0 to match Hash. Assertion failed due to current object's value: nil",
        ),
        ("checks: [{}]", "checks.0 is missing a required key: plugin"),
        ("checks: [{plugin: a}, {envs: {}}]", "checks.1 is missing a required key: plugin"),
        ("checks: [{plugin: ' '}]", "Expected checks.0.plugin to not be blank"),
        (
            "checks: [{plugin: a}, {plugin: 1}]",
            "Expected checks.1.plugin to match string. "
            "Assertion failed due to current object's value: 1",
        ),
        (
            "checks: [{plugin: a, envs: [A]}]",
            "Expected checks.0.envs to match Hash. "
            'Assertion failed due to current object\'s value: ["A"]',
        ),
        (
            "checks: [{plugin: a, envs: {A: 1}}]",
            "Expected checks.0.envs.A to match string. "
            "Assertion failed due to current object's value: 1",
        ),
        (
            "checks: [{plugin: a, envs: {A: yes}}]",  # YAML 1.1 boolean, as in Psych
            "Expected checks.0.envs.A to match string. "
            "Assertion failed due to current object's value: true",
        ),
        (
            "checks: [{plugin: a, envs: {A: ~}}]",
            "Expected checks.0.envs.A to match string. "
            "Assertion failed due to current object's value: nil",
        ),
        (
            "checks: [{plugin: a, mounts: {source: x}}]",
            "Expected checks.0.mounts to match Array. "
            'Assertion failed due to current object\'s value: {"source"=>"x"}',
        ),
        (
            "checks: [{plugin: a, mounts: [{}]}]",
            "checks.0.mounts.0 is missing a required key: source",
        ),
        (
            "checks: [{plugin: a, mounts: [{source: 'secrets:A'}]}]",
            "checks.0.mounts.0 is missing a required key: destination",
        ),
        (
            "checks: [{plugin: a, mounts: [{source: 'secrets:A', destination: b, mode: ro}]}]",
            "Unexpected extra key `mode' on `checks.0.mounts.0'",
        ),
        (
            "checks: [{plugin: a, mounts: [{source: '', destination: b}]}]",
            "Expected checks.0.mounts.0.source to not be blank",
        ),
        (
            "checks: [{plugin: a, mounts: [{source: 'secrets:A', destination: [b]}]}]",
            "Expected checks.0.mounts.0.destination to match string. "
            'Assertion failed due to current object\'s value: ["b"]',
        ),
        (
            "defaults: []",
            "Expected defaults to match Hash. Assertion failed due to current object's value: []",
        ),
        ("defaults: {foo: 1}", "Unexpected extra key `foo' on `defaults'"),
        ("defaults: {checks: {foo: 1}}", "Unexpected extra key `foo' on `defaults.checks'"),
        (
            "defaults: {checks: {envs: {A: [1, {b: ~}]}}}",
            "Expected defaults.checks.envs.A to match string. "
            'Assertion failed due to current object\'s value: [1, {"b"=>nil}]',
        ),
        (
            "defaults: {checks: {mounts: [{source: 'secrets:A', destination: ''}]}}",
            "Expected defaults.checks.mounts.0.destination to not be blank",
        ),
    ],
)
def test_validator_messages(body: str, message: str) -> None:
    assert invalid_data_message(V + body) == message


def test_values_are_shown_with_ruby_inspect() -> None:
    body = 'coverage: {min_percent: "a\\"b\\\\c\\n#{x}\\u0000é"}'
    assert invalid_data_message(V + body) == (
        "Expected coverage.min_percent to match Integer. "
        'Assertion failed due to current object\'s value: "a\\"b\\\\c\\n\\#{x}\\u0000é"'
    )


def test_keys_are_checked_in_document_order_before_missing_keys() -> None:
    # Cocov's HashValidator walks the given keys first, then looks for missing required ones.
    assert invalid_data_message(V + "checks: [{envs: {A: 1}}]") == (
        "Expected checks.0.envs.A to match string. "
        "Assertion failed due to current object's value: 1"
    )
    coverage_first = "coverage: {min_percent: x}\nchecks: [{plugin: 1}]"
    assert invalid_data_message(V + coverage_first).startswith("Expected coverage.min_percent")
    checks_first = "checks: [{plugin: 1}]\ncoverage: {min_percent: x}"
    assert invalid_data_message(V + checks_first).startswith("Expected checks.0.plugin")


def test_keys_that_only_look_special_are_ordinary() -> None:
    assert invalid_data_message(V + "<<: {coverage: {}}") == "Unexpected extra key `<<' on `'"
    assert invalid_data_message(V + "'1': a") == "Unexpected extra key `1' on `'"


def test_duplicated_key_keeps_the_last_value() -> None:
    manifest = parse_manifest(V + "coverage: {min_percent: 1}\ncoverage: {min_percent: 2}")
    assert manifest.coverage == CoverageSettings(min_percent=2)


def test_at_most_max_checks() -> None:
    checks = "".join(f"  - plugin: p{i}\n" for i in range(MAX_CHECKS))
    assert len(parse_manifest(V + "checks:\n" + checks).checks) == MAX_CHECKS
    assert invalid_data_message(V + "checks:\n" + checks + "  - plugin: last\n") == (
        f"Expected list at checks to have at most {MAX_CHECKS} items. "
        f"Assertion failed due to current list's length: {MAX_CHECKS + 1}"
    )


def test_at_most_max_exclude_paths() -> None:
    paths = "".join(f"  - p{i}/\n" for i in range(MAX_EXCLUDE_PATHS + 1))
    assert invalid_data_message(V + "exclude_paths:\n" + paths) == (
        f"Expected list at exclude_paths to have at most {MAX_EXCLUDE_PATHS} items. "
        f"Assertion failed due to current list's length: {MAX_EXCLUDE_PATHS + 1}"
    )


# --- Explicit nulls (docs/architecture.md §7.13) -------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "checks: ~",
        "defaults: ~",
        "defaults: {checks: ~}",
        "defaults: {checks: {envs: ~, mounts: ~}}",
        "coverage: ~",
        "exclude_paths: ~",
        "checks: [{plugin: a, envs: ~, mounts: ~}]",
    ],
)
def test_explicit_nulls_mean_absent(body: str) -> None:
    manifest = parse_manifest(V + body)
    assert manifest.coverage is None
    assert manifest.exclude_paths == ()
    assert all(check.envs is None and check.mounts is None for check in manifest.checks)


def test_null_and_empty_coverage() -> None:
    assert parse_manifest(V + "coverage: {}").coverage == CoverageSettings(min_percent=None)
    empty = parse_manifest(V + "coverage: {min_percent: ~}").coverage
    assert empty == CoverageSettings(min_percent=None)
    assert parse_manifest(V + "coverage: {min_percent: 0}").coverage == CoverageSettings(0)
    assert parse_manifest(V + "coverage: {min_percent: 0x10}").coverage == CoverageSettings(16)


def test_minimal_manifest() -> None:
    assert parse_manifest(V) == Manifest(
        version="0.1.alpha", coverage=None, exclude_paths=(), checks=()
    )


# --- Defaults: envs merge, mounts merge and validation -----------------------------------------


def test_default_envs_are_merged_and_check_values_win() -> None:
    manifest = parse_manifest(
        V + "defaults: {checks: {envs: {A: d, B: d}}}\n"
        "checks:\n"
        "  - {plugin: one, envs: {B: own, C: own}}\n"
        "  - {plugin: two}\n"
        "  - {plugin: three, envs: {}}\n"
    )
    assert [check.envs for check in manifest.checks] == [
        {"A": "d", "B": "own", "C": "own"},
        {"A": "d", "B": "d"},
        {"A": "d", "B": "d"},
    ]


def test_envs_without_defaults() -> None:
    manifest = parse_manifest(
        V + "checks: [{plugin: a, envs: {A: ''}}, {plugin: b}, {plugin: c, envs: {}}]"
    )
    assert [check.envs for check in manifest.checks] == [{"A": ""}, None, {}]


def test_empty_default_envs_give_empty_envs() -> None:
    manifest = parse_manifest(V + "defaults: {checks: {envs: {}}}\nchecks: [{plugin: a}]")
    assert manifest.checks[0].envs == {}


def test_default_mounts_follow_the_checks_own_unless_destination_is_taken() -> None:
    manifest = parse_manifest(
        V + "defaults:\n"
        "  checks:\n"
        "    mounts:\n"
        "      - {source: 'secrets:D1', destination: /a}\n"
        "      - {source: 'secrets:D2', destination: /b}\n"
        "checks:\n"
        "  - plugin: own\n"
        "    mounts:\n"
        "      - {source: 'secrets:O1', destination: /b}\n"
        "      - {source: 'secrets:O2', destination: /c}\n"
        "  - plugin: none\n"
        "  - {plugin: empty, mounts: []}\n"
    )
    assert [check.mounts for check in manifest.checks] == [
        (mount("secrets:O1", "/b"), mount("secrets:O2", "/c"), mount("secrets:D1", "/a")),
        (mount("secrets:D1", "/a"), mount("secrets:D2", "/b")),
        (mount("secrets:D1", "/a"), mount("secrets:D2", "/b")),
    ]


def test_mounts_without_defaults() -> None:
    manifest = parse_manifest(
        V + "checks: [{plugin: a, mounts: [{source: 'secrets:X', destination: /x}]}, "
        "{plugin: b}, {plugin: c, mounts: []}]"
    )
    assert [check.mounts for check in manifest.checks] == [
        (mount("secrets:X", "/x"),),
        None,
        (),
    ]


def test_secret_name() -> None:
    assert mount("secrets:GIT_CONFIG", "/x").secret_name == "GIT_CONFIG"
    assert mount("secrets:", "/x").secret_name == ""
    assert mount("secrets:secrets:a", "/x").secret_name == "secrets:a"


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (
            "defaults: {checks: {mounts: [{source: 'secrets:A', destination: /a}, "
            "{source: 'secrets:B', destination: /a}]}}",
            DUPLICATED_MOUNT_DESTINATION,
            "Duplicated mount destination `/a' in defaults definition",
        ),
        (
            "defaults: {checks: {mounts: [{source: 'https://x', destination: /a}]}}",
            INVALID_MOUNT_SOURCE,
            "Invalid mount source `https://x' in defaults definition: Only secrets are mountable.",
        ),
        (
            "checks: [{plugin: 'cocov/x:v1', mounts: [{source: 'secrets:A', destination: /a}, "
            "{source: 'secrets:B', destination: /a}]}]",
            DUPLICATED_MOUNT_DESTINATION,
            "Duplicated mount destination `/a' in plugin `cocov/x:v1'",
        ),
        (
            "checks: [{plugin: p, mounts: [{source: 'SECRETS:A', destination: /a}]}]",
            INVALID_MOUNT_SOURCE,
            "Invalid mount source `SECRETS:A' in plugin `p': Only secrets are mountable.",
        ),
        (
            # Stricter than Ruby's /^secrets:/, which also matches after a newline.
            'checks: [{plugin: p, mounts: [{source: "x\\nsecrets:A", destination: /a}]}]',
            INVALID_MOUNT_SOURCE,
            "Invalid mount source `x\nsecrets:A' in plugin `p': Only secrets are mountable.",
        ),
        (
            # Per mount, the destination is checked before the source.
            "checks: [{plugin: p, mounts: [{source: 'bad', destination: /a}, "
            "{source: 'secrets:B', destination: /a}]}]",
            INVALID_MOUNT_SOURCE,
            "Invalid mount source `bad' in plugin `p': Only secrets are mountable.",
        ),
        (
            "checks: [{plugin: p, mounts: [{source: 'secrets:A', destination: /a}, "
            "{source: 'bad', destination: /a}]}]",
            DUPLICATED_MOUNT_DESTINATION,
            "Duplicated mount destination `/a' in plugin `p'",
        ),
        (
            # The defaults are validated before any check.
            "checks: [{plugin: p, mounts: [{source: 'bad', destination: /a}]}]\n"
            "defaults: {checks: {mounts: [{source: 'worse', destination: /a}]}}",
            INVALID_MOUNT_SOURCE,
            "Invalid mount source `worse' in defaults definition: Only secrets are mountable.",
        ),
        (
            "checks:\n"
            "  - {plugin: ok, mounts: [{source: 'secrets:A', destination: /a}]}\n"
            "  - {plugin: second, mounts: [{source: 'file:x', destination: /a}]}",
            INVALID_MOUNT_SOURCE,
            "Invalid mount source `file:x' in plugin `second': Only secrets are mountable.",
        ),
    ],
)
def test_mount_validation(body: str, code: str, message: str) -> None:
    assert_error(V + body, code, message)


def test_check_mount_may_reuse_a_default_destination() -> None:
    manifest = parse_manifest(
        V + "defaults: {checks: {mounts: [{source: 'secrets:D', destination: /a}]}}\n"
        "checks: [{plugin: p, mounts: [{source: 'secrets:O', destination: /a}]}]"
    )
    assert manifest.checks[0].mounts == (mount("secrets:O", "/a"),)


# --- exclude_paths -----------------------------------------------------------------------------


def test_exclude_paths_with_trailing_slash_get_a_star() -> None:
    manifest = parse_manifest(V + "exclude_paths: [coverage/, 'a/**/', b, '*.rb']")
    assert manifest.exclude_paths == ("coverage/*", "a/**/*", "b", "*.rb")


def test_exclude_pattern_brace_expansion_is_bounded() -> None:
    bomb = "{a,b}" * 20
    assert invalid_data_message(V + f"exclude_paths: [ok, '{bomb}']") == (
        f"Expected exclude_paths.1 to expand its braces to at most "
        f"{MAX_PATTERN_EXPANSION_CHARS} characters"
    )
    assert parse_manifest(V + "exclude_paths: ['{a,b}/{c,d}/{e,f}/{g,h}/*.rb']")


def test_path_excluded_uses_any_pattern() -> None:
    manifest = parse_manifest(V + "exclude_paths: [vendor/, '**/*_pb.rb']")
    assert manifest.path_excluded("vendor/a.rb")
    assert manifest.path_excluded("app/x/y_pb.rb")
    assert not manifest.path_excluded("app/x/y.rb")
    assert not parse_manifest(V).path_excluded("anything")


# --- YAML safety -------------------------------------------------------------------------------


BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            V + "a: &x 1\nb: *x",
            "Invalid YAML at line 2, column 4: anchors and aliases are not allowed",
        ),
        (
            V + "checks: &c []",
            "Invalid YAML at line 2, column 9: anchors and aliases are not allowed",
        ),
        (BILLION_LAUGHS, "Invalid YAML at line 1, column 4: anchors and aliases are not allowed"),
        ("a: *x", "Invalid YAML at line 1, column 4: anchors and aliases are not allowed"),
    ],
)
def test_anchors_and_aliases_are_rejected(text: str, message: str) -> None:
    assert invalid_data_message(text) == message


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("a: !!python/object:os.system 1", "!!python/object:os.system"),
        ("a: !!python/object/apply:os.system [ls]", "!!python/object/apply:os.system"),
        ("a: !!python/name:os.system", "!!python/name:os.system"),
        ("a: !foo x", "!foo"),
        ("a: !!binary aGVsbG8=", "!!binary"),
        ("a: !!timestamp 2001-01-01", "!!timestamp"),
        ("a: !!set {x: ~}", "!!set"),
        ("a: !!omap [x: 1]", "!!omap"),
        ("a: !!map [1]", "!!map"),
        ("a: !!seq {b: 1}", "!!seq"),
        ("!custom {a: 1}", "!custom"),
    ],
)
def test_tags_other_than_core_ones_are_rejected(text: str, tag: str) -> None:
    assert invalid_data_message(text).endswith(f": YAML tag `{tag}' is not allowed")


def test_core_tags_are_accepted_when_they_fit() -> None:
    manifest = parse_manifest(
        "!!map\nversion: !!str 0.1.alpha\ncoverage: {min_percent: !!int '90'}\n"
        "checks: !!seq [{plugin: ! 12, envs: {A: !!str 1}}]\nexclude_paths: !!null x"
    )
    assert manifest.coverage == CoverageSettings(min_percent=90)
    assert manifest.checks[0].plugin == "12"
    assert manifest.checks[0].envs == {"A": "1"}
    assert invalid_data_message(V + "coverage: {min_percent: !!float 1}").endswith("value: 1.0")
    assert invalid_data_message("a: !!int 1.5") == (
        "Invalid YAML at line 1, column 4: cannot read `1.5' as an integer"
    )
    assert invalid_data_message("a: !!bool maybe") == (
        "Invalid YAML at line 1, column 4: cannot read `maybe' as a boolean"
    )
    assert invalid_data_message("a: !!float 0x1F") == (
        "Invalid YAML at line 1, column 4: cannot read `0x1F' as a float"
    )


def test_integers_beyond_pythons_conversion_limit_are_rejected() -> None:
    assert invalid_data_message("a: 1" + "0" * 5000) == (
        f"Invalid YAML at line 1, column 4: cannot read `1{'0' * 39}...' as an integer"
    )


def test_dates_stay_strings() -> None:
    manifest = parse_manifest(
        V + "checks: [{plugin: a, envs: {D: 2024-01-01, T: 2001-12-14t21:59:43.10-05:00}}]"
    )
    assert manifest.checks[0].envs == {"D": "2024-01-01", "T": "2001-12-14t21:59:43.10-05:00"}
    assert_error(
        "version: 2024-01-01",
        VERSION_UNSUPPORTED,
        "Invalid manifest: Unsupported version 2024-01-01",
    )
    assert invalid_data_message(V + "coverage: {min_percent: 2024-01-01}") == (
        "Expected coverage.min_percent to match Integer. "
        'Assertion failed due to current object\'s value: "2024-01-01"'
    )


def test_equals_sign_is_a_string() -> None:
    assert parse_manifest(V + "checks: [{plugin: a, envs: {E: =}}]").checks[0].envs == {"E": "="}


@pytest.mark.parametrize(
    "text",
    [
        "1: a",
        "~: a",
        "true: a",
        "1.5: a",
        "[a]: b",
        "{a: 1}: b",
        "? [a]\n: b",
        V + "checks: [{plugin: a, envs: {1: x}}]",
    ],
)
def test_non_string_mapping_keys_are_rejected(text: str) -> None:
    assert invalid_data_message(text).endswith(": mapping keys must be strings")


def test_size_limit() -> None:
    padding = MAX_MANIFEST_BYTES - len(V) - 2
    exactly_max = V + "#" + "x" * padding + "\n"
    assert len(exactly_max.encode()) == MAX_MANIFEST_BYTES
    assert parse_manifest(exactly_max).checks == ()
    message = f"Invalid manifest: file is larger than {MAX_MANIFEST_BYTES} bytes"
    assert invalid_data_message(exactly_max + "#") == message
    two_mib = V + "#" + "é" * MAX_MANIFEST_BYTES  # 2 MiB of UTF-8, 1 Mi characters
    assert invalid_data_message(two_mib) == message
    assert invalid_data_message(two_mib.encode()) == message


def test_nesting_limit() -> None:
    def nested(depth: int) -> str:  # the root mapping is level 1
        return V + "x: " + "[" * (depth - 1) + "]" * (depth - 1)

    assert invalid_data_message(nested(MAX_NESTING_DEPTH)) == "Unexpected extra key `x' on `'"
    assert invalid_data_message(nested(MAX_NESTING_DEPTH + 1)) == (
        f"Invalid YAML at line 2, column {3 + MAX_NESTING_DEPTH}: "
        f"nesting deeper than {MAX_NESTING_DEPTH} levels"
    )
    deep_block = "".join("  " * level + "a:\n" for level in range(200))
    assert "nesting deeper than" in invalid_data_message(deep_block)
    assert invalid_data_message("[" * 100_000).startswith("Invalid YAML at line 1")


def test_encoding() -> None:
    assert parse_manifest(V.encode()).version == "0.1.alpha"
    assert parse_manifest(b"\xef\xbb\xbf" + V.encode()).version == "0.1.alpha"
    envs = parse_manifest((V + "checks: [{plugin: é, envs: {Ü: 😀}}]").encode()).checks[0]
    assert (envs.plugin, envs.envs) == ("é", {"Ü": "😀"})
    message = "Invalid manifest: file is not valid UTF-8"
    assert invalid_data_message(b"version: \xff") == message
    assert invalid_data_message("version: '0.1.alpha'".encode("utf-16")) == message
    assert invalid_data_message(V + "a: '\ud800'") == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            V + "checks:\n  - plugin: a\n   envs: {}\n",
            "Invalid YAML at line 4, column 4: did not find expected '-' indicator "
            "(while parsing a block collection at line 3, column 3)",
        ),
        (
            "a: [1, 2",
            "Invalid YAML at line 2, column 1: did not find expected ',' or ']' "
            "(while parsing a flow sequence at line 1, column 4)",
        ),
        (
            "a: b: c",
            "Invalid YAML at line 1, column 5: mapping values are not allowed in this context",
        ),
        (
            "a:\n  - b\n c: d",
            "Invalid YAML at line 3, column 2: did not find expected key "
            "(while parsing a block mapping at line 1, column 1)",
        ),
        (
            "---\na: 1\n---\nb: 2",
            "Invalid YAML at line 3, column 1: expected a single YAML document",
        ),
        (
            "a: \x00",
            "Invalid YAML: unacceptable character #x0000: control characters are not allowed",
        ),
    ],
)
def test_syntax_errors(text: str, message: str) -> None:
    assert invalid_data_message(text) == message


# --- Property tests: any input gives a Manifest or an InvalidManifestError ---------------------


def assert_parses_or_invalid(text: str | bytes) -> None:
    try:
        result = parse_manifest(text)
    except InvalidManifestError as error:
        assert error.code in ALL_CODES
        assert str(error) == error.message
    else:
        assert isinstance(result, Manifest)


@settings(max_examples=300, deadline=None)
@given(st.text() | st.binary())
def test_arbitrary_input_never_raises_anything_else(text: str | bytes) -> None:
    assert_parses_or_invalid(text)


MANIFEST_KEYS = ["version", "coverage", "min_percent", "exclude_paths", "defaults", "checks"]
MANIFEST_KEYS += ["plugin", "envs", "mounts", "source", "destination", "A"]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.sampled_from(["0.1.alpha", "secrets:X", "/a", "", " ", "a/", "{a,b}", "[", "**/"])
    | st.text(max_size=8)
)
YAMLISH = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(MANIFEST_KEYS) | st.text(max_size=4), inner, max_size=5)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(YAMLISH, st.booleans())
def test_arbitrary_yaml_structures_never_raise_anything_else(value: object, flow: bool) -> None:
    dumped = yaml.safe_dump(value, default_flow_style=flow, allow_unicode=True)
    assert_parses_or_invalid(dumped)


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {"version": st.sampled_from(["0.1.alpha"])},
        optional={
            "coverage": YAMLISH,
            "exclude_paths": st.lists(SCALARS, max_size=3),
            "defaults": st.fixed_dictionaries({}, optional={"checks": YAMLISH}),
            "checks": st.lists(
                st.fixed_dictionaries(
                    {"plugin": SCALARS}, optional={"envs": YAMLISH, "mounts": YAMLISH}
                ),
                max_size=3,
            ),
        },
    )
)
def test_near_valid_manifests_never_raise_anything_else(value: dict[str, object]) -> None:
    assert_parses_or_invalid(yaml.safe_dump(value, allow_unicode=True))
