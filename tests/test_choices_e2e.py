"""Replies with buttons and lists through each provider, end to end: the signed webhook in,
the turn on a real worker, the options out through the provider's sandbox, the user's press
back as the provider posts it, and its answer out again.

`provider` runs each test once through Twilio (Content API quick replies and list pickers) and
once through Meta's Cloud API (interactive messages). The graph-level cases are in
tests/test_choices.py.
"""

from __future__ import annotations

from typing import Any

from nodes.choices import NO_LONGER
from server.jobs.send import send_whatsapp_message
from server.settings import Settings
from store.records import Tenant
from tests.conftest import rows, run_jobs
from tests.fakes import ScriptedModel
from tests.providers import Provider, provider
from tests.test_brain import give_plan
from tests.test_channel import _answer_without_sending, _close_window

__all__ = ["provider"]  # the fixture that runs a test through each WhatsApp provider

FEATURES = ["finance", "relationships", "reminders"]


def _route(route: str) -> dict[str, str]:
    return {"route": route, "reason": "test"}


def _live(settings: Settings) -> list[tuple[Any, ...]]:
    return rows(settings, "select id from finance_entries where deleted_at is null order by id")


def _record(llm: ScriptedModel, amount: str, what: str) -> None:
    llm.structured(_route("finance")).call_tool(
        "record_transaction",
        {"kind": "expense", "amount": amount, "category": "alimentação", "description": what},
    ).say(f"Anotei R$ {amount} em {what}.")


def test_an_undo_button_goes_out_and_its_press_undoes_the_expense(
    settings: Settings, tenant: Tenant, provider: Provider, llm: ScriptedModel
) -> None:
    give_plan(settings, tenant, FEATURES)
    _record(llm, "30", "almoço")
    assert provider.say("gastei 30 no almoço") == 200
    run_jobs(settings)

    [(entry,)] = _live(settings)
    assert provider.bodies() == ["Anotei R$ 30 em almoço."], "the body, the button beside it"
    choices = provider.choices()
    assert choices is not None and choices["type"] == "buttons"
    assert [o["title"] for o in choices["options"]] == [f"Desfazer #{entry}"]
    outbox = rows(settings, "select body, choices is not null from messages "
                  "where direction = 'outbound'")  # fmt: skip
    assert outbox == [(f"Anotei R$ 30 em almoço.\n\n1. Desfazer #{entry}", True)]
    asked = len(llm.requests)

    assert provider.press(1) == 200
    run_jobs(settings)

    assert len(llm.requests) == asked, "a press is answered without the model"
    assert provider.bodies()[-1].startswith(f"Desfeito: apaguei o lançamento #{entry}")
    assert _live(settings) == []
    pressed = rows(settings, "select kind, body, choice from messages where direction = "
                   "'inbound' order by id")[-1]  # fmt: skip
    assert pressed[:2] == ("button", f"Desfazer #{entry}")
    assert pressed[2] == choices["options"][0]["id"]

    assert provider.press(1) == 200, "the same button again"
    run_jobs(settings)
    assert provider.bodies()[-1] == NO_LONGER["pt"]


def test_a_list_of_entries_goes_out_and_the_row_picked_is_deleted(
    settings: Settings, tenant: Tenant, provider: Provider, llm: ScriptedModel
) -> None:
    give_plan(settings, tenant, FEATURES)
    for amount, what in (("30", "almoço"), ("12,50", "café")):
        _record(llm, amount, what)
        provider.say(f"gastei {amount} no {what}")
        run_jobs(settings)
    llm.structured(_route("finance")).call_tool("offer_entries_to_delete", {}).say(
        "Qual lançamento você quer apagar?"
    )
    provider.say("quero apagar um lançamento")
    run_jobs(settings)

    choices = provider.choices()
    assert choices is not None and choices["type"] == "list"
    assert choices["button"] == "Escolher"
    newest, oldest = [entry for (entry,) in reversed(_live(settings))]
    assert [o["title"] for o in choices["options"]] == [
        f"#{newest} R$ 12,50",
        f"#{oldest} R$ 30,00",
    ]

    assert provider.press(2) == 200
    run_jobs(settings)

    assert provider.bodies()[-1].startswith(f"Apaguei o lançamento #{oldest}")
    assert [entry for (entry,) in _live(settings)] == [newest]


def test_yes_before_a_reminder_schedules_it(
    settings: Settings, tenant: Tenant, provider: Provider, llm: ScriptedModel
) -> None:
    give_plan(settings, tenant, FEATURES)
    llm.structured(_route("relationships")).call_tool(
        "propose_reminder", {"text": "pagar a luz", "when": "amanhã às 9h"}
    ).say("Quer que eu te lembre amanhã às 9h?")
    provider.say("tenho que pagar a luz amanhã")
    run_jobs(settings)
    choices = provider.choices()
    assert choices is not None
    assert [o["title"] for o in choices["options"]] == ["Sim", "Não"]

    provider.press(1)
    run_jobs(settings)

    assert provider.bodies()[-1].startswith("Combinado: lembrete #")
    assert rows(settings, "select text, status from reminders") == [("pagar a luz", "scheduled")]


def test_typing_the_number_answers_like_a_press(
    settings: Settings, tenant: Tenant, provider: Provider, llm: ScriptedModel
) -> None:
    give_plan(settings, tenant, FEATURES)
    _record(llm, "30", "almoço")
    provider.say("gastei 30 no almoço")
    run_jobs(settings)

    provider.say("1")
    run_jobs(settings)

    assert provider.bodies()[-1].startswith("Desfeito")
    assert _live(settings) == []


def test_a_body_too_long_for_buttons_goes_out_as_numbered_text(
    settings: Settings, tenant: Tenant, provider: Provider, llm: ScriptedModel
) -> None:
    give_plan(settings, tenant, FEATURES)
    long = "Anotei. " + "Detalhe. " * 130
    llm.structured(_route("finance")).call_tool(
        "record_transaction", {"kind": "expense", "amount": "5", "category": "alimentação"}
    ).say(long)
    provider.say("gastei 5")
    run_jobs(settings)

    [(entry,)] = _live(settings)
    assert provider.choices() is None
    assert provider.bodies()[-1].endswith(f"\n\n1. Desfazer #{entry}")


def test_options_a_provider_refuses_go_out_again_as_numbered_text(
    settings: Settings, tenant: Tenant, provider: Provider, llm: ScriptedModel
) -> None:
    give_plan(settings, tenant, FEATURES)
    _record(llm, "30", "almoço")
    # What each provider answers for buttons it will not draw (a permanent refusal).
    provider.fail_next({"twilio": 63005, "cloud": 131009}[provider.name])
    provider.say("gastei 30 no almoço")
    run_jobs(settings)

    [(entry,)] = _live(settings)
    assert provider.choices() is None
    assert provider.bodies() == [f"Anotei R$ 30 em almoço.\n\n1. Desfazer #{entry}"]
    outbound = "select status, provider_message_id is not null from messages"
    first_status = {"twilio": "queued", "cloud": "accepted"}[provider.name]
    assert rows(settings, outbound + " where direction = 'outbound'") == [(first_status, True)]
    provider.say("1")
    run_jobs(settings)
    assert provider.bodies()[-1].startswith("Desfeito"), "the number answers it"


def test_outside_the_window_the_options_go_numbered_inside_the_template(
    settings: Settings, tenant: Tenant, provider: Provider, llm: ScriptedModel
) -> None:
    give_plan(settings, tenant, FEATURES)
    template = provider.add_template("re_engagement", "Sobre a sua mensagem: {{1}}", {"1": "text"})
    _record(llm, "30", "almoço")
    assert provider.say("gastei 30 no almoço") == 200
    outbound_id, cid = _answer_without_sending(settings, tenant)
    _close_window(settings)

    assert send_whatsapp_message(str(tenant.id), outbound_id, cid) == "sent"

    [(entry,)] = _live(settings)
    assert provider.sent_templates() == [template]
    assert provider.choices() is None
    # A template's variable is one line: the options follow the reply, numbered.
    assert provider.bodies() == [
        f"Sobre a sua mensagem: Anotei R$ 30 em almoço. 1. Desfazer #{entry}"
    ]
