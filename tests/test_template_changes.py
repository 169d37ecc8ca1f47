"""Changing a registered template: what WhatsApp approved stays true of what is stored."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from twilio.rest import Client

from channels.sandbox.twilio import TwilioSandbox
from server.api import templates as templates_api
from server.settings import Settings
from store.records import Tenant
from tests.conftest import rows
from tests.test_templates import PREFIX, REMINDER, _body, auth


def _approved(client: TestClient, settings: Settings, tenant: Tenant, sid: str) -> str:
    """Register `sid` as the tenant's approved reminder template, status read from Twilio."""
    base = f"{PREFIX}/tenants/{tenant.id}/templates"
    created = client.post(base, headers=auth(settings, tenant), json=_body(content_sid=sid))
    item = f"{base}/{created.json()['id']}"
    synced = client.post(f"{item}/sync", headers=auth(settings, tenant)).json()
    assert synced["status"] == "approved" and synced["status_checked_at"] is not None
    return item


def _state(client: TestClient, settings: Settings, tenant: Tenant, item: str) -> tuple[Any, ...]:
    shown = client.get(item, headers=auth(settings, tenant)).json()
    return shown["status"], shown["rejection_reason"], shown["status_checked_at"]


def test_new_words_or_a_new_sid_send_an_approved_template_back_to_pending(
    client: TestClient, settings: Settings, tenant: Tenant, sandbox: TwilioSandbox
) -> None:
    sid = sandbox.add_content(REMINDER, account_sid=tenant.twilio_account_sid)
    item = _approved(client, settings, tenant, sid)
    admin = auth(settings, tenant)

    same = client.patch(item, headers=admin, json={"body": REMINDER, "language": "pt-BR"})
    assert same.status_code == 200 and same.json()["status"] == "approved"
    reworded = client.patch(item, headers=admin, json={"body": "⏰ {{1}} às {{2}}"})
    assert reworded.status_code == 200, reworded.text
    assert _state(client, settings, tenant, item) == ("pending", None, None)

    client.patch(item, headers=admin, json={"status": "approved"})
    moved = client.patch(item, headers=admin, json={"content_sid": "HX" + "d" * 32})
    assert moved.json()["status"] == "pending" and moved.json()["status_checked_at"] is None

    # An admin who says the new words are approved is believed.
    told = client.patch(item, headers=admin,
                        json={"body": REMINDER, "status": "approved"})  # fmt: skip
    assert (told.json()["body"], told.json()["status"]) == (REMINDER, "approved")


@pytest.mark.parametrize("key", ["²", "٣", "01", "0", "-1", " 1"])
def test_a_variable_key_that_is_not_a_placeholder_number_is_422_on_change(
    client: TestClient, settings: Settings, tenant: Tenant, key: str
) -> None:
    base = f"{PREFIX}/tenants/{tenant.id}/templates"
    created = client.post(base, headers=auth(settings, tenant), json=_body(body="⏰ {{1}}",
                          variables={"1": "text"}))  # fmt: skip
    item = f"{base}/{created.json()['id']}"

    changed = client.patch(item, headers=auth(settings, tenant), json={"variables": {key: "text"}})
    english = _body(language="en", body="⏰ {{1}}", variables={key: "text"})
    added = client.post(base, headers=auth(settings, tenant), json=english)

    assert changed.status_code == 422, changed.text
    assert "placeholder numbers" in changed.json()["error"]["message"]
    assert added.status_code == 422
    assert rows(settings, "select variables from message_templates") == [({"1": "text"},)]


def test_sync_writes_nothing_when_the_content_sid_changed_meanwhile(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = sandbox.add_content(REMINDER, account_sid=tenant.twilio_account_sid)
    new = "HX" + "d" * 32
    base = f"{PREFIX}/tenants/{tenant.id}/templates"
    created = client.post(base, headers=auth(settings, tenant), json=_body(content_sid=old))
    item = f"{base}/{created.json()['id']}"
    real_client = templates_api.twilio_for

    def changed_meanwhile(settings: Settings, tenant: Tenant) -> Client:
        # An admin points the template at another content after sync read it from the database.
        rows(settings, "update message_templates set content_sid = %s returning id", new)
        return real_client(settings, tenant)

    monkeypatch.setattr(templates_api, "twilio_for", changed_meanwhile)
    raced = client.post(f"{item}/sync", headers=auth(settings, tenant))

    assert raced.status_code == 409 and raced.json()["error"]["code"] == "template_changed"
    assert "Sync again" in raced.json()["error"]["message"]
    assert rows(settings, "select content_sid, status, status_checked_at from message_templates"
                ) == [(new, "pending", None)]  # fmt: skip
