"""The finance tools against real PostgreSQL, through a ToolNode, as the app role under RLS."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from graphs.context import Context
from server.settings import Settings
from store import categories
from store.records import Tenant
from tests.conftest import rows
from tests.toolcontext import context_for, failed, make_tenant, make_user, ok
from tests.tooling import replay_tool, run_tool
from tools._runtime import ToolError
from tools.amounts import parse_amount
from tools.dates import local_now
from tools.finance import (
    FINANCE_TOOLS,
    delete_transaction,
    get_balance,
    list_transactions,
    record_transaction,
    spending_by_category,
)


@pytest.fixture
def ana(settings: Settings, tenant: Tenant) -> Context:
    return context_for(tenant, make_user(settings, tenant))


def _record(context: Context, call_id: str, **args: object) -> str:
    base = {"kind": "expense", "amount": "10", "category": "mercado", "date": "2026-11-02"}
    return ok(run_tool(record_transaction, base | args, context, call_id=call_id))


def _entries(settings: Settings) -> list[tuple[object, ...]]:
    return rows(
        settings,
        "select kind, amount, currency, category, description, occurred_on::text, "
        "deleted_at is not null from finance_entries order by id",
    )


def test_the_tools_and_their_schemas(settings: Settings) -> None:
    names = [t.name for t in FINANCE_TOOLS]
    assert names == [
        "record_transaction",
        "get_balance",
        "spending_by_category",
        "list_transactions",
        "offer_entries_to_delete",
        "delete_transaction",
    ]
    for tool in FINANCE_TOOLS:
        schema = tool.tool_call_schema.model_json_schema()
        assert "runtime" not in schema.get("properties", {}), tool.name
    properties = record_transaction.tool_call_schema.model_json_schema()["properties"]
    assert {t["type"] for t in properties["amount"]["anyOf"]} == {"string", "integer", "number"}
    assert "5.000" in properties["amount"]["description"]
    for name in ("groceries (mercado)", "food (alimentação)", "other (outros)"):
        assert name in properties["category"]["description"]


def test_record_stores_decimal_amounts_in_the_users_scope(settings: Settings, ana: Context) -> None:
    first = _record(ana, "c1", amount="45,90", description=" pão e leite ")
    _record(ana, "c2", kind="income", amount="1.234,56", category="Salário", currency="brl")
    _record(ana, "c3", amount="1,234.50", currency="USD", category="viagem")

    assert first.startswith("Recorded expense #1: 45.90 BRL, mercado, on 2026-11-02")
    assert "(pão e leite)" in first
    assert _entries(settings) == [
        ("expense", Decimal("45.90"), "BRL", "groceries", "pão e leite", "2026-11-02", False),
        ("income", Decimal("1234.56"), "BRL", "salary", "", "2026-11-02", False),
        ("expense", Decimal("1234.50"), "USD", "leisure", "", "2026-11-02", False),
    ]
    assert rows(
        settings, "select distinct tenant_id::text, user_id::text from finance_entries"
    ) == [(ana.tenant_id, ana.user_id)]


def test_relative_dates_are_the_users_local_days(settings: Settings, ana: Context) -> None:
    today = local_now(ana.timezone).date()
    _record(ana, "c1", date="ontem")
    _record(ana, "c2", date="hoje")
    _record(ana, "c3", date="anteontem")
    days = [r[5] for r in _entries(settings)]
    assert days == [str(today - timedelta(days=n)) for n in (1, 0, 2)]


def test_a_replayed_call_returns_the_same_answer_and_writes_nothing(
    settings: Settings, ana: Context
) -> None:
    args = {"kind": "expense", "amount": "12,50", "category": "mercado"}
    first, again = replay_tool(record_transaction, args, ana, call_id="call_same")
    assert ok(again) == ok(first)  # a resumed run replays the same call
    assert rows(settings, "select count(*), sum(amount) from finance_entries") == [
        (1, Decimal("12.50"))
    ]


@pytest.mark.parametrize(
    ("amount", "stored"),
    [
        ("5.000", "5000.00"),
        ("1.800", "1800.00"),
        ("1.800,50", "1800.50"),
        ("45,90", "45.90"),
        ("45,9", "45.90"),
        ("R$ 1.234,56", "1234.56"),
        ("R$1.234,56", "1234.56"),
        ("1,234.56", "1234.56"),
        ("3,000", "3000.00"),
        ("12.5", "12.50"),
        ("1.234.567", "1234567.00"),
        (" 20 ", "20.00"),
        ("US$ 20", "20.00"),
        (45.9, "45.90"),
        (12.34, "12.34"),
        (12, "12.00"),
        (5000, "5000.00"),
        (5000.0, "5000.00"),
        (0.5, "0.50"),
        (999999999999.99, "999999999999.99"),
    ],
)
def test_amounts_in_brazilian_english_and_json_number_forms(
    settings: Settings, ana: Context, amount: object, stored: str
) -> None:
    answer = ok(run_tool(record_transaction, {"kind": "expense", "amount": amount,
                                              "category": "mercado"}, ana))  # fmt: skip
    assert f": {stored} BRL, mercado," in answer
    assert rows(settings, "select amount::text from finance_entries") == [(stored,)]


@pytest.mark.parametrize(
    ("amount", "complaint"),
    [
        ("45.9999", "more than two decimals"),
        ("0.500", "more than two decimals"),
        ("1.234,567", "more than two decimals"),
        ("0,001", "more than two decimals"),
        ("-5", "negative"),
        ("-5,00", "negative"),
        ("0", "zero"),
        ("0,00", "zero"),
        ("abc", "not an amount"),
        ("1e3", "not an amount"),
        ("", "not an amount"),
        ("NaN", "not an amount"),
        ("1000000000000", "too large"),
        ("1.2.3", "not an amount"),
        ("1,234,56", "not an amount"),
        ("12,34.56", "not an amount"),
        ("R$", "not an amount"),
        ("--5", "negative"),
        (0, "zero"),
        (-3, "negative"),
        (-0.5, "negative"),
        (0.1 + 0.2, "more than two decimals"),
        (12.345, "more than two decimals"),  # a JSON number is never grouped in thousands
        (33.333, "more than two decimals"),
        (1e300, "too large"),
        (10**40, "too large"),
    ],
)
def test_bad_amounts_are_refused_and_nothing_is_written(
    settings: Settings, ana: Context, amount: str, complaint: str
) -> None:
    error = failed(run_tool(record_transaction, {"kind": "expense", "amount": amount,
                                                 "category": "mercado"}, ana))  # fmt: skip
    assert complaint in error
    assert rows(settings, "select count(*) from finance_entries") == [(0,)]


@pytest.mark.parametrize(
    ("number", "parsed"),
    [(12.345, None), (33.333, None), (Decimal("12.345"), None), (Decimal("NaN"), None),
     (float("inf"), None), (12.34, "12.34"), (Decimal("12.34"), "12.34"), (5000, "5000.00"),
     (5000.0, "5000.00")],
)  # fmt: skip
def test_a_number_is_read_at_its_value_never_as_thousands(
    number: float | Decimal, parsed: str | None
) -> None:
    if parsed is None:
        with pytest.raises(ToolError, match=r"more than two decimals|not an amount"):
            parse_amount(number)
    else:
        assert parse_amount(number) == Decimal(parsed)


@pytest.mark.parametrize("amount", [None, True, [45], {"value": 45}])
def test_an_amount_that_is_neither_text_nor_a_number_is_refused(
    settings: Settings, ana: Context, amount: object
) -> None:
    error = failed(run_tool(record_transaction, {"kind": "expense", "amount": amount,
                                                 "category": "mercado"}, ana))  # fmt: skip
    assert "amount" in error
    assert rows(settings, "select count(*) from finance_entries") == [(0,)]


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        ({"currency": "R$"}, "ISO 4217"),
        ({"currency": "reais"}, "ISO 4217"),
        ({"currency": "US"}, "ISO 4217"),
        ({"date": "outro dia"}, "Could not understand the date"),
        ({"date": "31/02"}, "Could not understand the date"),
        ({"date": "2026-13-01"}, "Could not understand the date"),
        ({"kind": "transfer"}, "kind"),
        ({"category": ""}, "category"),
        ({"category": "   "}, "category is empty"),
        ({"category": "coisas"}, "not a known category"),
        ({"category": "x"}, "groceries (mercado)"),
        ({"tenant_id": "00000000-0000-0000-0000-000000000000"}, "tenant_id"),
        ({"user_id": "someone"}, "user_id"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(
    settings: Settings, ana: Context, args: dict[str, object], complaint: str
) -> None:
    base = {"kind": "expense", "amount": "10", "category": "mercado"}
    assert complaint in failed(run_tool(record_transaction, base | args, ana))
    assert rows(settings, "select count(*) from finance_entries") == [(0,)]


def test_a_run_without_tenant_and_user_cannot_use_the_tools(settings: Settings) -> None:
    nobody = Context(tenant_id="", user_id="")
    error = failed(run_tool(record_transaction, {"kind": "expense", "amount": "1",
                                                 "category": "x"}, nobody))  # fmt: skip
    assert "no tenant and user" in error
    assert "no tenant and user" in failed(run_tool(get_balance, {}, nobody))


def test_balance_and_categories_per_period_and_currency(settings: Settings, ana: Context) -> None:
    _record(ana, "c1", amount="45,90", date="2026-11-02")
    _record(ana, "c2", amount="20", category="Padaria", date="2026-11-03")
    _record(ana, "c3", amount="4,10", category="mercado", date="2026-11-30")
    _record(ana, "c4", kind="income", amount="1000", category="salário", date="2026-11-05")
    _record(ana, "c5", amount="30", currency="USD", category="viagem", date="2026-11-06")
    _record(ana, "c6", amount="500", date="2026-10-31")  # the month before

    balance = json.loads(ok(run_tool(get_balance, {"period": "2026-11"}, ana)))
    assert balance == {
        "period": "2026-11",
        "from": "2026-11-01",
        "to": "2026-11-30",
        "totals": [
            {"currency": "BRL", "income": "1000.00", "expenses": "70.00", "balance": "930.00"},
            {"currency": "USD", "income": "0.00", "expenses": "30.00", "balance": "-30.00"},
        ],
    }
    spending = json.loads(ok(run_tool(spending_by_category, {"period": "2026-11"}, ana)))
    assert spending["categories"] == [
        {"category": "mercado", "currency": "BRL", "total": "50.00", "entries": 2},
        {"category": "lazer", "currency": "USD", "total": "30.00", "entries": 1},
        {"category": "alimentação", "currency": "BRL", "total": "20.00", "entries": 1},
    ]
    october = json.loads(ok(run_tool(get_balance, {"period": "2026-10"}, ana)))
    assert october["totals"] == [
        {"currency": "BRL", "income": "0.00", "expenses": "500.00", "balance": "-500.00"}
    ]
    empty = json.loads(ok(run_tool(get_balance, {"period": "2020-01"}, ana)))
    assert empty["totals"] == []


def test_the_default_period_is_this_month(settings: Settings, ana: Context) -> None:
    _record(ana, "c1", amount="7", date="hoje")
    balance = json.loads(ok(run_tool(get_balance, {}, ana)))
    assert balance["period"] == "this_month"
    assert balance["totals"][0]["expenses"] == "7.00"


@pytest.mark.parametrize("period", ["forever", "2026-13", "2026/11", "last_decade", ""])
def test_unknown_periods_are_refused(settings: Settings, ana: Context, period: str) -> None:
    assert "this_month" in failed(run_tool(get_balance, {"period": period}, ana))
    assert "this_month" in failed(run_tool(spending_by_category, {"period": period}, ana))


def test_list_is_newest_first_and_limited(settings: Settings, ana: Context) -> None:
    for day in range(1, 6):
        _record(ana, f"c{day}", amount=str(day), date=f"2026-11-0{day}")
    listed = json.loads(ok(run_tool(list_transactions, {"limit": 3}, ana)))["transactions"]
    assert [(t["amount"], t["date"]) for t in listed] == [
        ("5.00", "2026-11-05"),
        ("4.00", "2026-11-04"),
        ("3.00", "2026-11-03"),
    ]
    assert set(listed[0]) == {"id", "kind", "amount", "currency", "category", "description",
                              "date"}  # fmt: skip
    for limit in (0, 51, 5.5):
        assert "limit" in failed(run_tool(list_transactions, {"limit": limit}, ana))


def test_delete_only_the_users_own_entries(
    settings: Settings, tenant: Tenant, ana: Context
) -> None:
    bia = context_for(tenant, make_user(settings, tenant, phone="5511977776666"))
    other_tenant = make_tenant(settings)
    carl = context_for(other_tenant, make_user(settings, other_tenant, phone="5511966665555"))
    _record(ana, "a1", amount="10")
    _record(bia, "b1", amount="20")
    _record(carl, "x1", amount="30")
    ids = dict(rows(settings, "select amount::text, id from finance_entries"))

    for context, entry in ((ana, ids["20.00"]), (ana, ids["30.00"]), (bia, ids["10.00"])):
        error = failed(run_tool(delete_transaction, {"transaction_id": entry}, context))
        assert f"There is no entry #{entry} for this user" in error
    assert "There is no entry #999" in failed(
        run_tool(delete_transaction, {"transaction_id": 999}, ana)
    )
    assert rows(settings, "select count(*) from finance_entries where deleted_at is null") == [(3,)]

    deleted = ok(run_tool(delete_transaction, {"transaction_id": ids["10.00"]}, ana, call_id="d1"))
    assert deleted == f"Deleted expense #{ids['10.00']}: 10.00 BRL, mercado, on 2026-11-02."
    again = run_tool(delete_transaction, {"transaction_id": ids["10.00"]}, ana, call_id="d1")
    assert "already deleted" in failed(again), "the same call id in a later step is no replay"
    later = run_tool(delete_transaction, {"transaction_id": ids["10.00"]}, ana, call_id="d2")
    assert "already deleted" in failed(later)

    assert json.loads(ok(run_tool(list_transactions, {}, ana))) == {"transactions": []}
    assert json.loads(ok(run_tool(get_balance, {"period": "2026-11"}, ana)))["totals"] == []
    assert rows(settings, "select amount::text from finance_entries where deleted_at is null "
                          "order by amount") == [("20.00",), ("30.00",)]  # fmt: skip


@pytest.mark.parametrize("transaction_id", [0, -1, "abc", 1.5])
def test_delete_refuses_ids_that_are_not_positive_integers(
    settings: Settings, ana: Context, transaction_id: object
) -> None:
    error = failed(run_tool(delete_transaction, {"transaction_id": transaction_id}, ana))
    assert "transaction_id" in error


def test_tenants_do_not_see_each_others_entries(
    settings: Settings, tenant: Tenant, ana: Context
) -> None:
    other_tenant = make_tenant(settings)
    same_phone = context_for(other_tenant, make_user(settings, other_tenant))
    _record(ana, "a1", amount="10")
    _record(same_phone, "a1", amount="99")  # same call id in another tenant: its own entry

    mine = json.loads(ok(run_tool(list_transactions, {}, ana)))["transactions"]
    theirs = json.loads(ok(run_tool(list_transactions, {}, same_phone)))["transactions"]
    assert [t["amount"] for t in mine] == ["10.00"]
    assert [t["amount"] for t in theirs] == ["99.00"]


def test_synonyms_in_both_languages_report_as_one_category(
    settings: Settings, ana: Context
) -> None:
    for n, word in enumerate(["mercado", "Supermercado", "groceries", "FEIRA", "grocery"]):
        _record(ana, f"g{n}", amount="10", category=word)
    rows(  # an entry stored before the canonical list, with the word the model sent
        settings,
        "insert into finance_entries (tenant_id, user_id, kind, amount, currency, category, "
        "description, occurred_on) values (%s, %s, 'expense', 5, 'BRL', 'supermercado', '', "
        "'2026-11-02') returning id",
        ana.tenant_id,
        ana.user_id,
    )
    assert rows(settings, "select distinct category from finance_entries where id <= 5") == [
        ("groceries",)
    ]
    spending = json.loads(ok(run_tool(spending_by_category, {"period": "2026-11"}, ana)))
    assert spending["categories"] == [
        {"category": "mercado", "currency": "BRL", "total": "55.00", "entries": 6}
    ]
    english = replace(ana, locale="en-US")
    spending = json.loads(ok(run_tool(spending_by_category, {"period": "2026-11"}, english)))
    assert [c["category"] for c in spending["categories"]] == ["groceries"]
    listed = json.loads(ok(run_tool(list_transactions, {"limit": 1}, english)))
    assert listed["transactions"][0]["category"] == "groceries"


@pytest.mark.parametrize(
    ("word", "name"),
    [("gás", "bills"), ("gas", "bills"), ("Conta de Luz", "bills"), ("conta de água", "bills"),
     ("conta de gás", "bills"), ("water bill", "bills"), ("gasolina", "transport"),
     ("combustível", "transport"), ("fuel", "transport"), ("petrol", "transport"),
     ("salário", "salary"), ("paycheck", "salary")],
)  # fmt: skip
def test_cooking_gas_is_a_bill_and_fuel_is_transport(word: str, name: str) -> None:
    assert categories.canonical(word) == name


@pytest.mark.parametrize("word", ["pagamento", "pay"])
def test_a_payment_is_not_taken_for_salary(settings: Settings, ana: Context, word: str) -> None:
    error = failed(run_tool(record_transaction, {"kind": "expense", "amount": "10",
                                                 "category": word}, ana))  # fmt: skip
    assert "not a known category" in error and "salary (salário)" in error
    assert rows(settings, "select count(*) from finance_entries") == [(0,)]


def test_the_finance_prompt_names_exactly_the_tools_categories() -> None:
    from graphs.prompts import FINANCE_PROMPT

    listed = FINANCE_PROMPT.split("in Portuguese or English (", 1)[1].split(")", 1)[0]
    assert listed.split(", ") == [f"{c.pt}/{c.en}" for c in categories.CATEGORIES]
