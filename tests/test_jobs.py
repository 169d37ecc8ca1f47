"""What the jobs do when things fail: a recorded error a person can see, never a lost message."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue
from rq.registry import ScheduledJobRegistry

from channels.sandbox.twilio import TwilioSandbox
from server.app import create_app
from server.jobs.send import send_whatsapp_message
from server.jobs.turn import process_ai_response
from server.settings import QUEUE_PROCESS, QUEUE_SEND, Settings, get_settings
from store.records import Tenant
from tests.conftest import inbound_form, post_inbound, queued_jobs, rows, run_jobs
from tests.fakes import ScriptedModel
from tests.providers import Provider, provider

__all__ = ["provider"]  # the fixture that runs a test through each WhatsApp provider


def test_model_failure_is_recorded_on_the_message_and_in_ai_results(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    # No scripted answer: the model server answers 500, ChatOpenAI raises, the job fails.
    post_inbound(client, settings, tenant, inbound_form(tenant, "Oi"))
    run_jobs(settings)

    ((status, error),) = rows(
        settings, "select status, error from messages where direction = 'inbound'"
    )
    assert status == "failed"
    assert "The assistant failed" in error and "Error code: 500" in error
    ((ai_error, reply),) = rows(settings, "select error, reply from ai_results")
    assert "scripted model has no response left" in ai_error and reply is None
    assert sandbox.messages == []


@pytest.fixture
def retrying(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The API and the jobs with one retry per job (the suite's default is none)."""
    monkeypatch.setenv("JOB_RETRIES", "1")
    get_settings.cache_clear()
    with TestClient(create_app(get_settings(), relay=False)) as client:
        yield client


def test_model_failure_with_retries_left_leaves_the_message_open(
    retrying: TestClient, settings: Settings, tenant: Tenant, llm: ScriptedModel
) -> None:
    post_inbound(retrying, settings, tenant, inbound_form(tenant, "Oi"))
    run_jobs(get_settings())

    assert rows(settings, "select status from messages") == [("received",)]
    assert rows(settings, "select count(*) from ai_results where error is not null") == [(1,)]
    scheduled = ScheduledJobRegistry(QUEUE_PROCESS, connection=_redis(settings))
    assert scheduled.count == 1, "the failed run is scheduled for a retry"

    # The retry runs (now, instead of after the backoff) and this time the model answers.
    llm.say("Voltei!")
    _run_scheduled_now(settings, QUEUE_PROCESS)
    run_jobs(get_settings())
    assert rows(settings, "select status from messages where direction = 'inbound'") == [
        ("answered",)
    ]


def test_twilio_permanent_error_fails_at_once_with_the_reason(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    llm.say("Olá!")
    sandbox.inject_error(21211, 400, "Invalid 'To' Phone Number")
    post_inbound(client, settings, tenant, inbound_form(tenant, "Oi"))
    run_jobs(settings)

    ((status, error, sid),) = rows(
        settings,
        "select status, error, provider_message_id from messages where direction = 'outbound'",
    )
    assert (status, sid) == ("failed", None)
    assert "Twilio error 21211" in error
    assert sandbox.messages == []


def test_twilio_server_error_is_retried_then_sent(
    retrying: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    llm: ScriptedModel,
) -> None:
    llm.say("Olá!")
    sandbox.inject_error(20500, 500, "Internal Server Error")
    post_inbound(retrying, settings, tenant, inbound_form(tenant, "Oi"))
    run_jobs(get_settings())

    assert rows(settings, "select status from messages where direction = 'outbound'") == [
        ("pending",)
    ]
    assert sandbox.messages == []
    _run_scheduled_now(settings, QUEUE_SEND)
    run_jobs(get_settings())

    assert [m["body"] for m in sandbox.messages] == ["Olá!"]
    assert rows(settings, "select status from messages where direction = 'outbound'") == [
        ("queued",)
    ]


def _redis(settings: Settings) -> Redis:
    assert settings.redis_url
    return Redis.from_url(settings.redis_url)


def _run_scheduled_now(settings: Settings, queue_name: str) -> None:
    """Move the one job waiting for its retry back onto its queue, skipping the backoff."""
    queue = Queue(queue_name, connection=_redis(settings))
    registry = ScheduledJobRegistry(queue_name, connection=queue.connection)
    (job_id,) = registry.get_job_ids()
    registry.remove(job_id)
    job = queue.fetch_job(job_id)
    assert job is not None
    queue.enqueue_job(job)


def test_jobs_for_unknown_messages_do_nothing(settings: Settings) -> None:
    assert process_ai_response(str(uuid.uuid4()), 987654, "cid") == "missing"
    assert send_whatsapp_message(str(uuid.uuid4()), 987654, "cid") == "missing"


def test_a_burst_stored_before_the_run_is_answered_in_one_turn(
    settings: Settings, provider: Provider, llm: ScriptedModel
) -> None:
    llm.say("Anotei as três coisas.")
    for text in ("Oi", "gastei 10 reais", "no mercado"):
        assert provider.say(text) == 200
    run_jobs(settings)

    assert provider.bodies() == ["Anotei as três coisas."]
    contents = [m["content"] for m in llm.requests[0]["messages"] if m["role"] == "user"]
    assert contents == ["Oi", "gastei 10 reais", "no mercado"]
    assert rows(settings, "select distinct status from messages where direction = 'inbound'") == [
        ("answered",)
    ]
    assert queued_jobs(settings, QUEUE_SEND) == 0
