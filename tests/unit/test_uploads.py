"""Coverage upload files: the reporter's body or the bare data map."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cocov_jobs.uploads import UploadError, parse_upload_document, read_upload_file

SHA = "ab" * 20
DATA = {"lib/a.rb": "MQ=="}


def test_reporter_body_and_bare_map_give_the_same_data() -> None:
    assert parse_upload_document({"data": DATA, "commit_sha": SHA}, SHA) == DATA
    assert parse_upload_document({"data": DATA}, SHA.upper()) == DATA
    assert parse_upload_document(DATA, SHA) == DATA


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([1], "JSON object"),
        ({}, "no data"),
        ({"data": {}, "commit_sha": SHA}, "no data"),
        ({"data": DATA, "commit_sha": "cd" * 20}, "is for commit"),
    ],
)
def test_unusable_documents_are_refused(document: object, message: str) -> None:
    with pytest.raises(UploadError, match=message):
        parse_upload_document(document, SHA)


def test_read_upload_file(tmp_path: Path) -> None:
    path = tmp_path / "upload.json"
    path.write_text(json.dumps({"data": DATA, "commit_sha": SHA}))
    assert read_upload_file(path, SHA) == DATA
    path.write_text("{nope")
    with pytest.raises(UploadError, match="is not JSON"):
        read_upload_file(path, SHA)
    with pytest.raises(UploadError, match="cannot read"):
        read_upload_file(tmp_path / "missing.json", SHA)
