"""``/metrics``: worker counters, scrape-time queue gauges and HTTP request counts, parsed."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from tests.support.admin import enqueue, failed_job

from cocov_jobs.services import Services
from cocov_jobs.web.app import create_app, create_probe_app


async def scrape(app: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get("/metrics")
    assert answer.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


async def test_metrics_count_jobs_queue_depth_and_requests(services: Services) -> None:
    app = create_app(services)
    key = ("cocov_jobs_failed_total", (("job", "update_commits_author"),))
    before = (await scrape(app)).get(key, 0.0)
    await failed_job(services)
    await enqueue(services, user_id=3)
    await enqueue(services, delay=600, user_id=4)
    samples = await scrape(app)
    assert samples[key] == before + 1
    assert samples[("cocov_jobs_queue_depth", (("state", "failed"),))] == 1
    assert samples[("cocov_jobs_queue_depth", (("state", "queued"),))] == 1
    assert samples[("cocov_jobs_queue_depth", (("state", "scheduled"),))] == 1
    assert samples[("cocov_jobs_oldest_ready_job_age_seconds", ())] >= 0
    assert samples[("cocov_jobs_workers_alive", ())] == 0
    assert ("cocov_jobs_github_rate_limit_remaining", ()) in samples
    wait = ("cocov_jobs_queue_wait_seconds_count", (("job", "update_commits_author"),))
    assert samples[wait] >= 1
    scraped = (
        "cocov_jobs_http_requests_total",
        (("method", "GET"), ("route", "/metrics"), ("status", "2xx")),
    )
    assert samples[scraped] >= 1


async def test_request_labels_come_from_fixed_sets(services: Services) -> None:
    """Clients choose methods and paths: invented ones must not grow the label set."""
    app = create_app(services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for n in range(50):
            await client.request(f"INVENTED{n}", f"/no/such/path/{n}")
            await client.request(f"X{n}", "/metrics")
    requests = {
        labels: value
        for (name, labels), value in (await scrape(app)).items()
        if name == "cocov_jobs_http_requests_total"
    }
    methods = {dict(labels)["method"] for labels in requests}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    invented = {
        labels: value for labels, value in requests.items() if ("method", "other") in labels
    }
    assert {dict(labels)["route"] for labels in invented} == {"<unmatched>", "/metrics"}
    assert {dict(labels)["status"] for labels in invented} == {"4xx"}
    assert sum(invented.values()) >= 100


async def test_worker_probe_server_serves_metrics(services: Services) -> None:
    samples = await scrape(create_probe_app(services))
    assert ("cocov_jobs_workers_alive", ()) in samples
