"""One personal-data rule per tenant: the detectors, memory writes (extraction job and the
`save_memory` tool), traces of every run kind against a local LangSmith endpoint, and the
tenant setting in the management API."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from redis import Redis

from channels.sandbox.twilio import TwilioSandbox
from graphs.context import Context
from server.api.auth import Role, mint_token
from server.jobs import runner
from server.jobs.memories import extract_memories
from server.privacy import mask_trace
from server.settings import Settings
from store import identity, inbox, memory, pii, tenants
from store.records import Tenant
from tests.conftest import inbound_form, post_inbound, rows, run_jobs
from tests.fakes import FakeLangSmith, ScriptedModel
from tests.test_brain import give_plan
from tests.test_memory import _enable_memory
from tests.tooling import run_tool
from tools.memory import save_memory

ISSUE = "Oi, sou a Ana, meu número é +55 11 99999-0000"
"""The sentence from the issue."""

# -- detectors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (ISSUE, "Oi, sou a Ana, meu número é [phone]"),
        ("manda pra whatsapp:+5511999990000", "manda pra [phone]"),
        ("liga (11) 99999-0000 ou 11 3333-4444", "liga [phone] ou [phone]"),
        ("meu cel 11999990000.", "meu cel [phone]."),
        ("fixo 99999-0000", "fixo [phone]"),
        ("meu numero 5511999990000", "meu numero [phone]"),  # a WhatsApp id, 55 without +
        ("fixo 551133334444 ou 55 11 99999-0000", "fixo [phone] ou [phone]"),
        (
            "me chama: https://wa.me/5511999990000?text=oi",
            "me chama: https://wa.me/[phone]?text=oi",
        ),
        ("liga (11) 9 9999-0000 ou 11 9 9999-0000", "liga [phone] ou [phone]"),
        ("ou 11 9.9999-0000 ou (11) 2023-2024", "ou [phone] ou [phone]"),  # a DDD in parentheses
        ("call +1 (415) 555-2671 or +44 20 7946 0958", "call [phone] or [phone]"),
        ("e-mail: ana.silva+wa@exemplo.com.br!", "e-mail: [email]!"),
        ("CPF 529.982.247-25 e 52998224725", "CPF [cpf] e [cpf]"),
        ("CNPJ 11.222.333/0001-81", "CNPJ [cnpj]"),
        ("cartão 4111 1111 1111 1111 e 5500-0000-0000-0004", "cartão [card] e [card]"),
    ],
)
def test_personal_data_is_found_and_masked(text: str, masked: str) -> None:
    assert pii.mask_pii(text) == masked
    assert pii.find_pii(text)


@pytest.mark.parametrize(
    "text",
    [
        "paguei R$ 1.800,00 ontem e R$ 1.234.567,89 no total",
        "dia 12/05/2024, 2024-05-12 ou 12.05.2024 às 10:30",
        "de 2023-2024, pedido 123456789, protocolo 2024000123",
        "turma 11 2023-2024, gestões 12 1999-2000 e 13 2019 2020",  # year ranges after a number
        "pedido 551199999000012 e 55119999000",  # a 55 run of other lengths
        "link https://exemplo.com/5511999990000",  # after a / that is not wa.me/
        "pedido 12345678901",  # 11 digits, but not a mobile shape nor a valid CPF
        "CPF 529.982.247-26",  # wrong check digit
        "cartão 4111 1111 1111 1112",  # fails Luhn
        "versão v1.2.3, 3 filhos, 42 anos",
    ],
)
def test_near_misses_are_left_alone(text: str) -> None:
    assert pii.mask_pii(text) == text
    assert pii.find_pii(text) == []


def test_the_policy_keeps_masks_or_refuses_and_rejects_unknown_rules() -> None:
    assert pii.apply_policy(ISSUE, "keep") == ISSUE
    assert pii.apply_policy(ISSUE, "mask").endswith("é [phone]")
    with pytest.raises(pii.PersonalDataRefused, match=r"personal data \(phone\)"):
        pii.apply_policy(ISSUE, "refuse")
    assert pii.apply_policy("Sou a Ana", "refuse") == "Sou a Ana"
    with pytest.raises(ValueError, match="unknown PII policy 'hide'"):
        pii.apply_policy(ISSUE, "hide")
    assert pii.effective_policy("keep", "masked") == "mask"
    assert pii.effective_policy("refuse", "masked") == "refuse"
    assert pii.effective_policy("keep", "full") == "keep"


def test_structural_trace_fields_lose_personal_data_but_not_amounts() -> None:
    masked = mask_trace({"name": "ana@exemplo.com", "category": "R$ 1.234.567,89"})
    assert masked == {"name": "[email]", "category": "R$ 1.234.567,89"}


# -- memory writes ----------------------------------------------------------------------------


def _set_tenant(settings: Settings, **values: str) -> None:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        for column, value in values.items():
            conn.execute(f"update tenants set {column} = %s", (value,))


def _inbound(settings: Settings, tenant: Tenant, body: str) -> Any:
    assert settings.database_url
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        message = inbox.store_inbound(
            conn, tenant_id=tenant.id, wa_id="5511900000001", profile_name=None,
            provider_message_id="SM" + uuid.uuid4().hex, kind="text", body=body,
            from_address="whatsapp:+5511900000001", to_address=tenant.whatsapp_sender,
            media=[], payload={}, correlation_id="cid-" + uuid.uuid4().hex[:8],
        )  # fmt: skip
    assert message is not None
    return message


def _memories(settings: Settings) -> list[str]:
    return sorted(r[0] for r in rows(settings, "select value->>'text' from store"))


def _extract(settings: Settings, tenant: Tenant, llm: ScriptedModel, facts: list[str]) -> str:
    _enable_memory(settings, tenant)
    message = _inbound(settings, tenant, ISSUE)
    llm.structured({"facts": facts})
    return extract_memories(str(tenant.id), str(message.conversation_id), [message.id], "c1")


def test_extraction_masks_phone_numbers_for_a_tenant_that_masks(
    settings: Settings, tenant: Tenant, llm: ScriptedModel
) -> None:
    _set_tenant(settings, pii_policy="mask")
    outcome = _extract(settings, tenant, llm, ["Se chama Ana.", "Seu número é +55 11 99999-0000."])
    assert outcome == "saved 2 of 2"
    assert _memories(settings) == ["Se chama Ana.", "Seu número é [phone]."]


def test_extraction_refuses_facts_with_personal_data_and_keeps_the_rest(
    settings: Settings, tenant: Tenant, llm: ScriptedModel
) -> None:
    _set_tenant(settings, pii_policy="refuse")
    outcome = _extract(settings, tenant, llm, ["Se chama Ana.", "Seu e-mail é ana@exemplo.com."])
    assert outcome == "saved 1 of 2"
    assert _memories(settings) == ["Se chama Ana."]


def test_extraction_keeps_what_a_keep_tenant_with_full_traces_said(
    settings: Settings, tenant: Tenant, llm: ScriptedModel
) -> None:
    assert _extract(settings, tenant, llm, ["Seu número é +55 11 99999-0000."]) == "saved 1 of 1"
    assert _memories(settings) == ["Seu número é +55 11 99999-0000."]


def _tool_context(settings: Settings, tenant: Tenant, policy: str) -> Context:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        user = tenants.upsert_user(
            conn, tenant.id, wa_id="5511900000001", address="whatsapp:+5511900000001",
            profile_name=None,
        )  # fmt: skip
    return Context(
        tenant_id=str(tenant.id),
        user_id=str(user.id),
        features=["long_term_memory"],
        pii_policy=policy,
    )


def test_the_save_memory_tool_masks_or_refuses_as_the_context_says(
    settings: Settings, tenant: Tenant
) -> None:
    text = "Meu CPF é 529.982.247-25 e meu e-mail ana@exemplo.com"
    masked = run_tool(save_memory, {"text": text}, _tool_context(settings, tenant, "mask"))
    assert masked.status == "success", masked.content
    assert masked.content == "Remembered: Meu CPF é [cpf] e meu e-mail [email]"

    refused = run_tool(
        save_memory, {"text": text}, _tool_context(settings, tenant, "refuse"), call_id="call_2"
    )
    assert refused.status == "error"
    assert "not remembered" in str(refused.content).lower()
    assert "personal data (email, cpf)" in str(refused.content)
    assert _memories(settings) == ["Meu CPF é [cpf] e meu e-mail [email]"]


def test_memory_save_refuses_in_the_store_itself(settings: Settings, tenant: Tenant) -> None:
    owner = _tool_context(settings, tenant, "refuse")
    from server.jobs.common import connect

    with connect(settings, str(tenant.id)) as conn:
        store = memory.memory_store(conn)
        with pytest.raises(pii.PersonalDataRefused):
            memory.save(store, owner, ISSUE, key="k", source="test", pii_policy="refuse")
        with pytest.raises(ValueError, match="unknown PII policy"):
            memory.save(store, owner, ISSUE, key="k", source="test", pii_policy="")
    assert _memories(settings) == []


def test_the_run_context_carries_the_tenants_rule(settings: Settings, tenant: Tenant) -> None:
    _set_tenant(settings, trace_privacy="masked")
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        fresh = tenants.tenant_by_id(conn, tenant.id)
    assert fresh is not None and fresh.pii_policy == "keep"
    user_context = _tool_context(settings, tenant, "keep")
    with psycopg.connect(settings.database_url) as conn:
        user = tenants.user_by_id(conn, uuid.UUID(user_context.user_id))
    assert user is not None
    rights = identity.Entitlement(frozenset(), None, None)
    assert runner.context_for(fresh, user, rights).pii_policy == "mask"


# -- traces -----------------------------------------------------------------------------------


def _leaks(traced: str, bits: tuple[str, ...]) -> list[str]:
    return [traced[max(0, traced.find(b) - 400) : traced.find(b) + 50] for b in bits if b in traced]


def test_a_masked_tenants_extraction_run_traces_no_text_and_stores_no_number(
    settings: Settings, tenant: Tenant, llm: ScriptedModel, langsmith: FakeLangSmith
) -> None:
    _set_tenant(settings, trace_privacy="masked")
    outcome = _extract(settings, tenant, llm, ["Se chama Ana.", "Seu número é +55 11 99999-0000."])

    assert outcome == "saved 2 of 2"
    traced = langsmith.text
    assert "extract_memories" in traced and str(tenant.id) in traced  # the run is there
    leaks = _leaks(traced, ("sou a Ana", "99999-0000", "Se chama Ana", "durable facts"))
    assert not leaks, leaks[0]
    assert _memories(settings) == ["Se chama Ana.", "Seu número é [phone]."]


def test_a_mask_tenants_extraction_trace_keeps_words_but_no_personal_data(
    settings: Settings, tenant: Tenant, llm: ScriptedModel, langsmith: FakeLangSmith
) -> None:
    _set_tenant(settings, pii_policy="mask")
    _extract(settings, tenant, llm, ["Seu e-mail é ana@exemplo.com."])

    traced = langsmith.text
    assert "extract_memories" in traced and "sou a Ana" in traced
    assert "[phone]" in traced and "[email]" in traced
    leaks = _leaks(traced, ("99999-0000", "ana@exemplo.com"))
    assert not leaks, leaks[0]


def test_a_masked_tenants_resume_by_staff_traces_none_of_what_staff_wrote(
    client: TestClient,
    settings: Settings,
    tenant: Tenant,
    sandbox: TwilioSandbox,
    redis: Redis,
    llm: ScriptedModel,
    langsmith: FakeLangSmith,
) -> None:
    _set_tenant(settings, trace_privacy="masked")
    give_plan(settings, tenant, ["human_handoff"])
    post_inbound(client, settings, tenant, inbound_form(tenant, "quero falar com um atendente"))
    run_jobs(settings)
    assert rows(settings, "select state from conversations") == [("HANDOFF",)]
    ((conversation_id,),) = rows(settings, "select id from conversations")
    staff = {"Authorization": "Bearer " + mint_token(
        settings, subject="ana@support", role=Role.support_agent, tenant_id=tenant.id
    )}  # fmt: skip
    base = f"/api/v1/tenants/{tenant.id}/support/conversations/{conversation_id}"
    said = {"text": "Oi! Sou a Ana, me liga no +55 11 98888-1234."}
    assert client.post(f"{base}/reply", headers=staff, json=said).is_success
    assert client.post(f"{base}/hand-back", headers=staff, json={}).status_code == 202
    before = len(langsmith.bodies)
    run_jobs(settings)

    assert rows(settings, "select state from conversations") == [("ACTIVE",)]
    resumed = b"\n".join(langsmith.bodies[before:]).decode("utf-8", errors="replace")
    assert str(tenant.id) in resumed  # the resume was traced
    leaks = _leaks(langsmith.text, ("Sou a Ana", "98888-1234", "falar com um atendente"))
    assert not leaks, leaks[0]


# -- the tenant setting -----------------------------------------------------------------------


def test_the_tenant_rule_is_set_through_the_api_and_bad_values_write_nothing(
    client: TestClient, settings: Settings, tenant: Tenant
) -> None:
    auth = {"Authorization": "Bearer " + mint_token(
        settings, subject="admin", role=Role.tenant_admin, tenant_id=tenant.id
    )}  # fmt: skip
    url = f"/api/v1/tenants/{tenant.id}"
    assert client.get(url, headers=auth).json()["pii_policy"] == "keep"

    for bad in ("hide", "", None, 1, "MASK"):
        body = {"name": "Changed", "pii_policy": bad}
        answer = client.patch(url, headers=auth, json=body)
        assert answer.status_code == 422, (bad, answer.text)
    assert rows(settings, "select name, pii_policy from tenants") == [("Acme", "keep")]

    answer = client.patch(url, headers=auth, json={"pii_policy": "refuse"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["pii_policy"] == "refuse"
    assert rows(settings, "select pii_policy from tenants") == [("refuse",)]
