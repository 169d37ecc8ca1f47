"""The finance specialist's tools: record, sum up, list and delete the user's money entries.

Amounts arrive as JSON numbers or text in Brazilian or English notation (`tools.amounts`) and
become `Decimal` with two places. Categories are kept on one canonical list (`store.categories`):
any synonym is stored by its canonical name and reported in the user's language. The
user and tenant come from the run context; an id the model passes only ever finds the user's
own entries. Writes are idempotent per run step and tool call (`tools._runtime.call_key`).
"""

from __future__ import annotations

import json
import re
from datetime import date as Date
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from langchain_core.tools import tool
from langgraph.prebuilt import ToolRuntime
from pydantic import Field, StrictFloat, StrictInt, StrictStr

from store import categories
from store import finance as entries
from store.finance import Entry
from tools._args import MAX_ID, ToolArgs
from tools._offers import offer, option
from tools._runtime import Scope, ToolError, call_key, scope_of, tool_db, turn_language
from tools.amounts import FORMS, describe_amount, parse_amount
from tools.dates import local_now, resolve_date, resolve_period


def parse_currency(text: str) -> str:
    """Return an ISO 4217 code in capitals ("brl" becomes "BRL")."""
    code = text.strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise ToolError(
            f"{text!r} is not a currency code. Use the three-letter ISO 4217 code, like BRL for "
            "reais, USD for dollars or EUR for euros."
        )
    return code


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def _describe(entry: Entry, language: str) -> str:
    text = (
        f"{entry.kind} #{entry.id}: {_money(entry.amount)} {entry.currency}, "
        f"{categories.display(entry.category, language)}, on {entry.occurred_on.isoformat()}"
    )
    return text + (f" ({entry.description})" if entry.description else "")


def parse_category(text: str) -> str:
    """Return the canonical name of the category `text` names, or raise `ToolError`."""
    if not text.strip():
        raise ToolError(f"The category is empty; give one of: {categories.allowed()}.")
    try:
        return categories.canonical(text)
    except ValueError as exc:
        raise ToolError(str(exc)) from exc


def _today(scope: Scope) -> Date:
    return local_now(scope.timezone).date()


EARLIEST = Date(1900, 1, 1)
"""The earliest day an entry may have."""
MAX_DAYS_AHEAD = 366
"""How far after today an entry may be dated (an income expected soon, say)."""


def _entry_day(text: str, today: Date) -> Date:
    """The day `text` names, or `ToolError` when it is no day or outside a sane range."""
    day = resolve_date(text, today, lean="past")
    latest = today + timedelta(days=MAX_DAYS_AHEAD)
    if not EARLIEST <= day <= latest:
        raise ToolError(
            f"The date {text!r} ({day.isoformat()}) is out of range: entries go from "
            f"{EARLIEST.isoformat()} to {latest.isoformat()}. Check the date with the user."
        )
    return day


# -- record ----------------------------------------------------------------------------------


class RecordTransactionArgs(ToolArgs):
    """Arguments of `record_transaction`."""

    kind: Literal["expense", "income"] = Field(
        description='"expense" for money spent, "income" for money received.'
    )
    amount: Annotated[StrictStr, Field(max_length=40)] | StrictInt | StrictFloat = Field(
        description=f"The amount, positive. {FORMS}",
    )
    currency: str = Field(default="BRL", max_length=10, description="ISO 4217 code, e.g. BRL.")
    category: str = Field(
        min_length=1,
        max_length=60,
        description="The category, in either language (synonyms are fine: mercado, "
        f"supermercado, groceries): {categories.allowed()}.",
    )
    description: str = Field(default="", max_length=500, description="What it was, if said.")
    date: str = Field(
        default="today",
        max_length=60,
        description='When: "today", "ontem", "sexta passada", "last friday", "12/03" '
        '(day/month), "12 de março" or an ISO date. Defaults to today.',
    )


@tool(args_schema=RecordTransactionArgs, response_format="content_and_artifact")
def record_transaction(
    kind: Literal["expense", "income"],
    amount: str | int | float,
    category: str,
    runtime: ToolRuntime,
    currency: str = "BRL",
    description: str = "",
    date: str = "today",
) -> tuple[str, dict[str, Any]]:
    """Record an expense or an income of the user, with its amount, category and date.

    Returns the entry's number, which the user needs to delete it later. The user gets an
    undo button with your answer.
    """
    scope = scope_of(runtime.context)
    value, code = parse_amount(amount), parse_currency(currency)
    category = parse_category(category)
    day = _entry_day(date, _today(scope))
    call_id = call_key(runtime)
    with tool_db(scope) as conn:
        entry = entries.insert_entry(
            conn, scope.tenant_id, scope.user_id, kind=kind, amount=value, currency=code,
            category=category, description=description.strip(), occurred_on=day,
            tool_call_id=call_id,
        )  # fmt: skip
        if entry is None:  # this tool call already ran: answer as it did
            entry = entries.entry_by_call(conn, scope.tenant_id, scope.user_id, call_id)
            if entry is None:
                raise ToolError("This tool call id was already used; call the tool again.")
    language = turn_language(runtime, scope)
    undo = option(f"{_UNDO[language]} #{entry.id}", {"do": "undo_entry", "entry": entry.id})
    return "Recorded " + _describe(entry, language) + ".", offer([undo])


_UNDO = {"pt": "Desfazer", "en": "Undo"}
_CHOOSE = {"pt": "Escolher", "en": "Choose"}


# -- reports ---------------------------------------------------------------------------------


class PeriodArgs(ToolArgs):
    """Arguments of the period reports."""

    period: str = Field(
        default="this_month",
        max_length=20,
        description="today, yesterday, this_week, last_week, this_month, last_month, "
        "this_year, or a month as YYYY-MM.",
    )


@tool(args_schema=PeriodArgs)
def get_balance(runtime: ToolRuntime, period: str = "this_month") -> str:
    """Sum the user's income and expenses over a period, per currency, and the balance.

    Returns JSON with the period's first and last day and, per currency, income, expenses and
    balance (income minus expenses) as decimal strings.
    """
    scope = scope_of(runtime.context)
    first, last = resolve_period(period, _today(scope))
    with tool_db(scope) as conn:
        rows = entries.totals(conn, scope.tenant_id, scope.user_id, first, last)
    totals = [
        {
            "currency": r.currency,
            "income": _money(r.income),
            "expenses": _money(r.expenses),
            "balance": _money(r.income - r.expenses),
        }
        for r in rows
    ]
    return json.dumps(
        {"period": period, "from": first.isoformat(), "to": last.isoformat(), "totals": totals},
        ensure_ascii=False,
    )


@tool(args_schema=PeriodArgs)
def spending_by_category(runtime: ToolRuntime, period: str = "this_month") -> str:
    """Total the user's expenses per category over a period, largest first.

    Returns JSON with the period's first and last day and, per category and currency, the
    total (a decimal string) and the number of entries.
    """
    scope = scope_of(runtime.context)
    first, last = resolve_period(period, _today(scope))
    with tool_db(scope) as conn:
        rows = entries.expenses_by_category(conn, scope.tenant_id, scope.user_id, first, last)
    language = turn_language(runtime, scope)
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:  # entries stored before the canonical list may still use a synonym
        found = categories.find(r.category)
        name = categories.display(found.name, language) if found else r.category
        line = merged.setdefault((name, r.currency), {"total": Decimal(0), "entries": 0})
        line["total"] += r.total
        line["entries"] += r.entries
    totals = [
        {"category": name, "currency": currency, "total": _money(line["total"]),
         "entries": line["entries"]}
        for (name, currency), line in merged.items()
    ]  # fmt: skip
    totals.sort(key=lambda t: (-Decimal(t["total"]), t["category"]))
    return json.dumps(
        {"period": period, "from": first.isoformat(), "to": last.isoformat(),
         "categories": totals},
        ensure_ascii=False,
    )  # fmt: skip


class ListTransactionsArgs(ToolArgs):
    """Arguments of `list_transactions`."""

    limit: int = Field(default=10, ge=1, le=50, description="How many, newest first (1-50).")


@tool(args_schema=ListTransactionsArgs)
def list_transactions(runtime: ToolRuntime, limit: int = 10) -> str:
    """List the user's most recent income and expense entries, newest first, with their ids.

    Returns JSON: a list of entries (id, kind, amount, currency, category, description, date).
    """
    scope = scope_of(runtime.context)
    language = turn_language(runtime, scope)
    with tool_db(scope) as conn:
        rows = entries.recent_entries(conn, scope.tenant_id, scope.user_id, limit)
    listed = [
        {
            "id": r.id,
            "kind": r.kind,
            "amount": _money(r.amount),
            "currency": r.currency,
            "category": categories.display(r.category, language),
            "description": r.description,
            "date": r.occurred_on.isoformat(),
        }
        for r in rows
    ]
    return json.dumps({"transactions": listed}, ensure_ascii=False)


# -- delete ----------------------------------------------------------------------------------


class DeleteTransactionArgs(ToolArgs):
    """Arguments of `delete_transaction`."""

    transaction_id: int = Field(ge=1, le=MAX_ID, description="The entry's number (#id), as listed.")


@tool(args_schema=DeleteTransactionArgs)
def delete_transaction(transaction_id: int, runtime: ToolRuntime) -> str:
    """Delete one of the user's income or expense entries by its number.

    Use `list_transactions` first when the user has not said which entry.
    """
    scope = scope_of(runtime.context)
    call_id = call_key(runtime)
    with tool_db(scope) as conn:
        entry = entries.lock_entry(conn, scope.tenant_id, scope.user_id, transaction_id)
        if entry is None:
            raise ToolError(
                f"There is no entry #{transaction_id} for this user. "
                "Call list_transactions to see the user's entries and their numbers."
            )
        if entry.deleted_at is not None:
            if entry.deleted_by_tool_call_id != call_id:
                raise ToolError(f"Entry #{transaction_id} was already deleted.")
        else:
            entries.delete_entry(conn, transaction_id, call_id)
    return "Deleted " + _describe(entry, turn_language(runtime, scope)) + "."


class OfferDeletionArgs(ToolArgs):
    """Arguments of `offer_entries_to_delete`."""

    limit: int = Field(default=10, ge=1, le=10, description="How many, newest first (1-10).")


@tool(args_schema=OfferDeletionArgs, response_format="content_and_artifact")
def offer_entries_to_delete(runtime: ToolRuntime, limit: int = 10) -> tuple[str, dict[str, Any]]:
    """Show the user their most recent entries as a list to pick the one to delete.

    Use it when the user wants to delete an entry but has not said which one: your answer
    (e.g. "Which entry should I delete?") goes out with the list, and the user's pick deletes
    it without you. Returns the entries offered, as JSON.
    """
    scope = scope_of(runtime.context)
    language = turn_language(runtime, scope)
    with tool_db(scope) as conn:
        rows = entries.recent_entries(conn, scope.tenant_id, scope.user_id, limit)
    if not rows:
        raise ToolError("The user has no entries to delete. Tell them so.")
    options = [
        option(
            f"#{r.id} {describe_amount(r.amount, r.currency, language)}",
            {"do": "delete_entry", "entry": r.id},
            _row_description(r, language),
        )
        for r in rows
    ]
    listed = [{"id": r.id, "amount": _money(r.amount), "category": r.category} for r in rows]
    return json.dumps({"offered": listed}), offer(options, button=_CHOOSE[language])


def _row_description(entry: Entry, language: str) -> str:
    """An entry's category, day and description, as a list row shows them under its amount."""
    parts = (categories.display(entry.category, language), entry.occurred_on.strftime("%d/%m"),
             entry.description)  # fmt: skip
    return " · ".join(p for p in parts if p)


FINANCE_TOOLS = [
    record_transaction,
    get_balance,
    spending_by_category,
    list_transactions,
    offer_entries_to_delete,
    delete_transaction,
]
"""The finance specialist's tools, in the order the model sees them."""
