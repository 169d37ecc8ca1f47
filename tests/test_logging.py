"""One correlation id per inbound message, on every log line of its life, in JSON."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue

from server.jobs.worker import CorrelatedWorker
from server.logs import bind_correlation_id, configure_logging
from server.settings import QUEUE_TRANSCRIBE, Settings
from store.records import Tenant
from tests.conftest import inbound_form, post_inbound, rows, run_jobs
from tests.fakes import ScriptedModel


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Production (JSON) logging into a buffer for the length of the test."""
    buffer = io.StringIO()
    configure_logging("production", "INFO", stream=buffer)
    yield buffer
    configure_logging("test", "WARNING")


def test_correlation_id_rides_from_webhook_through_jobs_to_the_send(
    json_logs: io.StringIO,
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    llm: ScriptedModel,
) -> None:
    llm.say("Oi!")
    post_inbound(client, settings, tenant, inbound_form(tenant, "Oi"))
    run_jobs(settings)

    ((cid,),) = rows(settings, "select correlation_id from messages where direction = 'inbound'")
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    ours = [line for line in lines if line.get("correlation_id") == cid]
    events = [line["event"] for line in ours]
    assert "inbound stored" in events
    assert "turn answered" in events
    assert "sent" in events
    jobs = {line.get("job") for line in ours}
    assert {"process_ai_response", "send_whatsapp_message"} <= jobs
    # Logs never carry the tenant's Twilio auth token.
    assert all(tenant.twilio_auth_token not in json.dumps(line) for line in lines)


def logging_job(correlation_id: str) -> str:
    """A job that binds its own context, as every job of the service does, then logs."""
    bind_correlation_id(correlation_id, job="logging_job")
    structlog.get_logger("tests").info("inside the job")
    return "ok"


def test_a_jobs_own_binding_keeps_the_rq_job_id(json_logs: io.StringIO, settings: Settings) -> None:
    assert settings.redis_url
    redis = Redis.from_url(settings.redis_url)
    queue = Queue(QUEUE_TRANSCRIBE, connection=redis)  # run in the worker's own process
    job = queue.enqueue("tests.test_logging.logging_job", "cid-1", meta={"correlation_id": "cid-1"})
    CorrelatedWorker([queue], connection=redis).work(burst=True)

    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    (line,) = [line for line in lines if line["event"] == "inside the job"]
    assert (line["rq_job_id"], line["correlation_id"], line["job"]) == (
        job.id,
        "cid-1",
        "logging_job",
    )
