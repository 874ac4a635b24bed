"""Sidekiq payloads read into our jobs: the three wire formats, both time units, Cocov's ten
classes with their argument shapes, and every way a payload can fail to be a job."""

from __future__ import annotations

import base64
import inspect
import json
from pathlib import Path
from typing import Any

import pytest

from cocov_jobs.jobs import registry
from cocov_jobs.sidekiq.payload import (
    COCOV_CLASSES,
    INVALID_ARGUMENTS,
    INVALID_JSON,
    NOT_A_JOB,
    OTHER_CLASS,
    UNKNOWN_CLASS,
    CoverageUpload,
    JobRequest,
    Payload,
    enqueued_at,
    epoch,
    read_payload,
)

DATA = Path(__file__).parent.parent / "data" / "sidekiq"
REGISTRY = registry()
SHA = "ab" * 20
#: Cocov's ``perform`` parameters per class (cocov-ci/api app/jobs), and a valid call.
COCOV_PERFORM: dict[str, tuple[list[Any], dict[str, Any]]] = {
    "ComputeRepositoryCommitsSizeJob": ([7], {"repository_id": 7}),
    "DestroyRepositoryJob": ([7], {"repository_id": 7}),
    "InitializeRepositoryJob": ([7], {"repository_id": 7}),
    "ProcessCommitJob": ([42], {"commit_id": 42}),
    "RequestCacheEvictionJob": ([7], {"repository_id": 7}),
    "UpdateCommitsAuthorJob": ([3], {"user_id": 3}),
    "UpdateOrganizationReposJob": ([], {}),
    "UpdateRepoPermissionsJob": ([7], {"repository_id": 7}),
    "UpdateUserPermissionsJob": ([3], {"user_id": 3}),
}


def activejob(ruby_class: str, arguments: list[Any], **top: Any) -> str:
    """A payload as Rails' adapter writes it."""
    return json.dumps(
        {
            "retry": True,
            "queue": "default",
            "class": "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper",
            "wrapped": ruby_class,
            "args": [{"job_class": ruby_class, "job_id": "x", "arguments": arguments}],
            "jid": "0123456789abcdef01234567",
            "enqueued_at": 1691517600.5,
            **top,
        }
    )


def coverage_data(files: dict[str, bytes]) -> str:
    """``data.permit!.to_json``: the reporter's map as a JSON string."""
    return json.dumps({path: base64.b64encode(raw).decode() for path, raw in files.items()})


@pytest.mark.parametrize(
    ("fixture", "jid", "enqueued"),
    [
        ("rails_6_1_adapter.json", "2ae39ab905e45066409be74c", 1691517600.13),
        ("sidekiq_7_3_wrapper.json", "8f0d6c1b2a3e4f5061728394", 1717243200.5),
        ("sidekiq_8_milliseconds.json", "1a2b3c4d5e6f708192a3b4c5", 1740821400.5),
        ("plain_sidekiq.json", "62159372adac638b49adb7f9", 1691517600.13),
    ],
)
def test_each_wire_format_reads_as_process_commit(fixture: str, jid: str, enqueued: float) -> None:
    raw = (DATA / fixture).read_bytes()
    read = read_payload(raw, REGISTRY)
    assert read.problem is None
    assert isinstance(read.request, JobRequest)
    assert read.request.definition.name == "process_commit"
    assert read.request.args == {"commit_id": 42}
    assert (read.key, read.ruby_class) == (jid, "ProcessCommitJob")
    assert read.enqueued_at == pytest.approx(enqueued)
    assert enqueued_at(raw) == pytest.approx(enqueued)


def test_epoch_reads_float_seconds_and_integer_milliseconds() -> None:
    assert epoch(1691517600.25) == 1691517600.25
    assert epoch(1691517600) == 1691517600.0
    assert epoch(1691517600250) == pytest.approx(1691517600.25)
    assert epoch(True) is None
    assert epoch("1691517600") is None
    assert epoch(float("nan")) is None


def test_the_ten_classes_map_to_jobs_with_cocovs_arity() -> None:
    assert set(COCOV_CLASSES) == {*COCOV_PERFORM, "ProcessCoverageJob"}
    for ruby_class, (arguments, expected) in COCOV_PERFORM.items():
        read = read_payload(activejob(ruby_class, arguments), REGISTRY)
        assert isinstance(read.request, JobRequest), (ruby_class, read.problem)
        assert read.request.definition.name == COCOV_CLASSES[ruby_class]
        assert read.request.args == expected
        assert read.ruby_class == ruby_class
        params = list(inspect.signature(read.request.definition.func).parameters)[1:]
        assert params == list(expected)


def test_process_coverage_job_becomes_an_upload() -> None:
    data = coverage_data({"lib/a.rb": b"1\x1e0", "lib/b.rb": b"\x15"})
    read = read_payload(activejob("ProcessCoverageJob", [7, SHA.upper(), data]), REGISTRY)
    assert read.request == CoverageUpload(7, SHA, json.loads(data))


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ([7, SHA], "takes 3 arguments"),
        (["7", SHA, "{}"], "repo_id is not an integer"),
        ([7, "abc", '{"a.rb": "MQ=="}'], "sha is not a commit id"),
        ([7, SHA, {"a.rb": "MQ=="}], "data is not a JSON string"),
        ([7, SHA, "{not json"], "data is not JSON"),
        ([7, SHA, '["a.rb"]'], "data must map file paths"),
        ([7, SHA, '{"../etc/passwd": "MQ=="}'], "Invalid coverage file path"),
        ([7, SHA, '{"a.rb": "!!"}'], "a.rb"),
        ([7, SHA, "{}"], "holds no file"),
    ],
)
def test_invalid_coverage_arguments_say_why(arguments: list[Any], reason: str) -> None:
    read = read_payload(activejob("ProcessCoverageJob", arguments), REGISTRY)
    assert read.request is None
    assert read.problem is not None and read.problem.kind == INVALID_ARGUMENTS
    assert reason in str(read.problem)
    assert read.ruby_class == "ProcessCoverageJob"


@pytest.mark.parametrize(
    ("raw", "kind", "reason"),
    [
        (b"{not json", INVALID_JSON, "not JSON"),
        (b"\xff\xfe", INVALID_JSON, "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, INVALID_JSON, "not JSON"),
        (b'"a string"', NOT_A_JOB, "not a JSON object"),
        (b'{"jid": "abc"}', NOT_A_JOB, "not a Sidekiq job"),
        (
            b'{"class": "Sidekiq::ActiveJob::Wrapper", "args": [1, 2]}',
            NOT_A_JOB,
            "without its ActiveJob job",
        ),
        (
            b'{"class": "Sidekiq::ActiveJob::Wrapper", "args": [{"job_class": "X"}]}',
            NOT_A_JOB,
            "arguments",
        ),
        (b'{"class": "HardWorker", "args": [1]}', UNKNOWN_CLASS, "'HardWorker' is not one"),
        (b'{"class": "PruneHistoryJob", "args": []}', UNKNOWN_CLASS, "not one of Cocov's"),
        (b'{"class": "ProcessCommitJob", "args": []}', INVALID_ARGUMENTS, "takes 1 argument"),
        (b'{"class": "ProcessCommitJob", "args": ["x"]}', INVALID_ARGUMENTS, "commit_id"),
        (b'{"class": "UpdateOrganizationReposJob", "args": [1]}', INVALID_ARGUMENTS, "got 1"),
    ],
)
def test_payloads_that_are_no_job_say_why(raw: bytes, kind: str, reason: str) -> None:
    read = read_payload(raw, REGISTRY)
    assert read.request is None
    assert read.problem is not None
    assert read.problem.kind == kind
    assert reason in str(read.problem)
    assert read.text == raw.decode("utf-8", errors="replace")


def test_key_is_the_jid_or_a_digest_of_the_bytes() -> None:
    assert read_payload(activejob("ProcessCommitJob", [1]), REGISTRY).key == (
        "0123456789abcdef01234567"
    )
    odd: list[Payload] = [
        read_payload(activejob("ProcessCommitJob", [1], jid=jid), REGISTRY)
        for jid in (None, 12, "a b", "x" * 65, "\x00")
    ]
    assert all(p.key.startswith("sha256:") and len(p.key) == 71 for p in odd)
    assert read_payload(b"{bad", REGISTRY).key == read_payload(b"{bad", REGISTRY).key
    assert read_payload(b"{bad", REGISTRY).ruby_class == OTHER_CLASS


def test_unknown_class_is_labelled_other_and_sidekiq_failure_is_read() -> None:
    raw = json.dumps(
        {
            "class": "HardWorker",
            "args": [],
            "jid": "abc",
            "error_class": "RuntimeError",
            "error_message": "boom",
            "retry_count": 3,
            "failed_at": 1740821400500,
        }
    )
    read = read_payload(raw, REGISTRY)
    assert read.ruby_class == OTHER_CLASS
    assert read.failure is not None
    assert (read.failure.error_class, read.failure.message) == ("RuntimeError", "boom")
    assert read.failure.retry_count == 3
    assert read.failure.failed_at == pytest.approx(1740821400.5)
