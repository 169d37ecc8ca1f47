"""Templates per purpose outside WhatsApp's 24-hour window: the words that reach the user, the
visible failure without an approved template, and the management API that keeps them."""

from __future__ import annotations

import json
import uuid
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from channels.sandbox.twilio import TwilioSandbox
from server.api.auth import Role, mint_token
from server.jobs.reminders import deliver_reminder
from server.settings import Settings
from store import outbox, tenants
from store.records import Tenant, User
from tests.conftest import rows, run_jobs
from tests.templating import register_template
from tests.toolcontext import context_for, make_tenant, make_user_with_conversation, ok
from tests.tooling import run_tool
from tools.reminders import schedule_reminder

PREFIX = "/api/v1"
REMINDER = "⏰ Lembrete: {{1}} ({{2}})"
LEGACY = "Olá! A {{1}} tem novidades para você."


def auth(settings: Settings, tenant: Tenant, role: Role = Role.tenant_admin) -> dict[str, str]:
    bearer = mint_token(settings, subject=f"{role}@acme", role=role, tenant_id=tenant.id)
    return {"Authorization": f"Bearer {bearer}"}


def _legacy_template(settings: Settings, sandbox: TwilioSandbox, tenant: Tenant) -> str:
    """The tenant's one fixed template of old, as in the issue: {"1": "Acme"}, no message text."""
    sid = sandbox.add_content(LEGACY, account_sid=tenant.twilio_account_sid)
    rows(
        settings,
        "update tenants set closed_window_template_sid = %s, "
        "closed_window_template_variables = %s returning id",
        sid,
        json.dumps({"1": "Acme"}),
    )
    return sid


def _user(settings: Settings, tenant: Tenant) -> User:
    """A user whose conversation's first message was answered long ago (window closed)."""
    user = make_user_with_conversation(settings, tenant)
    rows(settings, "update messages set status = 'answered', processed_at = now() "
         "returning id")  # fmt: skip
    return user


def _due_reminder(settings: Settings, tenant: Tenant, user: User, text: str) -> int:
    """A reminder of `user`'s, due now, whose user last wrote more than 24 hours ago."""
    answer = ok(run_tool(schedule_reminder, {"text": text, "when": "em 1 hora"},
                         context_for(tenant, user), call_id="r1"))  # fmt: skip
    reminder = int(answer.split("#")[1].split()[0])
    rows(settings, "update reminders set due_at = due_at - interval '2 hours' where id = %s "
         "returning id", reminder)  # fmt: skip
    rows(settings, "update conversations set last_inbound_at = now() - interval '25 hours' "
         "returning id")  # fmt: skip
    return reminder


def _when(settings: Settings, reminder: int, form: str = "%d/%m às %H:%M") -> str:
    ((due,),) = rows(settings, "select due_at from reminders where id = %s", reminder)
    return str(due.astimezone(ZoneInfo("America/Sao_Paulo")).strftime(form))


def _template_sends(purpose: str, outcome: str) -> float:
    labels = {"purpose": purpose, "outcome": outcome}
    return REGISTRY.get_sample_value("conversa_template_sends_total", labels) or 0.0


# -- what reaches the user ---------------------------------------------------------------------


def test_a_reminder_outside_the_window_reaches_the_user_inside_its_template(
    settings: Settings, tenant: Tenant, sandbox: TwilioSandbox
) -> None:
    _legacy_template(settings, sandbox, tenant)
    sid = register_template(settings, sandbox, tenant, "reminder", REMINDER,
                            {"1": "text", "2": "when"})  # fmt: skip
    user = _user(settings, tenant)
    reminder = _due_reminder(settings, tenant, user, "pagar a conta de luz")
    before = _template_sends("reminder", "sent")

    assert deliver_reminder(str(tenant.id), reminder, "cid") == "delivered"
    run_jobs(settings)

    (sent,) = sandbox.wait_for_messages(1)
    assert sent["body"] == f"⏰ Lembrete: pagar a conta de luz ({_when(settings, reminder)})"
    assert sent["content_sid"] == sid
    assert rows(settings, "select template_sid, template_variables ->> 'text' from messages "
                "where purpose = 'reminder'") == [(sid, "pagar a conta de luz")]  # fmt: skip
    assert _template_sends("reminder", "sent") == before + 1


def test_the_template_in_the_users_language_is_chosen(
    settings: Settings, tenant: Tenant, sandbox: TwilioSandbox
) -> None:
    register_template(settings, sandbox, tenant, "reminder", REMINDER, {"1": "text", "2": "when"})
    register_template(settings, sandbox, tenant, "reminder", "⏰ Reminder: {{1}}",
                      {"1": "text"}, language="en")  # fmt: skip
    user = _user(settings, tenant)
    rows(settings, "update users set locale = 'en-US' where id = %s returning id", user.id)
    reminder = _due_reminder(settings, tenant, user, "call mom")

    assert deliver_reminder(str(tenant.id), reminder, "cid") == "delivered"
    run_jobs(settings)

    assert [m["body"] for m in sandbox.wait_for_messages(1)] == ["⏰ Reminder: call mom"]


@pytest.mark.parametrize("status", [None, "pending", "rejected"])
def test_a_purpose_without_an_approved_template_fails_visibly_with_the_reason(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    status: str | None,
) -> None:
    _legacy_template(settings, sandbox, tenant)  # never stands in for a reminder's words
    if status is not None:
        register_template(settings, sandbox, tenant, "reminder", REMINDER,
                          {"1": "text", "2": "when"}, status=status)  # fmt: skip
    user = _user(settings, tenant)
    reminder = _due_reminder(settings, tenant, user, "pagar a conta de luz")
    before = _template_sends("reminder", "no_template")

    assert deliver_reminder(str(tenant.id), reminder, "cid") == "delivered"
    run_jobs(settings)

    assert sandbox.messages == []
    ((state, code, error),) = rows(
        settings, "select status, error_code, error from messages where purpose = 'reminder'"
    )
    assert (state, code) == ("failed", 63016)
    assert "no approved template for purpose 'reminder'" in error
    assert f"/api/v1/tenants/{tenant.id}/templates" in error
    if status is not None:
        assert f"pt is {status}" in error
    assert _template_sends("reminder", "no_template") == before + 1
    listed = client.get(f"{PREFIX}/tenants/{tenant.id}/messages?status=failed&direction=outbound",
                        headers=auth(settings, tenant, Role.support_agent))  # fmt: skip
    assert [m["error"] for m in listed.json()["items"]] == [error]


def test_a_message_missing_a_variable_fails_rather_than_half_filled(
    settings: Settings, tenant: Tenant, sandbox: TwilioSandbox
) -> None:
    register_template(settings, sandbox, tenant, "staff_followup", "{{1}} da Acme: {{2}}",
                      {"1": "agent", "2": "text"})  # fmt: skip
    user = _user(settings, tenant)
    rows(settings, "update conversations set last_inbound_at = now() - interval '25 hours' "
         "returning id")  # fmt: skip
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        ((conversation,),) = conn.execute("select id from conversations").fetchall()
        message = outbox.insert_outbound(
            conn,
            tenant_id=tenant.id,
            conversation_id=conversation,
            idempotency_key="old-staff",
            body="Ainda precisa de ajuda?",
            from_address=tenant.whatsapp_sender,
            to_address=user.address,
            correlation_id="cid",
            purpose="staff",
        )  # fmt: skip (a staff row written before the variables existed: no `agent`)

    run_jobs(settings)

    assert sandbox.messages == []
    ((state, error),) = rows(settings, "select status, error from messages where id = %s",
                             message.id)  # fmt: skip
    assert state == "failed" and "needs agent" in error and "PATCH" in error


# -- the management API ------------------------------------------------------------------------


def _body(**changes: object) -> dict[str, object]:
    return {
        "purpose": "reminder",
        "language": "pt",
        "content_sid": "HX" + "c" * 32,
        "body": REMINDER,
        "variables": {"1": "text", "2": "when"},
    } | changes


def test_admins_create_list_approve_and_delete_templates(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    base = f"{PREFIX}/tenants/{tenant.id}/templates"
    created = client.post(base, headers=auth(settings, tenant), json=_body())
    assert created.status_code == 201, created.text
    template = created.json()
    assert (template["status"], template["variables"]) == ("pending", {"1": "text", "2": "when"})
    item = f"{base}/{template['id']}"

    rejected = client.patch(
        item,
        headers=auth(settings, tenant),
        json={"status": "rejected", "rejection_reason": "Too vague."},
    )
    assert (rejected.json()["status"], rejected.json()["rejection_reason"]) == (
        "rejected", "Too vague.",
    )  # fmt: skip
    approved = client.patch(item, headers=auth(settings, tenant), json={"status": "approved"})
    assert (approved.json()["status"], approved.json()["rejection_reason"]) == ("approved", None)
    listed = client.get(base, headers=auth(settings, tenant, Role.support_agent))
    assert [(t["purpose"], t["status"]) for t in listed.json()["items"]] == [
        ("reminder", "approved")
    ]

    assert client.delete(item, headers=auth(settings, tenant)).status_code == 204
    assert client.get(item, headers=auth(settings, tenant)).status_code == 404
    assert rows(settings, "select count(*) from message_templates") == [(0,)]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (_body(content_sid="HX123"), "content_sid"),
        (_body(content_sid="MG" + "c" * 32), "content_sid"),
        (_body(purpose="birthday"), "purpose"),
        (_body(language="portuguese"), "language"),
        (_body(body="⏰ Lembrete: {{1}}"), "must match"),  # {{2}} mapped but not in the text
        (_body(variables={"1": "text"}), "must match"),  # {{2}} in the text, not mapped
        (_body(variables={"1": "text", "2": "password"}), "Unknown variable"),
        (_body(variables={"1": "text", "2": "agent"}), "Unknown variable"),  # not a reminder's
        (_body(body="Sem variáveis", variables={}), "no placeholder"),
        (_body(variables={"one": "text", "2": "when"}), "placeholder numbers"),
        (_body(status="live"), "status"),
        (_body(tenant_id=str(uuid.uuid4())), "tenant_id"),
        (_body(body=""), "body"),
    ],
)
def test_bad_templates_are_422_and_nothing_is_written(
    client: TestClient, settings: Settings, tenant: Tenant, body: dict[str, object], says: str
) -> None:
    response = client.post(f"{PREFIX}/tenants/{tenant.id}/templates",
                           headers=auth(settings, tenant), json=body)  # fmt: skip

    assert response.status_code == 422, response.text
    assert says in response.json()["error"]["message"]
    assert rows(settings, "select count(*) from message_templates") == [(0,)]


def _on_cloud(settings: Settings, tenant: Tenant) -> None:
    """Move the tenant to Meta's Cloud API, where a template is sent by its name."""
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        tenants.set_channel(conn, tenant.id, "cloud", "106540352242922", "EAAG-token", "secret")


TWILIO_SID = "HX" + "c" * 32
CLOUD_NAME = "lembrete_diario_2"


@pytest.mark.parametrize(
    ("channel", "content_sid", "says"),
    [
        ("twilio", TWILIO_SID, None),
        ("twilio", CLOUD_NAME, "must be a Twilio Content SID (HX and 32 hex digits)"),
        ("cloud", CLOUD_NAME, None),
        ("cloud", "a" * 512, None),
        ("cloud", TWILIO_SID, "must be the template's name on Meta (1 to 512 lowercase letters"),
        ("cloud", "Lembrete_diario", "for a tenant on the cloud channel"),
        ("cloud", "lembrete diario", "for a tenant on the cloud channel"),
        ("cloud", "lembrete-diario", "for a tenant on the cloud channel"),
        ("cloud", "a" * 513, "content_sid"),
        ("cloud", "", "content_sid"),
    ],
)
def test_a_template_is_registered_by_the_id_its_tenants_provider_sends_it_by(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    channel: str,
    content_sid: str,
    says: str | None,
) -> None:
    if channel == "cloud":
        _on_cloud(settings, tenant)
    response = client.post(f"{PREFIX}/tenants/{tenant.id}/templates",
                           headers=auth(settings, tenant),
                           json=_body(content_sid=content_sid))  # fmt: skip

    if says is None:
        assert response.status_code == 201, response.text
        assert rows(settings, "select content_sid from message_templates") == [(content_sid,)]
    else:
        assert response.status_code == 422, response.text
        assert says in response.json()["error"]["message"]
        assert rows(settings, "select count(*) from message_templates") == [(0,)]


def test_a_cloud_tenants_template_changes_to_another_name_but_not_to_a_twilio_sid(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    _on_cloud(settings, tenant)
    base = f"{PREFIX}/tenants/{tenant.id}/templates"
    created = client.post(base, headers=auth(settings, tenant), json=_body(content_sid=CLOUD_NAME))
    item = f"{base}/{created.json()['id']}"

    sid = client.patch(item, headers=auth(settings, tenant), json={"content_sid": TWILIO_SID})
    renamed = client.patch(item, headers=auth(settings, tenant), json={"content_sid": "lembrete_3"})
    sync = client.post(f"{item}/sync", headers=auth(settings, tenant))

    assert sid.status_code == 422 and sid.json()["error"]["code"] == "invalid_content_sid"
    assert renamed.status_code == 200 and renamed.json()["content_sid"] == "lembrete_3"
    assert sync.status_code == 422 and sync.json()["error"]["code"] == "sync_unsupported"
    assert "Set the status by hand" in sync.json()["error"]["message"]
    assert rows(settings, "select content_sid from message_templates") == [("lembrete_3",)]


@pytest.mark.parametrize(
    ("channel", "template", "accepted"),
    [
        ("twilio", TWILIO_SID, True),
        ("twilio", CLOUD_NAME, False),
        ("cloud", CLOUD_NAME, True),
        ("cloud", TWILIO_SID, False),
        ("cloud", "Reengajamento", False),
    ],
)
def test_the_legacy_closed_window_template_is_named_as_the_tenants_provider_names_it(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    channel: str,
    template: str,
    accepted: bool,
) -> None:
    if channel == "cloud":
        _on_cloud(settings, tenant)
    response = client.patch(f"{PREFIX}/tenants/{tenant.id}", headers=auth(settings, tenant),
                            json={"closed_window_template_sid": template})  # fmt: skip

    stored = rows(settings, "select closed_window_template_sid from tenants")
    if accepted:
        assert response.status_code == 200, response.text
        assert stored == [(template,)]
    else:
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_closed_window_template_sid"
        assert f"for a tenant on the {channel} channel" in error["message"]
        assert stored == [(None,)]


def test_a_change_must_keep_text_and_variables_matching(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    base = f"{PREFIX}/tenants/{tenant.id}/templates"
    item = f"{base}/{client.post(base, headers=auth(settings, tenant), json=_body()).json()['id']}"

    lonely = client.patch(item, headers=auth(settings, tenant), json={"body": "Só {{1}}"})
    purpose = client.patch(item, headers=auth(settings, tenant), json={"purpose": "date_notice"})
    nulled = client.patch(item, headers=auth(settings, tenant), json={"body": None})
    both = client.patch(item, headers=auth(settings, tenant),
                        json={"body": "Só {{1}}", "variables": {"1": "text"}})  # fmt: skip

    assert lonely.status_code == 422 and "must match" in lonely.json()["error"]["message"]
    assert purpose.status_code == 422 and nulled.status_code == 422
    assert both.status_code == 200 and both.json()["body"] == "Só {{1}}"


def test_one_template_per_purpose_and_language(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    base = f"{PREFIX}/tenants/{tenant.id}/templates"
    assert client.post(base, headers=auth(settings, tenant), json=_body()).status_code == 201
    again = client.post(base, headers=auth(settings, tenant),
                        json=_body(content_sid="HX" + "d" * 32))  # fmt: skip
    english = client.post(base, headers=auth(settings, tenant), json=_body(language="en"))

    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    assert english.status_code == 201
    assert rows(settings, "select language from message_templates order by language") == [
        ("en",), ("pt",),
    ]  # fmt: skip


def test_templates_are_the_tenants_own_and_staff_only_read_them(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    other = make_tenant(settings, "globex")
    base = f"{PREFIX}/tenants/{tenant.id}/templates"
    template = client.post(base, headers=auth(settings, tenant), json=_body()).json()
    item = f"{base}/{template['id']}"
    outsider, staff = auth(settings, other), auth(settings, tenant, Role.support_agent)

    assert client.get(item, headers=outsider).status_code == 404
    assert client.get(base, headers=outsider).status_code == 404
    assert client.patch(item, headers=outsider, json={"status": "approved"}).status_code == 404
    assert client.delete(item, headers=outsider).status_code == 404
    theirs = client.get(f"{PREFIX}/tenants/{other.id}/templates", headers=outsider)
    assert theirs.status_code == 200 and theirs.json()["items"] == []
    assert client.get(item, headers=staff).status_code == 200
    assert client.post(base, headers=staff, json=_body(language="en")).status_code == 403
    assert client.patch(item, headers=staff, json={"status": "approved"}).status_code == 403
    assert client.delete(item, headers=staff).status_code == 403
    assert rows(settings, "select status from message_templates") == [("pending",)]


def test_sync_reads_the_approval_status_from_twilio(
    client: TestClient, settings: Settings, tenant: Tenant, sandbox: TwilioSandbox
) -> None:
    sid = sandbox.add_content(REMINDER, account_sid=tenant.twilio_account_sid, status="pending")
    base = f"{PREFIX}/tenants/{tenant.id}/templates"
    template = client.post(base, headers=auth(settings, tenant), json=_body(content_sid=sid))
    sync = f"{base}/{template.json()['id']}/sync"

    pending = client.post(sync, headers=auth(settings, tenant))
    sandbox.contents.set_approval(sid, "rejected", "Variable at the end of the text.")
    rejected = client.post(sync, headers=auth(settings, tenant))
    sandbox.contents.set_approval(sid, "approved")
    approved = client.post(sync, headers=auth(settings, tenant))

    assert pending.status_code == 200 and pending.json()["status"] == "pending"
    assert (rejected.json()["status"], rejected.json()["rejection_reason"]) == (
        "rejected", "Variable at the end of the text.",
    )  # fmt: skip
    assert (approved.json()["status"], approved.json()["rejection_reason"]) == ("approved", None)
    assert approved.json()["status_checked_at"] is not None
    unknown = client.post(base, headers=auth(settings, tenant),
                          json=_body(language="en", content_sid="HX" + "e" * 32))  # fmt: skip
    missing = client.post(f"{base}/{unknown.json()['id']}/sync", headers=auth(settings, tenant))
    assert missing.status_code == 422 and "content_sid" in missing.json()["error"]["message"]
    assert rows(settings, "select status from message_templates where language = 'en'") == [
        ("pending",)
    ]
