"""Prometheus metrics and health: `/metrics`, `/healthz`, `/readyz` and `conversa check`."""

from __future__ import annotations

import os
import subprocess

import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from channels.sandbox.twilio import TwilioSandbox
from server import metrics
from server.api import health
from server.settings import Settings
from store.embedded import free_port
from store.records import Tenant
from tests.conftest import BIN, USER, inbound_form, post_inbound, relay, rows, run_jobs
from tests.fakes import ScriptedModel

SECRET_TEXT = "meu segredo 4242 nao vai para rotulos"
OUR_LABELS = {"webhook", "outcome", "queue", "state", "collector", "job", "route", "model", "kind",
              "provider", "status", "error_code", "reason", "purpose", "le",
              "tenant", "direction", "scope", "period", "level"}  # fmt: skip
"""`tenant` is the tenant's id (a UUID the platform made), on the usage metrics only."""
PROCESS_LABELS = {"version", "implementation", "major", "minor", "patchlevel", "generation"}


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics and index every sample by name and labels."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def local(name: str, **labels: str) -> float:
    """A sample of this process's own registry (0 when never recorded)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_webhooks_queues_and_handoffs_are_measured_without_numbers_or_text(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    before = scrape(client)
    form = inbound_form(tenant, SECRET_TEXT)
    assert post_inbound(client, settings, tenant, form).status_code == 200
    assert post_inbound(client, settings, tenant, form).status_code == 200  # Twilio's retry
    forged = post_inbound(client, settings, tenant, inbound_form(tenant, "x"), signature="bad")
    assert forged.status_code == 403
    assert relay(settings) == 1
    with psycopg.connect(settings.database_url or "") as conn:
        conn.execute("update conversations set state = 'HANDOFF', handoff_at = now()")

    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    inbound = {"webhook": "inbound"}
    assert delta("conversa_webhook_requests_total", **inbound, outcome="accepted") == 1
    assert delta("conversa_webhook_requests_total", **inbound, outcome="duplicate") == 1
    assert delta("conversa_webhook_requests_total", **inbound, outcome="invalid_signature") == 1
    assert delta("conversa_webhook_duration_seconds_count", **inbound, outcome="accepted") == 1
    queue = "process_ai_response"
    for name, labels in [
        ("conversa_queue_jobs", {"queue": "send_whatsapp_message", "state": "queued"}),
        ("conversa_queue_oldest_job_age_seconds", {"queue": queue}),
        ("conversa_handoff_conversations", {"state": "WAITING_USER"}),
        ("conversa_handoff_oldest_wait_seconds", {"state": "HANDOFF"}),
    ]:  # exported, not just missing (value() reads a missing series as 0)
        assert (name, tuple(sorted(labels.items()))) in after, name
    assert value(after, "conversa_queue_jobs", queue=queue, state="queued") == 1
    assert value(after, "conversa_queue_jobs", queue="send_whatsapp_message", state="queued") == 0
    assert value(after, "conversa_queue_oldest_job_age_seconds", queue=queue) >= 0
    assert value(after, "conversa_handoff_conversations", state="HANDOFF") == 1
    assert value(after, "conversa_handoff_conversations", state="WAITING_USER") == 0
    assert value(after, "conversa_handoff_oldest_wait_seconds", state="HANDOFF") >= 0
    for collector in ("queues", "handoffs"):
        assert value(after, "conversa_scrape_collector_success", collector=collector) == 1

    exposition = client.get("/metrics").text
    assert USER.removeprefix("whatsapp:+") not in exposition
    assert "segredo" not in exposition
    labels = {k for key in after for k, _ in key[1]}
    assert labels <= OUR_LABELS | PROCESS_LABELS, "no label can hold a number or a text"


def test_a_turn_records_graph_llm_and_send_metrics(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    llm: ScriptedModel,
    sandbox: TwilioSandbox,
) -> None:
    graph = ("conversa_graph_run_duration_seconds_count", {"route": "general", "outcome": "ok"})
    calls = ("conversa_llm_request_duration_seconds_count", {"model": "scripted", "outcome": "ok"})
    tokens = ("conversa_llm_tokens_total", {"model": "scripted", "kind": "completion"})
    sent = ("conversa_outbound_sends_total", {"outcome": "sent", "error_code": ""})
    before = {name: local(name, **labels) for name, labels in (graph, calls, tokens, sent)}
    llm.say("Oi! Tudo certo por aqui.")
    post_inbound(client, settings, tenant, inbound_form(tenant, "Oi"))

    run_jobs(settings)

    sandbox.wait_for_messages(1, timeout=5)
    after = {name: local(name, **labels) for name, labels in (graph, calls, tokens, sent)}
    assert after[graph[0]] - before[graph[0]] == 1
    assert after[calls[0]] - before[calls[0]] == 1
    assert after[tokens[0]] > before[tokens[0]], "the model's usage is counted"
    assert after[sent[0]] - before[sent[0]] == 1


def test_a_failed_send_is_counted_with_twilios_error_code(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    llm: ScriptedModel,
    sandbox: TwilioSandbox,
) -> None:
    failed = {"outcome": "failed", "error_code": "21211"}
    before = local("conversa_outbound_sends_total", **failed)
    sandbox.inject_error(21211)
    llm.say("Oi!")
    post_inbound(client, settings, tenant, inbound_form(tenant, "Oi"))

    run_jobs(settings)

    assert local("conversa_outbound_sends_total", **failed) - before == 1
    assert rows(settings, "select status from messages where direction = 'outbound'") == [
        ("failed",)
    ]


def test_readyz_reports_pending_migrations(pg_url: str, settings: Settings) -> None:
    admin = psycopg.conninfo.conninfo_to_dict(pg_url)
    empty = f"{admin['dbname']}_empty"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"drop database if exists {empty}")
        conn.execute(f"create database {empty}")
    try:
        url = psycopg.conninfo.make_conninfo(**{**admin, "dbname": empty})
        result = health.migrations(url)
        assert result.startswith("pending: langgraph-checkpointer, 0001_core")
        assert "conversa migrate" in result
        assert health.migrations(pg_url) == "ok"
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"drop database if exists {empty} with (force)")


def _check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "conversa"), "check"], env=env, capture_output=True, text=True, timeout=60
    )


def test_conversa_check_prints_each_check_and_exits_1_when_one_fails(
    settings: Settings, llm: ScriptedModel
) -> None:
    # What a capable model answers to the model check's calls (tests/test_model_check.py).
    llm.say("ok").call_tool("record_colour", {"colour": "blue"}).structured({"colour": "blue"})
    good = _check({**os.environ})
    dead = _check({**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})

    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.splitlines()[:3] == ["postgres: ok", "redis: ok", "migrations: ok"]
    assert dead.returncode == 1
    assert "redis: error: ConnectionError" in dead.stdout
    assert "postgres: ok" in dead.stdout


@pytest.mark.parametrize("path", ["/healthz", "/livez"])
def test_liveness_touches_nothing(settings: Settings, path: str) -> None:
    dead = settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "db_pool_timeout": 0.5}
    )
    from server.app import create_app

    with TestClient(create_app(dead, relay=False)) as client:
        assert client.get(path).status_code == 200
        ready = client.get("/readyz")
        metrics_page = client.get("/metrics")

    assert ready.status_code == 503 and ready.json()["redis"].startswith("error")
    assert metrics_page.status_code == 200, "a backend down does not fail the scrape"
    assert 'conversa_scrape_collector_success{collector="queues"} 0.0' in metrics_page.text


def test_rq_info_and_rq_dashboard_see_our_queues(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    post_inbound(client, settings, tenant, inbound_form(tenant, "Oi"))
    assert relay(settings) == 1
    assert settings.redis_url

    info = subprocess.run(
        [str(BIN / "rq"), "info", "--url", settings.redis_url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    from rq_dashboard.cli import make_flask_app

    dashboard = make_flask_app(None, None, None, "")
    dashboard.config["RQ_DASHBOARD_REDIS_URL"] = [settings.redis_url]
    queues = dashboard.test_client().get("/0/data/queues.json").get_json()["queues"]

    assert info.returncode == 0, info.stderr
    assert "process_ai_response |" in info.stdout and "1 jobs total" in info.stdout
    assert {q["name"]: q["count"] for q in queues}["process_ai_response"] == 1


def test_transcriptions_are_timed_by_provider_and_outcome() -> None:
    ok = {"provider": "offline", "outcome": "ok"}
    error = {"provider": "offline", "outcome": "error"}
    name = "conversa_transcription_duration_seconds_count"
    before = (local(name, **ok), local(name, **error))

    with metrics.transcription_timer("offline"):
        pass
    with pytest.raises(RuntimeError), metrics.transcription_timer("offline"):
        raise RuntimeError("the decoder crashed")

    assert (local(name, **ok) - before[0], local(name, **error) - before[1]) == (1, 1)
