"""Compare a tool argument the model sent with the expected one by what it means, not its text.

An amount is a number ("5.000", "5000" and 5000 agree), a category is its canonical name
("mercado", "supermercado" and "groceries" agree), a date or time is the day or moment it
resolves to from the run's local time ("ontem" and yesterday's ISO date agree). Anything else is
compared as text, without case or extra spaces. An argument the model left out counts as the
tool's default ("today" for a transaction's date).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from store import categories
from tools._runtime import ToolError
from tools.amounts import parse_amount
from tools.dates import resolve_date, resolve_month_day
from tools.times import resolve_datetime

_MISSING = object()


def _text(value: Any) -> str:
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).casefold()


def _category(value: Any) -> Any:
    found = categories.find(str(value))
    return found.name if found is not None else _text(value)


def _day(now: datetime) -> Callable[[Any], Any]:
    return lambda value: resolve_date(str(value), now.date(), lean="past")


def _moment(now: datetime) -> Callable[[Any], Any]:
    return lambda value: resolve_datetime(str(value), now).replace(second=0, microsecond=0)


def _readers(tool: str, now: datetime) -> dict[str, Callable[[Any], Any]]:
    """How each argument of `tool` is read into something comparable."""
    readers: dict[str, Callable[[Any], Any]] = {
        "amount": parse_amount,
        "category": _category,
        "when": _moment(now),
    }
    if tool == "add_important_date":
        readers["date"] = lambda value: resolve_month_day(str(value))[:2]
    else:
        readers["date"] = _day(now)
    return readers


def tool_default(tool: str, key: str) -> Any:
    """The default the tool gives `key` when the model leaves it out (or a marker for none)."""
    from nodes.specialists import SPECIALISTS

    for specialist in SPECIALISTS.values():
        for candidate in specialist.tools:
            schema = candidate.args_schema
            if candidate.name != tool or not isinstance(schema, type):
                continue
            field = getattr(schema, "model_fields", {}).get(key)
            if field is not None and not field.is_required():
                return field.default
    return _MISSING


def same_argument(tool: str, key: str, expected: Any, got: Any, now: datetime) -> bool:
    """Whether `got` (what the model sent for `key`; `_MISSING` if nothing) means `expected`."""
    if got is _MISSING:
        got = tool_default(tool, key)
        if got is _MISSING:
            return False
    read = _readers(tool, now).get(key, _text)
    try:
        return bool(read(expected) == read(got))
    except (ToolError, ValueError, TypeError):
        return _text(expected) == _text(got)


def arguments_match(
    tool: str, expected: dict[str, Any], got: dict[str, Any], now: datetime
) -> bool:
    """Whether every expected argument is in `got` with the same meaning."""
    return all(
        same_argument(tool, key, value, got.get(key, _MISSING), now)
        for key, value in expected.items()
    )
