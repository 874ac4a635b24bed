"""The GitHub fake speaks GitHub's HTTP: tokens, pagination, ETags, faults and git smart HTTP."""

from __future__ import annotations

import gzip
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cocov_jobs.testing import FakeGitHub


def app_jwt(fake: FakeGitHub, *, key: bytes | None = None, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iat": now - 60, "exp": now + 540, "iss": str(fake.app_id), **claims}
    return jwt.encode(payload, key or fake.private_key_pem, algorithm="RS256")


def mint(fake: FakeGitHub, token: str) -> httpx.Response:
    url = f"{fake.api_url}/app/installations/{fake.installation_id}/access_tokens"
    return httpx.post(url, headers={"Authorization": f"Bearer {token}"})


def api_get(fake: FakeGitHub, path: str, token: str, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"token {token}"}
    return httpx.get(fake.api_url + path, params=params, headers=headers)


def git(*args: str, token: str | None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run git with the token in an http.extraHeader given through the environment only."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"}
    if token:
        env |= {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": "Authorization: " + FakeGitHub.git_auth_header(token),
        }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


# Installation tokens ---------------------------------------------------------------------------


def test_mint_checks_the_app_jwt_and_counts(fake_github: FakeGitHub) -> None:
    response = mint(fake_github, app_jwt(fake_github))
    assert response.status_code == 201
    body = response.json()
    assert body["token"].startswith("ghs_")
    assert body["expires_at"].endswith("Z")
    assert fake_github.tokens_minted == 1
    assert api_get(fake_github, "/orgs/acme/repos", body["token"]).status_code == 200


def test_mint_rejects_bad_jwts(fake_github: FakeGitHub) -> None:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    now = int(time.time())
    rejected = [
        app_jwt(fake_github, key=other_key),
        app_jwt(fake_github, iss="999"),
        app_jwt(fake_github, iat=now - 700, exp=now - 100),
        app_jwt(fake_github, exp=now + 3600),
        "not-a-jwt",
    ]
    assert [mint(fake_github, token).status_code for token in rejected] == [401] * 5
    assert fake_github.tokens_minted == 0


def test_expired_and_revoked_tokens_answer_bad_credentials(fake_github: FakeGitHub) -> None:
    token = mint(fake_github, app_jwt(fake_github)).json()["token"]
    fake_github.expire_all_tokens()
    response = api_get(fake_github, "/orgs/acme/repos", token)
    assert (response.status_code, response.json()["message"]) == (401, "Bad credentials")
    fake_github.revoke_installation()
    assert mint(fake_github, app_jwt(fake_github)).status_code == 404


def test_token_ttl_is_configurable(fake_github: FakeGitHub) -> None:
    fake_github.token_ttl = 120
    expires_at = mint(fake_github, app_jwt(fake_github)).json()["expires_at"]
    remaining = time.mktime(time.strptime(expires_at, "%Y-%m-%dT%H:%M:%SZ")) - time.mktime(
        time.gmtime()
    )
    assert 100 <= remaining <= 121


# Pagination, ETags, rate-limit headers ----------------------------------------------------------


def test_pagination_follows_github_link_headers(fake_github: FakeGitHub) -> None:
    fake_github.add_repos(250)
    token = fake_github.issue_installation_token()
    first = api_get(fake_github, "/orgs/acme/repos", token)
    assert len(first.json()) == 30
    middle = api_get(fake_github, "/orgs/acme/repos", token, per_page=100, page=2)
    base = f"{fake_github.api_url}/orgs/acme/repos?per_page=100"
    assert middle.headers["Link"] == (
        f'<{base}&page=1>; rel="prev", <{base}&page=3>; rel="next", '
        f'<{base}&page=3>; rel="last", <{base}&page=1>; rel="first"'
    )
    last = httpx.get(middle.links["next"]["url"], headers={"Authorization": f"token {token}"})
    assert len(last.json()) == 50
    assert set(last.links) == {"prev", "first"}
    clamped = api_get(fake_github, "/orgs/acme/repos", token, per_page=500)
    assert len(clamped.json()) == 100


def test_repository_json_has_githubs_shape(fake_github: FakeGitHub) -> None:
    fake_github.add_repo("api", description="The API", github_id=77)
    [repo] = api_get(fake_github, "/orgs/acme/repos", fake_github.issue_installation_token()).json()
    assert repo["id"] == 77
    assert repo["full_name"] == "acme/api"
    assert (repo["private"], repo["default_branch"], repo["description"]) == (
        True,
        "main",
        "The API",
    )
    assert repo["created_at"].endswith("Z") and repo["pushed_at"].endswith("Z")
    assert set(repo["permissions"]) == {"admin", "maintain", "push", "triage", "pull"}


def test_etag_answers_304_without_counting_the_rate_limit(fake_github: FakeGitHub) -> None:
    fake_github.add_repos(3)
    token = fake_github.issue_installation_token()
    first = api_get(fake_github, "/orgs/acme/repos", token)
    assert first.headers["ETag"].startswith('W/"')
    headers = {"Authorization": f"token {token}", "If-None-Match": first.headers["ETag"]}
    second = httpx.get(f"{fake_github.api_url}/orgs/acme/repos", headers=headers)
    assert (second.status_code, second.content) == (304, b"")
    assert second.headers["X-RateLimit-Used"] == first.headers["X-RateLimit-Used"]
    for name in ("X-RateLimit-Limit", "X-RateLimit-Reset", "X-RateLimit-Resource"):
        assert name in second.headers
    assert fake_github.request_log[-1] == ("GET", "/orgs/acme/repos", 304)
    fake_github.add_repos(1, prefix="new")
    third = httpx.get(f"{fake_github.api_url}/orgs/acme/repos", headers=headers)
    assert third.status_code == 200


# Users, collaborators, commits, statuses --------------------------------------------------------


def test_user_tokens_see_their_repositories_with_their_permissions(fake_github: FakeGitHub) -> None:
    token = fake_github.add_user("alice", 501)
    fake_github.add_repo("secret", files={})
    fake_github.add_repo("shared", files={})
    fake_github.add_repo("open", files={}, private=False)
    fake_github.grant("alice", "shared", "maintain")
    repos = {
        r["name"]: r["permissions"] for r in api_get(fake_github, "/orgs/acme/repos", token).json()
    }
    assert set(repos) == {"shared", "open"}
    assert (repos["shared"]["maintain"], repos["shared"]["admin"]) == (True, False)
    assert repos["open"] == {
        "admin": False,
        "maintain": False,
        "push": False,
        "triage": False,
        "pull": True,
    }
    assert api_get(fake_github, "/user", token).json()["login"] == "alice"
    fake_github.revoke_user_token(token)
    assert api_get(fake_github, "/orgs/acme/repos", token).status_code == 401


def test_collaborators_listing(fake_github: FakeGitHub) -> None:
    repo = fake_github.add_repo("api", files={})
    fake_github.add_collaborator("api", 7, "bob", "admin")
    fake_github.add_collaborators("api", 120)
    token = fake_github.issue_installation_token()
    path = f"/repositories/{repo.id}/collaborators"
    page = api_get(fake_github, path, token, per_page=100)
    assert len(page.json()) == 100 and "next" in page.links
    assert page.json()[0] == {
        "login": "bob",
        "id": 7,
        "type": "User",
        "site_admin": False,
        "permissions": dict.fromkeys(("admin", "maintain", "push", "triage", "pull"), True),
        "role_name": "admin",
    }
    assert api_get(fake_github, "/repositories/999/collaborators", token).status_code == 404


def test_commits_newest_first_for_a_branch(fake_github: FakeGitHub) -> None:
    fake_github.add_repo("api", files={"a.txt": "1"})
    second = fake_github.commit("api", {"b.txt": "2"}, message="Second", author=("Ann", "ann@x.io"))
    feature = fake_github.commit("api", {"c.txt": "3"}, message="Feature", branch="feature")
    token = fake_github.issue_installation_token()
    [head] = api_get(fake_github, "/repos/acme/api/commits", token, sha="main", per_page=1).json()
    assert head["sha"] == second == fake_github.head("api")
    assert head["commit"]["message"] == "Second"
    assert head["commit"]["author"] == {
        "name": "Ann",
        "email": "ann@x.io",
        "date": "2024-01-01T00:01:00Z",
    }
    listing = api_get(fake_github, "/repos/acme/api/commits", token, sha="feature").json()
    assert [c["sha"] for c in listing][:2] == [feature, second]
    assert len(listing) == 3
    missing = api_get(fake_github, "/repos/acme/api/commits", token, sha="nope")
    assert missing.status_code == 404


def test_empty_repository_commits_answer_409(fake_github: FakeGitHub) -> None:
    fake_github.add_repo("empty", files={})
    token = fake_github.issue_installation_token()
    assert api_get(fake_github, "/repos/acme/empty/commits", token).status_code == 409


def test_shas_are_deterministic(tmp_path: Path) -> None:
    heads = []
    for n in range(2):
        with FakeGitHub(tmp_dir=tmp_path / str(n)) as fake:
            fake.add_repo("api", files={"x.py": "print(1)\n"})
            heads.append(fake.commit("api", {"x.py": None, "y.py": b"2"}))
    assert heads[0] == heads[1]


def test_statuses_are_recorded_and_validated(fake_github: FakeGitHub) -> None:
    fake_github.add_repo("api")
    sha = fake_github.head("api")
    token = fake_github.issue_installation_token()
    url = f"{fake_github.api_url}/repos/acme/api/statuses/{sha}"
    headers = {"Authorization": f"Bearer {token}"}
    body = {"state": "pending", "context": "cocov", "description": "Checks are running..."}
    assert httpx.post(url, json=body, headers=headers).status_code == 201
    assert httpx.post(url, json={"state": "nope"}, headers=headers).status_code == 422
    unknown = url.replace(sha, "0" * 40)
    assert httpx.post(unknown, json=body, headers=headers).status_code == 422
    [status] = fake_github.statuses("api", sha)
    assert {k: status[k] for k in ("state", "context", "description", "target_url")} == {
        **body,
        "target_url": None,
    }


def test_rename_and_delete(fake_github: FakeGitHub) -> None:
    fake_github.add_repo("old")
    fake_github.rename_repo("old", "new")
    token = fake_github.issue_installation_token()
    assert api_get(fake_github, "/repos/acme/old", token).status_code == 404
    assert api_get(fake_github, "/repos/acme/new/commits", token).status_code == 200
    fake_github.delete_repo("new")
    assert api_get(fake_github, "/repos/acme/new", token).status_code == 404


# Fault injection --------------------------------------------------------------------------------


def test_fail_next_is_fifo_and_counted(fake_github: FakeGitHub) -> None:
    token = fake_github.issue_installation_token()
    fake_github.fail_next("GET", r"/orgs/acme/repos$", status=502, times=2)
    fake_github.fail_next(None, r"/orgs/", status=500)
    statuses = [api_get(fake_github, "/orgs/acme/repos", token).status_code for _ in range(4)]
    assert statuses == [502, 502, 500, 200]


def test_rate_limits(fake_github: FakeGitHub) -> None:
    token = fake_github.issue_installation_token()
    fake_github.rate_limit_next("/orgs/", kind="primary", retry_after=120)
    fake_github.rate_limit_next("/orgs/", kind="secondary", retry_after=30, status=429)
    primary = api_get(fake_github, "/orgs/acme/repos", token)
    assert (primary.status_code, primary.headers["X-RateLimit-Remaining"]) == (403, "0")
    assert 118 <= int(primary.headers["X-RateLimit-Reset"]) - time.time() <= 121
    secondary = api_get(fake_github, "/orgs/acme/repos", token)
    assert (secondary.status_code, secondary.headers["Retry-After"]) == (429, "30")
    assert "secondary rate limit" in secondary.json()["message"]


def test_delay_next_makes_clients_time_out(fake_github: FakeGitHub) -> None:
    token = fake_github.issue_installation_token()
    fake_github.delay_next("/orgs/", 5)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(
            f"{fake_github.api_url}/orgs/acme/repos",
            headers={"Authorization": f"token {token}"},
            timeout=0.3,
        )
    assert api_get(fake_github, "/orgs/acme/repos", token).status_code == 200


def test_api_prefix_mimics_github_enterprise(tmp_path: Path) -> None:
    with FakeGitHub(tmp_dir=tmp_path, api_prefix="/api/v3") as fake:
        assert fake.api_url == fake.base_url + "/api/v3"
        fake.add_repos(1)
        token = fake.issue_installation_token()
        assert api_get(fake, "/orgs/acme/repos", token).status_code == 200
        outside = httpx.get(
            fake.base_url + "/orgs/acme/repos", headers={"Authorization": f"token {token}"}
        )
        assert outside.status_code == 404
        assert fake.request_log[0] == ("GET", "/orgs/acme/repos", 200)


# Git smart HTTP ---------------------------------------------------------------------------------


def test_clone_and_shallow_fetch_of_an_old_sha(fake_github: FakeGitHub, tmp_path: Path) -> None:
    fake_github.add_repo("api", files={"a.txt": "one\n"})
    old = fake_github.head("api")
    fake_github.commit("api", {"a.txt": "two\n"})
    token = fake_github.issue_installation_token()
    clone = git("clone", "--quiet", fake_github.clone_url("api"), str(tmp_path / "c"), token=token)
    assert clone.returncode == 0, clone.stderr
    assert (tmp_path / "c" / "a.txt").read_text() == "two\n"
    assert git("init", "--quiet", str(tmp_path / "s"), token=None).returncode == 0
    fetch = git(
        "fetch",
        "--quiet",
        "--depth",
        "1",
        fake_github.clone_url("api"),
        old,
        token=token,
        cwd=tmp_path / "s",
    )
    assert fetch.returncode == 0, fetch.stderr
    assert git("cat-file", "-t", old, token=None, cwd=tmp_path / "s").stdout.strip() == "commit"
    assert all(token not in r.url for r in fake_github.requests)
    assert FakeGitHub.git_auth_header(token) in fake_github.authorization_headers


def test_git_rejects_missing_and_invalid_tokens(fake_github: FakeGitHub, tmp_path: Path) -> None:
    fake_github.add_repo("api")
    url = fake_github.clone_url("api")
    anonymous = httpx.get(url + "/info/refs", params={"service": "git-upload-pack"})
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="GitHub"'
    assert git("clone", url, str(tmp_path / "a"), token=None).returncode != 0
    assert git("clone", url, str(tmp_path / "b"), token="ghs_wrong").returncode != 0
    expired = fake_github.issue_installation_token()
    fake_github.expire_all_tokens()
    assert git("clone", url, str(tmp_path / "c"), token=expired).returncode != 0
    assert {status for _, path, status in fake_github.request_log} == {401}
    bearer = httpx.get(
        url + "/info/refs",
        params={"service": "git-upload-pack"},
        headers={"Authorization": f"Bearer {fake_github.issue_installation_token()}"},
    )
    assert bearer.status_code == 200


def test_big_repository_is_built_with_fast_import(fake_github: FakeGitHub) -> None:
    fake_github.add_big_repo("big", files=300, commits=40)
    token = fake_github.issue_installation_token()
    response = api_get(fake_github, "/repos/acme/big/commits", token, per_page=100)
    assert len(response.json()) == 40
    assert response.json()[0]["commit"]["message"] == "Commit 39"


def test_org_membership(fake_github: FakeGitHub) -> None:
    token = fake_github.add_user("alice")
    fake_github.add_user("eve", member=False)
    assert api_get(fake_github, "/orgs/acme/members/alice", token).status_code == 204
    assert api_get(fake_github, "/orgs/acme/members/eve", token).status_code == 404


def test_upload_pack_accepts_gzip_bodies_and_protocol_v2(fake_github: FakeGitHub) -> None:
    fake_github.add_repo("api")
    command = "command=ls-refs\n"
    request = f"{len(command) + 4:04x}{command}".encode() + b"0001" + b"0000"
    response = httpx.post(
        fake_github.clone_url("api") + "/git-upload-pack",
        content=gzip.compress(request),
        headers={
            "Authorization": FakeGitHub.git_auth_header(fake_github.issue_installation_token()),
            "Content-Type": "application/x-git-upload-pack-request",
            "Content-Encoding": "gzip",
            "Git-Protocol": "version=2",
        },
    )
    assert response.status_code == 200
    assert f"{fake_github.head('api')} refs/heads/main".encode() in response.content
