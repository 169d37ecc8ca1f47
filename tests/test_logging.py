"""One correlation id per inbound message, on every log line of its life, in JSON."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from server.logs import configure_logging
from server.settings import Settings
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
