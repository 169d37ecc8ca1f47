"""The offline model drives the router, memory extraction and every specialist through ChatOpenAI.

Requests are made exactly as the graph makes them: the real prompts, the router's
`decision_schema`, the extraction job's `MemoryFacts` and the real tool schemas bound with
`bind_tools`. Tool calls are checked against each tool's own argument model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import BaseTool
from langchain_openai import ChatOpenAI

from graphs import prompts
from graphs.features import FEATURES
from graphs.language import Language, detect_language
from graphs.offline.lexicon import fold
from graphs.offline.llm_server import ChatCompletionsServer
from graphs.offline.model import OfflineResponder
from graphs.offline.money import plain_amount
from graphs.offline.nlu import choose_route, extract_facts
from graphs.offline.tool_calls import choose_tool_call
from nodes.router import RouteDecision, decision_schema
from server.jobs.memories import EXTRACTION_PROMPT, MemoryFacts
from tools.finance import FINANCE_TOOLS
from tools.handoff import request_human
from tools.memory import MEMORY_TOOLS
from tools.relationships import RELATIONSHIP_TOOLS

ALL_ROUTES = ["general", "finance", "relationships", "handoff"]
LOCAL_TIME = "2026-11-25T11:30-03:00"
SPECIALIST_PROMPTS = {
    "finance": prompts.FINANCE_PROMPT,
    "relationships": prompts.RELATIONSHIPS_PROMPT,
    "general": prompts.SYSTEM_PROMPT,
}
SPECIALIST_TOOLS: dict[str, list[BaseTool]] = {
    "finance": [*FINANCE_TOOLS, request_human],
    "relationships": [*RELATIONSHIP_TOOLS, request_human],
    "general": [*MEMORY_TOOLS, request_human],
}
TOOLS_BY_NAME = {t.name: t for tools in SPECIALIST_TOOLS.values() for t in tools}


@pytest.fixture(scope="module")
def offline() -> Iterator[ChatCompletionsServer]:
    with ChatCompletionsServer(OfflineResponder()) as server:
        yield server


@pytest.fixture(scope="module")
def llm(offline: ChatCompletionsServer) -> ChatOpenAI:
    return ChatOpenAI(base_url=offline.base_url, api_key="offline", model="offline", max_retries=0)  # type: ignore[arg-type]


def system(specialist: str, language: Language, features: list[str] | None = None) -> SystemMessage:
    """The specialist's real system prompt, filled as the graph fills it."""
    features = list(FEATURES) if features is None else features
    return SystemMessage(
        prompts.render(
            SPECIALIST_PROMPTS[specialist],
            tenant_name="Acme",
            user_name="Maria",
            language_name=prompts.LANGUAGE_NAMES[language],
            local_time=LOCAL_TIME,
            timezone="America/Sao_Paulo",
            persona="",
            memories="",
            capabilities=prompts.capabilities(features, language),
        )
    )


def route_of(llm: ChatOpenAI, text: str, routes: list[str], method: str = "json_schema") -> Any:
    router_prompt = prompts.render(
        prompts.ROUTER_PROMPT,
        choices=prompts.route_choices(routes),
        active="none",
    )
    router = llm.with_structured_output(decision_schema(routes), method=method)  # type: ignore[arg-type]
    return router.invoke([SystemMessage(router_prompt), HumanMessage(text)])


# --------------------------------------------------------------------------- #
# Router
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Gastei 45,90 no mercado ontem", "finance"),
        ("Recebi meu salário", "finance"),
        ("Quanto gastei este mês?", "finance"),
        ("Paguei 50 reais de luz", "finance"),
        ("I spent $20 on lunch", "finance"),
        ("What's my balance?", "finance"),
        ("Coffee this morning was 4.50", "finance"),
        ("O aniversário da minha mãe é 12 de março", "relationships"),
        ("Me lembra de pagar o aluguel amanhã às 9h", "relationships"),
        ("Quais são as próximas datas?", "relationships"),
        ("My mom's birthday is March 12", "relationships"),
        ("Remind me to call John in 5 minutes", "relationships"),
        ("Tenho que pagar a conta de luz amanhã às 9h", "relationships"),
        ("I have to call the dentist on Friday at 3pm", "relationships"),
        ("Preciso economizar", "general"),
        ("Quero falar com um atendente", "handoff"),
        ("Can I talk to a person, please?", "handoff"),
        ("Oi, tudo bem?", "general"),
        ("O que você pode fazer?", "general"),
        ("Lembre que eu sou vegetariano", "general"),
        ("Hello! What can you do?", "general"),
        ("Remember that I'm allergic to peanuts", "general"),
    ],
)
def test_router_picks_the_route(llm: ChatOpenAI, text: str, expected: str) -> None:
    decision = route_of(llm, text, ALL_ROUTES)

    assert isinstance(decision, RouteDecision)
    assert decision.route == expected
    assert decision.reason


@pytest.mark.parametrize(
    ("text", "routes"),
    [
        ("Gastei 50 reais no mercado", ["general", "relationships", "handoff"]),
        ("I spent 30 dollars on pizza", ["general"]),
        ("O aniversário da minha mãe é 12 de março", ["general", "finance"]),
        ("Quero falar com um atendente", ["general", "finance", "relationships"]),
    ],
)
def test_router_falls_back_to_general_when_the_route_is_not_allowed(
    llm: ChatOpenAI, text: str, routes: list[str]
) -> None:
    decision = route_of(llm, text, routes)

    assert decision.route == "general"
    assert "not available" in decision.reason


def test_router_answers_the_function_calling_method_too(llm: ChatOpenAI) -> None:
    decision = route_of(llm, "Paguei 35 no Uber", ALL_ROUTES, method="function_calling")

    assert decision.route == "finance"


def test_router_schema_without_enum_chooses_among_all_routes() -> None:
    request = {
        "messages": [{"role": "user", "content": "quero falar com um atendente"}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "RouteDecision",
                "schema": {"type": "object", "properties": {"route": {"type": "string"}}},
            },
        },
    }

    answer = json.loads(OfflineResponder()(request)["content"])

    assert answer["route"] == "handoff"


def test_router_enum_behind_a_ref_is_respected() -> None:
    request = {
        "messages": [{"role": "user", "content": "gastei 10 reais"}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "RouteDecision",
                "schema": {
                    "type": "object",
                    "properties": {"route": {"anyOf": [{"$ref": "#/$defs/R"}, {"type": "null"}]}},
                    "$defs": {"R": {"enum": ["general", "relationships"]}},
                },
            },
        },
    }

    assert json.loads(OfflineResponder()(request)["content"])["route"] == "general"


# --------------------------------------------------------------------------- #
# Memory extraction
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("text", "facts"),
    [
        ("Meu cachorro se chama Rex e eu gosto de café.",
         ["Meu cachorro se chama Rex", "Eu gosto de café"]),
        ("Minha cor favorita é azul", ["Minha cor favorita é azul"]),
        ("Sou alérgica a amendoim", ["Sou alérgica a amendoim"]),
        ("Lembre que eu moro em Recife", ["Eu moro em Recife"]),
        ("I'm allergic to peanuts and I live in Lisbon",
         ["I'm allergic to peanuts", "I live in Lisbon"]),
        ("My dog's name is Rex. I like jazz!", ["My dog's name is Rex", "I like jazz"]),
        ("Oi, tudo bem?", []),
        ("Qual é o meu saldo?", []),
        ("Are you a robot?", []),
    ],
)  # fmt: skip
def test_extraction_returns_first_person_facts(
    llm: ChatOpenAI, text: str, facts: list[str]
) -> None:
    extractor = llm.with_structured_output(MemoryFacts, method="json_schema")

    answer = extractor.invoke([SystemMessage(EXTRACTION_PROMPT), HumanMessage(text)])

    assert isinstance(answer, MemoryFacts)
    assert answer.facts == facts


def test_extraction_skips_assistant_lines_of_a_transcript() -> None:
    transcript = "User: meu nome é Ana\nAssistant: meu nome é Conversa\nuser: eu gosto de chá"

    assert extract_facts(transcript) == ["Meu nome é Ana", "Eu gosto de chá"]


# --------------------------------------------------------------------------- #
# Specialists: tool calls
# --------------------------------------------------------------------------- #

TOOL_CASES: list[tuple[str, str, str, str, dict[str, Any]]] = [
    # finance, Portuguese
    ("finance", "pt", "Gastei 45,90 no mercado ontem", "record_transaction",
     {"kind": "expense", "amount": "45.90", "currency": "BRL", "category": "groceries",
      "description": "mercado", "date": "ontem"}),
    ("finance", "pt", "Paguei 35 no Uber na sexta passada", "record_transaction",
     {"amount": "35", "category": "transport", "date": "sexta passada"}),
    ("finance", "pt", "Almoço de R$ 1.234,56 no restaurante", "record_transaction",
     {"amount": "1234.56", "category": "food"}),
    ("finance", "pt", "Recebi meu salário de 5.000 reais", "record_transaction",
     {"kind": "income", "amount": "5000", "category": "salary"}),
    ("finance", "pt", "Paguei 1.800 de aluguel", "record_transaction", {"category": "housing"}),
    ("finance", "pt", "Comprei remédio na farmácia por 27,30", "record_transaction",
     {"category": "health", "amount": "27.30"}),
    ("finance", "pt", "Gastei 20 reais com presente", "record_transaction",
     {"category": "shopping", "description": "presente"}),
    ("finance", "pt", "Gastei 20 reais com coisas da loja", "record_transaction",
     {"category": "other", "description": "coisas loja"}),
    # amounts said in words, as a voice note's transcript has them
    ("finance", "pt", "[voice note] Gastei cinquenta reais no mercado.", "record_transaction",
     {"kind": "expense", "amount": "50", "category": "groceries"}),
    ("finance", "pt", "Paguei duzentos e trinta e cinco reais de luz", "record_transaction",
     {"amount": "235", "category": "bills"}),
    ("finance", "pt", "Quanto gastei este mês?", "get_balance", {"period": "this_month"}),
    ("finance", "pt", "Qual meu saldo do mês passado?", "get_balance", {"period": "last_month"}),
    ("finance", "pt", "Quanto gastei hoje?", "get_balance", {"period": "today"}),
    ("finance", "pt", "Quanto gastei nesta semana?", "get_balance", {"period": "this_week"}),
    ("finance", "pt", "Quanto gastei em outubro?", "get_balance", {"period": "2026-10"}),
    ("finance", "pt", "Gastos por categoria este mês", "spending_by_category",
     {"period": "this_month"}),
    ("finance", "pt", "Mostra meus últimos 5 gastos", "list_transactions", {"limit": 5}),
    ("finance", "pt", "Apaga o lançamento 12", "delete_transaction", {"transaction_id": 12}),
    ("finance", "pt", "Apaga aquele gasto errado", "offer_entries_to_delete", {}),
    ("finance", "pt", "Quero falar com um atendente", "request_human", {}),
    ("relationships", "pt", "Tenho que pagar a conta de luz amanhã às 9h", "propose_reminder",
     {"text": "pagar a conta de luz", "when": "amanhã às 9h"}),
    # finance, English
    ("finance", "en", "I spent $20 on lunch yesterday", "record_transaction",
     {"kind": "expense", "amount": "20", "currency": "USD", "category": "food",
      "date": "yesterday"}),
    ("finance", "en", "Received 3,000.50 salary", "record_transaction",
     {"kind": "income", "amount": "3000.50"}),
    ("finance", "en", "Paid 12.50 for an Uber last friday", "record_transaction",
     {"category": "transport", "date": "last friday"}),
    ("finance", "en", "I spent one hundred and twenty dollars on dinner", "record_transaction",
     {"amount": "120", "currency": "USD", "category": "food"}),
    ("finance", "en", "How much did I spend this month?", "get_balance", {"period": "this_month"}),
    ("finance", "en", "What is my balance for last month?", "get_balance",
     {"period": "last_month"}),
    ("finance", "en", "Show my spending by category", "spending_by_category", {}),
    ("finance", "en", "List my last 3 transactions", "list_transactions", {"limit": 3}),
    ("finance", "en", "Delete transaction #7", "delete_transaction", {"transaction_id": 7}),
    # relationships, Portuguese
    ("relationships", "pt", "O aniversário da minha mãe é 12 de março", "add_important_date",
     {"person_name": "mãe", "kind": "birthday", "date": "12 de março"}),
    ("relationships", "pt", "Aniversário do João: 12/03", "add_important_date",
     {"person_name": "João", "kind": "birthday", "date": "12/03"}),
    ("relationships", "pt", "Meu aniversário de casamento com a Carla é 20 de junho",
     "add_important_date", {"person_name": "Carla", "kind": "anniversary"}),
    ("relationships", "pt", "Quais são os próximos aniversários?", "upcoming_dates", {"days": 30}),
    ("relationships", "pt", "Datas importantes nos próximos 7 dias", "upcoming_dates",
     {"days": 7}),
    ("relationships", "pt", "Me lembra em 2 minutos de tomar água", "schedule_reminder",
     {"text": "tomar água", "when": "em 2 minutos"}),
    ("relationships", "pt", "Me lembra de ligar pro dentista amanhã às 9h", "schedule_reminder",
     {"text": "ligar pro dentista", "when": "amanhã às 9h"}),
    ("relationships", "pt", "Quais são os meus lembretes?", "list_reminders", {}),
    ("relationships", "pt", "Cancela o lembrete 3", "cancel_reminder", {"reminder_id": 3}),
    ("relationships", "pt", "Minha irmã se chama Ana", "remember_person",
     {"name": "Ana", "relation": "irmã"}),
    # relationships, English
    ("relationships", "en", "My mom's birthday is March 12", "add_important_date",
     {"person_name": "mom", "kind": "birthday", "date": "March 12"}),
    ("relationships", "en", "Any upcoming birthdays this week?", "upcoming_dates", {"days": 7}),
    ("relationships", "en", "Remind me to call John in 5 minutes", "schedule_reminder",
     {"text": "call John", "when": "in 5 minutes"}),
    ("relationships", "en", "Remind me to buy flowers tomorrow at 9am", "schedule_reminder",
     {"text": "buy flowers", "when": "tomorrow at 9am"}),
    ("relationships", "en", "Show my reminders", "list_reminders", {}),
    ("relationships", "en", "Cancel reminder #4", "cancel_reminder", {"reminder_id": 4}),
    ("relationships", "en", "Ana is my sister", "remember_person",
     {"name": "Ana", "relation": "sister"}),
    # general
    ("general", "pt", "Lembre que eu sou vegetariano", "save_memory",
     {"text": "Eu sou vegetariano"}),
    ("general", "pt", "O que você sabe sobre mim?", "search_memories", {}),
    ("general", "pt", "Você lembra do nome do meu cachorro?", "search_memories", {}),
    ("general", "en", "Remember that I'm allergic to peanuts", "save_memory",
     {"text": "I'm allergic to peanuts"}),
    ("general", "en", "What do you know about my family?", "search_memories",
     {"query": "my family"}),
]  # fmt: skip


@pytest.mark.parametrize(("specialist", "language", "text", "name", "args"), TOOL_CASES)
def test_specialist_calls_the_fitting_tool(
    llm: ChatOpenAI, specialist: str, language: Language, text: str, name: str, args: dict[str, Any]
) -> None:
    bound = llm.bind_tools(SPECIALIST_TOOLS[specialist])

    answer = bound.invoke([system(specialist, language), HumanMessage(text)])

    assert isinstance(answer, AIMessage)
    [call] = answer.tool_calls
    assert call["name"] == name
    assert {k: call["args"].get(k) for k in args} == args
    # The arguments satisfy the real tool's schema (strict: extra arguments are refused).
    TOOLS_BY_NAME[name].tool_call_schema.model_validate(call["args"])  # type: ignore[union-attr]


def test_specialist_answers_in_text_when_no_tool_fits(llm: ChatOpenAI) -> None:
    bound = llm.bind_tools(SPECIALIST_TOOLS["finance"])

    answer = bound.invoke([system("finance", "pt"), HumanMessage("Oi, tudo bem?")])

    assert answer.tool_calls == []
    text = str(answer.content)
    assert "modelo offline" in text
    assert "gastei 45,90 no mercado ontem" in text


def test_tools_outside_the_list_are_never_called(llm: ChatOpenAI) -> None:
    without_reminders = [t for t in RELATIONSHIP_TOOLS if "reminder" not in t.name]
    bound = llm.bind_tools(without_reminders)

    answer = bound.invoke(
        [system("relationships", "pt"), HumanMessage("Me lembra de beber água em 10 minutos")]
    )

    assert answer.tool_calls == []


def test_a_money_message_to_the_general_assistant_calls_no_memory_tool(llm: ChatOpenAI) -> None:
    bound = llm.bind_tools(SPECIALIST_TOOLS["general"])

    answer = bound.invoke([system("general", "pt"), HumanMessage("Gastei 50 reais no mercado")])

    assert answer.tool_calls == []
    assert "modelo offline" in str(answer.content)


def test_several_user_messages_of_a_turn_are_read_together(llm: ChatOpenAI) -> None:
    bound = llm.bind_tools(SPECIALIST_TOOLS["finance"])

    answer = bound.invoke(
        [system("finance", "pt"), HumanMessage("Gastei 30 reais"), HumanMessage("no mercado")]
    )

    [call] = answer.tool_calls
    assert call["args"]["category"] == "groceries"


# --------------------------------------------------------------------------- #
# Specialists: tool results
# --------------------------------------------------------------------------- #


def after_tool(
    llm: ChatOpenAI,
    specialist: str,
    language: Language,
    text: str,
    name: str,
    args: dict[str, Any],
    result: str,
) -> str:
    """Ask the model again once `name(args)` answered `result`, as the graph does."""
    call = {"name": name, "args": args, "id": "call_1", "type": "tool_call"}
    messages: list[BaseMessage] = [
        system(specialist, language),
        HumanMessage(text),
        AIMessage("", tool_calls=[call]),
        ToolMessage(result, tool_call_id="call_1", name=name),
    ]
    answer = llm.bind_tools(SPECIALIST_TOOLS[specialist]).invoke(messages)
    assert answer.tool_calls == []
    return str(answer.content)


RECORD_ARGS = {
    "kind": "expense",
    "amount": "45.90",
    "currency": "BRL",
    "category": "groceries",
    "description": "mercado",
    "date": "ontem",
}


def test_recorded_expense_is_confirmed_in_portuguese(llm: ChatOpenAI) -> None:
    result = "Recorded expense #12: 45.90 BRL, groceries, on 2026-11-24 (mercado)."

    text = after_tool(llm, "finance", "pt", "Gastei 45,90 no mercado ontem", "record_transaction",
                      RECORD_ARGS, result)  # fmt: skip

    assert text == "Anotei: despesa de R$ 45,90 em mercado (ontem), lançamento #12."


def test_recorded_expense_is_confirmed_in_english(llm: ChatOpenAI) -> None:
    args = RECORD_ARGS | {"description": "lunch", "currency": "USD", "date": "yesterday"}

    result = "Recorded expense #3: 45.90 USD, food."

    text = after_tool(
        llm, "finance", "en", "I spent $45.90 on lunch", "record_transaction", args, result
    )

    assert text == "Recorded: expense of $45.90 for lunch (yesterday), entry #3."


def test_balance_is_read_out(llm: ChatOpenAI) -> None:
    result = json.dumps(
        {
            "period": "this_month",
            "from": "2026-11-01",
            "to": "2026-11-30",
            "totals": [
                {
                    "currency": "BRL",
                    "income": "5000.00",
                    "expenses": "1234.50",
                    "balance": "3765.50",
                }
            ],
        }
    )

    pt = after_tool(llm, "finance", "pt", "Qual meu saldo?", "get_balance", {}, result)
    en = after_tool(llm, "finance", "en", "What's my balance?", "get_balance", {}, result)

    assert pt == (
        "Seu resumo de este mês (01/11/2026 a 30/11/2026): receitas R$ 5.000,00, "
        "despesas R$ 1.234,50, saldo R$ 3.765,50."
    )
    assert en == (
        "Your summary for this month (2026-11-01 to 2026-11-30): income R$ 5,000.00, "
        "expenses R$ 1,234.50, balance R$ 3,765.50."
    )


def test_empty_balance_says_so(llm: ChatOpenAI) -> None:
    result = json.dumps({"period": "last_month", "totals": []})

    text = after_tool(llm, "finance", "pt", "Saldo?", "get_balance", {}, result)

    assert text == "Não encontrei lançamentos em mês passado."


def test_categories_and_transactions_are_listed(llm: ChatOpenAI) -> None:
    categories = json.dumps(
        {"period": "this_month", "categories": [
            {"category": "groceries", "currency": "BRL", "total": "300.00", "entries": 3},
            {"category": "food", "currency": "BRL", "total": "80.50", "entries": 2}]}
    )  # fmt: skip
    transactions = json.dumps(
        {"transactions": [{"id": 12, "kind": "expense", "amount": "45.90", "currency": "BRL",
                           "category": "groceries", "description": "mercado",
                           "date": "2026-11-24"}]}
    )  # fmt: skip

    by_category = after_tool(
        llm, "finance", "pt", "Gastos por categoria", "spending_by_category", {}, categories
    )
    listed = after_tool(
        llm, "finance", "en", "List my transactions", "list_transactions", {}, transactions
    )

    assert (
        by_category == "Seus gastos por categoria em este mês: groceries R$ 300,00; food R$ 80,50."
    )
    assert listed == "Your latest entries:\n#12 2026-11-24 expense R$ 45.90 mercado"


def test_relationship_results_are_confirmed(llm: ChatOpenAI) -> None:
    date_args = {"person_name": "mãe", "kind": "birthday", "date": "12 de março"}
    reminder_args = {"text": "tomar água", "when": "em 2 minutos"}
    upcoming = json.dumps(
        {"today": "2026-11-25", "until": "2026-12-25", "dates": [
            {"date": "2026-12-03", "in_days": 8, "weekday": "Thursday", "person": "Ana",
             "relation": "irmã", "kind": "birthday", "label": "", "years": 30}]}
    )  # fmt: skip
    reminders = json.dumps(
        {"timezone": "America/Sao_Paulo",
         "reminders": [{"id": 5, "text": "tomar água", "due": "2026-11-25 11:32"}]}
    )  # fmt: skip

    saved = after_tool(llm, "relationships", "pt", "...", "add_important_date", date_args,
                       "Saved mãe's birthday on 12 March (yearly), date #3.")  # fmt: skip
    due = "Scheduled reminder #5 for 2026-11-25 11:32 (America/Sao_Paulo)."
    scheduled = after_tool(
        llm, "relationships", "pt", "...", "schedule_reminder", reminder_args, due
    )
    soon = after_tool(llm, "relationships", "en", "...", "upcoming_dates", {"days": 30}, upcoming)
    listed = after_tool(llm, "relationships", "pt", "...", "list_reminders", {}, reminders)

    assert saved.startswith("Anotei: aniversário de mãe em 12 de março.")
    assert scheduled == (
        "Combinado! Vou te lembrar de tomar água (em 2 minutos: 25/11/2026 11:32), lembrete #5."
    )
    assert soon == "Upcoming dates:\n• 2026-12-03: Ana's birthday (in 8 days), 30 years"
    assert listed == "Seus lembretes:\n• #5 25/11/2026 11:32: tomar água"


def test_memory_results_are_read_out(llm: ChatOpenAI) -> None:
    found = json.dumps([{"memory": "Sou vegetariano", "score": 0.9}])

    saved = after_tool(llm, "general", "pt", "...", "save_memory", {"text": "Sou vegetariano"},
                       "Remembered: Sou vegetariano")  # fmt: skip
    recalled = after_tool(llm, "general", "en", "...", "search_memories", {"query": "me"}, found)
    nothing = after_tool(llm, "general", "pt", "...", "search_memories", {"query": "x"}, "[]")

    assert saved == "Pode deixar, vou lembrar: Sou vegetariano"
    assert recalled == "Here is what I remember: Sou vegetariano."
    assert nothing == "Ainda não sei nada sobre isso."


@pytest.mark.parametrize(("language", "opening"), [("pt", "Desculpe"), ("en", "Sorry")])
def test_tool_errors_are_reported_politely(
    llm: ChatOpenAI, language: Language, opening: str
) -> None:
    error = "Error: ToolError(\"The amount '0' is zero; amounts must be more than zero.\")\n Please fix your mistakes."  # noqa: E501

    text = after_tool(
        llm, "finance", language, "gastei 0", "record_transaction", RECORD_ARGS, error
    )

    assert text.startswith(opening)
    assert "The amount '0' is zero; amounts must be more than zero" in text
    assert "Please fix your mistakes" not in text


def test_unknown_tool_result_is_shown_as_is() -> None:
    request = {
        "messages": [
            {"role": "system", "content": "Answer in English."},
            {"role": "user", "content": "do it"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function",
                 "function": {"name": "mystery", "arguments": "{not json"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "{\"done\": true, \"id\": 4}"},
        ]
    }  # fmt: skip

    answer = OfflineResponder()(request)

    assert answer == {"content": "Done: done: True; id: 4"}


def test_results_of_several_calls_are_all_confirmed() -> None:
    calls = [
        {"id": f"c{i}", "type": "function",
         "function": {"name": "delete_transaction", "arguments": json.dumps({"transaction_id": i})}}
        for i in (1, 2)
    ]  # fmt: skip
    request = {
        "messages": [
            {"role": "system", "content": "Answer in Brazilian Portuguese."},
            {"role": "user", "content": "apaga o 1 e o 2"},
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "c1", "content": "Deleted expense #1."},
            {"role": "tool", "tool_call_id": "c2", "content": "Deleted expense #2."},
        ]
    }

    answer = OfflineResponder()(request)

    assert answer["content"] == (
        "Pronto, apaguei o lançamento #1. Pronto, apaguei o lançamento #2."
    )


# --------------------------------------------------------------------------- #
# The general assistant without tools (the original behaviour)
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("language", ["pt", "en"])
def test_general_assistant_says_it_is_offline_and_lists_the_plan(
    llm: ChatOpenAI, language: Language
) -> None:
    message = {"pt": "Oi, tudo bem?", "en": "Hi, how are you?"}[language]

    answer = llm.invoke(
        [system("general", language, ["finance", "reminders"]), HumanMessage(message)]
    )

    text = str(answer.content)
    assert detect_language(text) == language
    if language == "pt":
        assert "Sou um modelo offline" in text
        assert (
            "Com um modelo real eu poderia: controlar seus gastos e receitas; mandar lembretes."
            in text
        )
    else:
        assert "I'm an offline model" in text
        assert (
            "With a real model I could: track your spending and income; send you reminders." in text
        )
    assert f'"{message}"' in text
    assert "OPENAI_API_KEY" in text


def test_the_system_prompt_language_wins_over_the_message(llm: ChatOpenAI) -> None:
    answer = llm.invoke([system("general", "en"), HumanMessage("ok")])

    assert "I'm an offline model" in str(answer.content)


def test_other_structured_output_still_gets_a_schema_instance() -> None:
    request = {
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "Other",
                "schema": {"type": "object", "properties": {"n": {"type": "integer"}},
                           "required": ["n"]},
            },
        },
    }  # fmt: skip

    assert json.loads(OfflineResponder()(request)["content"]) == {"n": 0}


# --------------------------------------------------------------------------- #
# Rules
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("written", "decimal"),
    [("45,90", "45.90"), ("45.90", "45.90"), ("1.234,56", "1234.56"), ("1,234.56", "1234.56"),
     ("1.500", "1500"), ("1,5", "1.50"), ("50", "50"), ("100,00", "100"), ("0", None),
     ("1,234,56", None)],
)  # fmt: skip
def test_amounts_become_plain_decimals(written: str, decimal: str | None) -> None:
    assert plain_amount(written) == decimal


def test_folding_keeps_positions() -> None:
    text = "Amanhã às 9h, ÇÃO’s"

    assert fold(text) == "amanha as 9h, cao's"
    assert len(fold(text)) == len(text)


def test_rules_ignore_tools_that_are_not_offered() -> None:
    assert choose_tool_call("Gastei 10 reais", {"get_balance"}) is None
    assert choose_tool_call("", {"record_transaction"}) is None
    assert choose_route("", ALL_ROUTES).route == "general"
    assert choose_route("Gastei 10 reais", []).route == "general"


def test_amounts_are_not_taken_from_dates_or_times() -> None:
    guess = choose_tool_call("Gastei 30 no mercado dia 12/03", {"record_transaction"})

    assert guess is not None
    assert guess.args["amount"] == "30"
    assert guess.args["date"] == "12/03"
    assert choose_tool_call("Gastei no dia 12/03", {"record_transaction"}) is None


def test_the_offline_models_categories_and_amounts_are_what_the_tools_accept() -> None:
    from store import categories
    from tools.amounts import parse_amount

    for word, name in categories.words().items():
        if name == "other" or word.isdigit():
            continue
        guess = choose_tool_call(f"Gastei 12 reais de {word}", {"record_transaction"})
        assert guess is not None and guess.args["category"] == name, word
    for text in ("Paguei o aluguel: 1.800 reais", "Recebi meu salário de 5.000 reais hoje"):
        guess = choose_tool_call(text, {"record_transaction"})
        assert guess is not None
        assert parse_amount(guess.args["amount"]) in (1800, 5000)


@pytest.mark.parametrize(
    ("text", "category"),
    [("Paguei 120 de gás", "bills"), ("Paguei a conta de luz, 80 reais", "bills"),
     ("Coloquei 100 reais de gasolina", "transport"), ("Gastei 99 reais no mercado", "groceries"),
     ("Paguei 20 no 99 na sexta-feira", "transport"), ("Gastei 30 reais na sexta-feira", "other")],
)  # fmt: skip
def test_the_offline_model_names_categories_as_the_tools_do(text: str, category: str) -> None:
    guess = choose_tool_call(text, {"record_transaction"})

    assert guess is not None and guess.args["category"] == category
