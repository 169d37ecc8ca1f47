"""Questions with options in the graph: the undo button after an expense, the list of entries
to delete, yes/no before a reminder; a press (or its number typed back) answered without the
model; a press of a question that no longer stands changing nothing.

The graph runs on an in-memory saver with the scripted model; the tools and the press's
actions write to the test database. The same flows through both providers' webhooks and
sandboxes are in tests/test_choices_e2e.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from channels.choices import Choices, Option, interactive, make_choices
from graphs.assistant import build_graph
from graphs.context import Context
from nodes.choices import NO_LONGER, OPEN_QUESTIONS, _schedule
from server.settings import Settings
from store.records import Tenant
from tests.conftest import rows
from tests.fakes import ScriptedModel
from tests.toolcontext import context_for, make_user
from tools._runtime import scope_of

FEATURES = ["finance", "relationships", "reminders"]


class Thread:
    """One user's thread on an in-memory saver, with tools on the test database."""

    def __init__(self, context: Context) -> None:
        self.graph = build_graph().compile(checkpointer=InMemorySaver())
        self.config: Any = {"configurable": {"thread_id": "t"}}
        self.context = context
        self.sent = 0

    def say(self, text: str, choice: str | None = None) -> dict[str, Any]:
        self.sent += 1
        extra = {"choice": choice} if choice else {}
        message = HumanMessage(text, id=f"wa-{self.sent}", additional_kwargs=extra)
        return self.graph.invoke({"messages": [message]}, self.config, context=self.context)

    @property
    def values(self) -> dict[str, Any]:
        return self.graph.get_state(self.config).values


@pytest.fixture
def thread(settings: Settings, tenant: Tenant, scripted: ScriptedModel) -> Thread:
    return Thread(context_for(tenant, make_user(settings, tenant), features=FEATURES))


def _route(route: str) -> dict[str, str]:
    return {"route": route, "reason": "test"}


def _record(scripted: ScriptedModel, amount: str = "30", what: str = "almoço") -> None:
    scripted.structured(_route("finance")).call_tool(
        "record_transaction",
        {"kind": "expense", "amount": amount, "category": "alimentação", "description": what},
    ).say(f"Anotei R$ {amount} em {what}.")


def _live(settings: Settings) -> list[tuple[Any, ...]]:
    return rows(settings, "select id, amount from finance_entries where deleted_at is null "
                "order by id")  # fmt: skip


def test_an_expense_offers_an_undo_button_that_undoes_it_without_the_model(
    settings: Settings, thread: Thread, scripted: ScriptedModel
) -> None:
    _record(scripted)
    first = thread.say("gastei 30 reais no almoço")

    [(entry_id, _)] = _live(settings)
    assert first["reply"] == "Anotei R$ 30 em almoço."
    [undo] = first["choices"]["options"]
    assert first["choices"]["button"] == ""
    assert undo["title"] == f"Desfazer #{entry_id}"
    assert undo["id"].startswith("cv:")
    shown = [m for m in thread.values["messages"] if isinstance(m, AIMessage)][-1]
    assert shown.text.endswith(f"1. Desfazer #{entry_id}"), "the thread shows what the user saw"

    asked = len(scripted.requests)
    pressed = thread.say(undo["title"], choice=undo["id"])

    assert len(scripted.requests) == asked, "a press is answered without the model"
    assert pressed["reply"].startswith(f"Desfeito: apaguei o lançamento #{entry_id}")
    assert "R$ 30,00" in pressed["reply"]
    assert pressed["choices"] is None
    assert _live(settings) == []
    assert thread.values["questions"] == [], "the question is answered"

    again = thread.say(undo["title"], choice=undo["id"])
    assert again["reply"] == NO_LONGER["pt"]
    assert len(scripted.requests) == asked


def test_two_expenses_in_one_turn_offer_two_undo_buttons(
    settings: Settings, thread: Thread, scripted: ScriptedModel
) -> None:
    scripted.structured(_route("finance")).call_tools([
        ("record_transaction", {"kind": "expense", "amount": "10", "category": "transporte"}),
        ("record_transaction", {"kind": "expense", "amount": "20", "category": "mercado"}),
    ]).say("Anotei os dois.")  # fmt: skip

    result = thread.say("gastei 10 de uber e 20 no mercado")

    by_amount = {int(amount): entry_id for entry_id, amount in _live(settings)}
    titles = [o["title"] for o in result["choices"]["options"]]
    assert titles == [f"Desfazer #{by_amount[10]}", f"Desfazer #{by_amount[20]}"], "call order"
    second = result["choices"]["options"][1]
    thread.say(second["title"], choice=second["id"])
    assert [entry_id for entry_id, _ in _live(settings)] == [by_amount[10]], "only the pressed"


def test_typing_the_options_number_or_title_answers_the_question(
    settings: Settings, thread: Thread, scripted: ScriptedModel
) -> None:
    _record(scripted)
    thread.say("gastei 30 reais no almoço")
    asked = len(scripted.requests)

    answer = thread.say("1")

    assert len(scripted.requests) == asked
    assert answer["reply"].startswith("Desfeito")
    assert _live(settings) == []


def test_a_number_goes_to_the_model_when_the_last_answer_asked_nothing(
    settings: Settings, thread: Thread, scripted: ScriptedModel
) -> None:
    _record(scripted)
    thread.say("gastei 30 reais no almoço")
    scripted.structured(_route("general")).say("Oi!")
    thread.say("oi")  # the last answer asks nothing now
    scripted.structured(_route("general")).say("Um o quê?")

    answer = thread.say("1")

    assert answer["reply"] == "Um o quê?"
    assert len(_live(settings)) == 1, "the old undo is not run by a bare number"


def test_the_list_of_entries_deletes_the_one_picked(
    settings: Settings, thread: Thread, scripted: ScriptedModel
) -> None:
    _record(scripted, "30", "almoço")
    thread.say("gastei 30 no almoço")
    _record(scripted, "12,50", "café")
    thread.say("gastei 12,50 no café")
    scripted.structured(_route("finance")).call_tool("offer_entries_to_delete", {}).say(
        "Qual lançamento você quer apagar?"
    )

    listed = thread.say("quero apagar um lançamento")

    choices = listed["choices"]
    assert choices["button"] == "Escolher"
    newest, oldest = [entry_id for entry_id, _ in reversed(_live(settings))]
    assert [o["title"] for o in choices["options"]] == [
        f"#{newest} R$ 12,50", f"#{oldest} R$ 30,00",
    ]  # fmt: skip
    assert "café" in choices["options"][0]["description"]
    asked = len(scripted.requests)

    picked = thread.say(choices["options"][1]["title"], choice=choices["options"][1]["id"])

    assert picked["reply"].startswith(f"Apaguei o lançamento #{oldest}")
    assert [entry_id for entry_id, _ in _live(settings)] == [newest]
    late = thread.say(choices["options"][0]["title"], choice=choices["options"][0]["id"])
    assert late["reply"] == NO_LONGER["pt"], "the list was answered"
    assert [entry_id for entry_id, _ in _live(settings)] == [newest]
    assert len(scripted.requests) == asked


def test_yes_before_a_reminder_schedules_it_and_no_does_not(
    settings: Settings, thread: Thread, scripted: ScriptedModel
) -> None:
    scripted.structured(_route("relationships")).call_tool(
        "propose_reminder", {"text": "pagar a conta de luz", "when": "amanhã às 9h"}
    ).say("Quer que eu te lembre amanhã às 9h de pagar a conta de luz?")

    asked = thread.say("tenho que pagar a conta de luz amanhã")

    yes, no = asked["choices"]["options"]
    assert (yes["title"], no["title"]) == ("Sim", "Não")
    assert rows(settings, "select count(*) from reminders") == [(0,)], "nothing before the yes"
    done = thread.say("Sim", choice=yes["id"])
    assert done["reply"].startswith("Combinado: lembrete #")
    assert rows(settings, "select text, status from reminders") == [
        ("pagar a conta de luz", "scheduled")
    ]
    assert thread.say("Não", choice=no["id"])["reply"] == NO_LONGER["pt"], "answered already"

    scripted.structured(_route("relationships")).call_tool(
        "propose_reminder", {"text": "ligar para a Ana", "when": "amanhã às 10h"}
    ).say("Quer um lembrete?")
    second = thread.say("preciso ligar pra Ana amanhã")
    declined = thread.say("Não", choice=second["choices"]["options"][1]["id"])
    assert declined["reply"] == "Tudo bem, não agendei o lembrete."
    assert rows(settings, "select count(*) from reminders") == [(1,)]


def test_a_replayed_press_schedules_once(
    settings: Settings, thread: Thread, scripted: ScriptedModel
) -> None:
    scripted.structured(_route("relationships")).call_tool(
        "propose_reminder", {"text": "remédio", "when": "amanhã às 8h"}
    ).say("Lembro você?")
    yes = thread.say("tomar remédio amanhã")["choices"]["options"][0]
    key = "choice:wa-2"

    thread.say("Sim", choice=yes["id"])
    # The same press's action run again (a crashed run resumed) finds its own write.

    again = _schedule("remédio", datetime.now(UTC) + timedelta(days=1), scope_of(thread.context),
                      key, "pt")  # fmt: skip
    assert again.startswith("Combinado")
    assert rows(settings, "select count(*) from reminders") == [(1,)]


def test_forged_and_foreign_presses_change_nothing(
    settings: Settings, thread: Thread, scripted: ScriptedModel
) -> None:
    _record(scripted)
    thread.say("gastei 30 no almoço")
    asked = len(scripted.requests)

    forged = thread.say("Desfazer", choice="cv:deadbeef.1")

    assert forged["reply"] == NO_LONGER["pt"]
    assert len(_live(settings)) == 1
    assert len(scripted.requests) == asked
    # A tenant's own template button (not one of ours) is the user's words for the model.
    scripted.structured(_route("general")).say("Certo!")
    template = thread.say("Confirmar", choice="CONFIRM_APPOINTMENT")
    assert template["reply"] == "Certo!"
    assert len(_live(settings)) == 1


def test_a_template_button_titled_like_a_standing_option_answers_that_option(
    settings: Settings, thread: Thread, scripted: ScriptedModel
) -> None:
    scripted.structured(_route("relationships")).call_tool(
        "propose_reminder", {"text": "dentista", "when": "amanhã às 10h"}
    ).say("Quer um lembrete?")
    thread.say("tenho dentista amanhã às 10h")

    # The tenant's template button "Sim" carries its own payload: its words answer the question.
    answer = thread.say("Sim", choice="TEMPLATE_YES")

    assert answer["reply"].startswith("Combinado: lembrete #")


def test_a_press_after_the_plan_lost_the_feature_does_nothing(
    settings: Settings, tenant: Tenant, scripted: ScriptedModel
) -> None:
    user = make_user(settings, tenant)
    thread = Thread(context_for(tenant, user, features=FEATURES))
    _record(scripted)
    undo = thread.say("gastei 30 no almoço")["choices"]["options"][0]

    thread.context = context_for(tenant, user, features=["relationships"])
    result = thread.say(undo["title"], choice=undo["id"])

    assert result["reply"] == NO_LONGER["pt"]
    assert len(_live(settings)) == 1


def test_only_the_latest_questions_stand(
    settings: Settings, thread: Thread, scripted: ScriptedModel
) -> None:
    offered = []
    for n in range(OPEN_QUESTIONS + 1):
        _record(scripted, str(n + 1))
        offered.append(thread.say(f"gastei {n + 1}")["choices"]["options"][0])

    assert len(thread.values["questions"]) == OPEN_QUESTIONS
    oldest, second = offered[0], offered[1]
    assert thread.say("x", choice=oldest["id"])["reply"] == NO_LONGER["pt"]
    assert thread.say("x", choice=second["id"])["reply"].startswith("Desfeito")
    assert len(_live(settings)) == OPEN_QUESTIONS


def test_an_english_turn_gets_english_buttons(
    settings: Settings, thread: Thread, scripted: ScriptedModel
) -> None:
    scripted.structured(_route("finance")).call_tool(
        "record_transaction", {"kind": "expense", "amount": "8", "category": "food"}
    ).say("Got it.")
    result = thread.say("I spent 8 dollars on lunch today")
    [undo] = result["choices"]["options"]
    assert undo["title"].startswith("Undo #")
    assert thread.say("Undo", choice=undo["id"])["reply"].startswith("Undone: I deleted entry")


# -- the options as the providers take them (channels.choices) ----------------------------------


def test_make_choices_fits_titles_and_the_text_numbers_them() -> None:
    choices = make_choices(
        " Qual? ",
        [Option("a", "Cartão de crédito do banco"), Option("b", "Pix")],
    )
    assert [o.title for o in choices.options] == ["Cartão de crédito d…", "Pix"]
    assert choices.kind == "buttons" and interactive(choices)
    assert choices.as_text() == "Qual?\n\n1. Cartão de crédito d…\n2. Pix"
    assert Choices.from_json(choices.to_json()) == choices
    rows = make_choices("Qual?", [Option("a", "Almoço", "x" * 100)], button="Escolher")
    assert rows.kind == "list" and len(rows.options[0].description) == 72


@pytest.mark.parametrize(
    ("options", "button", "error"),
    [
        ([], "", "at least one"),
        ([Option(str(n), f"t{n}") for n in range(4)], "", "at most 3 buttons"),
        ([Option(str(n), f"t{n}") for n in range(11)], "Ver", "at most 10 rows"),
        ([Option("a", "x"), Option("a", "y")], "", "unique"),
        ([Option("", "x")], "", "unique"),
        ([Option("a" * 201, "x")], "", "unique"),
        ([Option("a", "   ")], "", "title"),
        ([Option("a", "x")], "   ", "button label"),
    ],
)
def test_make_choices_refuses_what_no_provider_sends(
    options: list[Option], button: str, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        make_choices("Qual?", options, button=button)


def test_alike_titles_or_a_long_body_go_out_as_numbered_text() -> None:
    alike = make_choices("Qual?", [Option("a", "Cartão de crédito Nubank"),
                                   Option("b", "Cartão de crédito Nubank PJ")])  # fmt: skip
    assert not interactive(alike), "WhatsApp refuses two buttons titled alike"
    assert not interactive(make_choices("x" * 1025, [Option("a", "Sim")]))
    assert not interactive(None)
