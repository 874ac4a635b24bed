"""Pure parts of the checks: plugin names, status catalogue, plans and the Worker descriptor."""

from __future__ import annotations

import json

import pytest
from tests.support.settings import make_settings

from cocov_jobs.checks import (
    CHECK_STATUSES,
    UNKNOWN_STATUS,
    USER_VISIBLE_ERRORS,
    check_status,
    cleanup_plugin_name,
    plan_checks,
)
from cocov_jobs.checks_dispatch import (
    PlannedCheck,
    PlannedMount,
    SecretAuthorization,
    authorize,
    check_entry,
    descriptor_json,
)
from cocov_jobs.clones import CommitRef
from cocov_jobs.crypto import id_from_encrypted_value, token_digest
from cocov_jobs.db.models import ErrorKind
from cocov_jobs.manifest import InvalidManifestError, parse_manifest

KEY = b"k" * 32
COMMIT = CommitRef(
    id=3, repository_id=7, repo_name="api", sha="a" * 40, author_email="x@y.z", clone_status=2
)


@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("cocov/rubocop:v0.1", "cocov/rubocop"),
        ("ghcr.io/org/foo:1", "org/foo"),
        ("my-org/tool:1", "tool"),
        ("rubocop:v1", "rubocop"),
        ("rubocop", "rubocop"),
        ("localhost:5000/team/lint:2", "team/lint"),
        ("a/B2/c:1", "a/c"),
    ],
)
def test_cleanup_plugin_name(image: str, name: str) -> None:
    assert cleanup_plugin_name(image) == name


def test_every_error_kind_has_a_status_and_fatal_ones_are_errors() -> None:
    kinds = {kind.name for kind in ErrorKind} - {"no_error"}
    assert kinds <= set(CHECK_STATUSES)
    assert {CHECK_STATUSES[kind].state for kind in kinds} == {"error"}
    assert kinds > USER_VISIBLE_ERRORS


def test_status_targets_the_checks_page_and_unknown_keys_fall_back() -> None:
    settings = make_settings(ui_base_url="https://ui.example/")
    status = check_status(settings, COMMIT, "running")
    assert (status.state, status.context, status.description, status.target_url) == (
        "pending",
        "cocov",
        "Checks are running...",
        f"https://ui.example/repos/api/commits/{'a' * 40}/checks",
    )
    fallback = check_status(settings, COMMIT, "nope")
    assert (fallback.state, fallback.description) == (
        UNKNOWN_STATUS.state,
        "An unknown error occurred",
    )


MANIFEST = """\
version: "0.1.alpha"
checks:
  - plugin: cocov/one:v1
    mounts:
      - {source: "secrets:Token", destination: "~/t"}
  - plugin: cocov/two:v1
    envs: {A: "b"}
"""


def test_plan_resolves_secrets_case_insensitively() -> None:
    planned = plan_checks(parse_manifest(MANIFEST), {"token": 12})
    assert planned == [
        PlannedCheck("cocov/one:v1", "cocov/one", None, (PlannedMount(12, "~/t"),)),
        PlannedCheck("cocov/two:v1", "cocov/two", {"A": "b"}, None),
    ]


def test_plan_refuses_an_unknown_secret() -> None:
    with pytest.raises(InvalidManifestError) as caught:
        plan_checks(parse_manifest(MANIFEST), {})
    assert (caught.value.code, caught.value.message) == (
        "manifest_unknown_secret",
        "Unknown secret `Token'",
    )


def test_plan_refuses_plugins_with_the_same_cleaned_name() -> None:
    manifest = 'version: "0.1.alpha"\nchecks:\n  - plugin: x/Lint:1\n  - plugin: y.io/x/lint:2\n'
    with pytest.raises(InvalidManifestError) as caught:
        plan_checks(parse_manifest(manifest), {})
    assert caught.value.code == "manifest_invalid_or_missing_data"
    assert "`x/Lint:1' and `y.io/x/lint:2'" in caught.value.message


def test_authorization_decrypts_to_the_secret_id() -> None:
    auth = authorize(KEY, 42)
    assert auth.token.startswith("csa_") and len(auth.token) == 4 + 48
    assert auth.redis_key == f"cocov:secret_auth:{token_digest(auth.token)}"
    assert id_from_encrypted_value(KEY, auth.redis_value) == 42


def test_descriptor_keys_and_bytes() -> None:
    mounted = PlannedCheck("cocov/one:v1", "cocov/one", {"É": "1"}, (PlannedMount(1, "~/t"),))
    auth = SecretAuthorization("csa_x", "k", "v")
    entries = [check_entry(mounted, [auth]), check_entry(PlannedCheck("p", "p", None, None), None)]
    text = descriptor_json(
        check_set_id=5,
        job_id="u-u",
        org="acme",
        commit=COMMIT,
        checks=entries,
        storage_mode="s3",
        storage_path="abc/def",
    )
    assert text == (
        '{"check_set_id":5,"job_id":"u-u","org":"acme","repo":"api","repo_id":7,'
        f'"sha":"{"a" * 40}","checks":[{{"plugin":"cocov/one:v1","envs":{{"É":"1"}},'
        '"mounts":[{"kind":"secret","authorization":"csa_x","target":"~/t"}]},'
        '{"plugin":"p","envs":null,"mounts":null}],'
        '"git_storage":{"mode":"s3","path":"abc/def"}}'
    )
    assert list(json.loads(text)) == [
        "check_set_id",
        "job_id",
        "org",
        "repo",
        "repo_id",
        "sha",
        "checks",
        "git_storage",
    ]
