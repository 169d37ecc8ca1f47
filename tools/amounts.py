"""Read money amounts as people and models write them, in Brazilian or English notation.

Money has at most two decimals, so a separator followed by exactly three digits groups
thousands in either notation: "5.000" and "1,800" are five thousand and one thousand eight
hundred. With both separators, the last one is the decimal point ("1.234,56", "1,234.56"). A
JSON number is taken at its value ("12.5" and 12.5 are the same). A float never touches money:
everything becomes a `Decimal` with two places.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from tools._runtime import ToolError

MAX_AMOUNT = Decimal("999999999999.99")
"""The largest amount `numeric(14, 2)` holds."""

FORMS = (
    'Send the amount as a JSON number (45.9) or as text as the user wrote it: "45,90", '
    '"5.000", "1.234,56", "1,234.56" or "R$ 45,90"; at most two decimals.'
)
"""How amounts may be written, for the tool schema and error messages."""

_CENT = Decimal("0.01")
_PREFIXES = ("R$", "US$", "$", "€", "£", "BRL", "USD", "EUR")
_GROUPED = r"\d{{1,3}}(?:{sep}\d{{3}})+"


def parse_amount(value: object) -> Decimal:
    """Return a positive amount with two decimal places, or raise `ToolError` saying why."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise ToolError(f"{value!r} is not an amount. {FORMS}")
    amount = _from_text(value) if isinstance(value, str) else _from_number(value)
    if amount <= 0:
        raise ToolError(f"The amount {value!r} is zero; amounts must be more than zero.")
    if amount > MAX_AMOUNT:
        raise ToolError(f"The amount {value!r} is too large (at most {MAX_AMOUNT}).")
    return amount


def _from_number(number: int | float | Decimal) -> Decimal:
    """Take a JSON number at its value: 12.345 has three decimals, never thousands."""
    exact = Decimal(repr(number)) if isinstance(number, float) else Decimal(number)
    if not exact.is_finite():
        raise ToolError(f"{number!r} is not an amount. {FORMS}")
    if exact < 0:
        raise _negative(number)
    if exact > MAX_AMOUNT:
        raise ToolError(f"The amount {number!r} is too large (at most {MAX_AMOUNT}).")
    if int(exact.as_tuple().exponent) < -2:
        raise ToolError(f"The amount {number!r} has more than two decimals. {FORMS}")
    return exact.quantize(_CENT)


def _negative(value: object) -> ToolError:
    return ToolError(
        f"The amount {value!r} is negative. Amounts are positive: record money going out "
        'with kind "expense" and money coming in with kind "income".'
    )


def _from_text(text: str) -> Decimal:
    clean = re.sub(r"\s+", "", text)
    for prefix in _PREFIXES:
        if clean.upper().startswith(prefix):
            clean = clean[len(prefix) :]
            break
    clean = clean.lstrip("+")
    if clean.startswith("-"):
        raise _negative(text)
    number = _number(clean)
    if number is None:
        if re.fullmatch(r"\d*[.,]\d{3,}", clean) or re.fullmatch(r"[\d.,]+[.,]\d{3,}", clean):
            raise ToolError(f"The amount {text!r} has more than two decimals. {FORMS}")
        raise ToolError(f"{text!r} is not an amount. {FORMS}")
    try:
        return Decimal(number).quantize(_CENT)
    except InvalidOperation as exc:
        raise ToolError(f"The amount {text!r} is too large (at most {MAX_AMOUNT}).") from exc


def _number(clean: str) -> str | None:
    """The plain decimal ("1234.56") that `clean` writes, or None when it writes none."""
    dots, commas = _GROUPED.format(sep=r"\."), _GROUPED.format(sep=",")
    if re.fullmatch(r"\d+", clean):
        return clean
    if re.fullmatch(rf"(?:{dots}|{commas})", clean) and not clean.startswith("0"):
        return clean.replace(".", "").replace(",", "")  # "5.000", "1,800": thousands
    if re.fullmatch(r"\d+[.,]\d{1,2}", clean):
        return clean.replace(",", ".")  # "45,90", "12.5"
    if re.fullmatch(rf"{dots},\d{{1,2}}", clean):
        return clean.replace(".", "").replace(",", ".")  # "1.234,56"
    if re.fullmatch(rf"{commas}\.\d{{1,2}}", clean):
        return clean.replace(",", "")  # "1,234.56"
    return None


def describe_amount(amount: Decimal, currency: str, language: str) -> str:
    """An amount as the user writes it: "R$ 30,00" or "BRL 30.00"."""
    if language == "pt":
        number = f"{amount:,.2f}".replace(",", "X").replace(".", ",").replace("X", ".")
        return f"R$ {number}" if currency == "BRL" else f"{currency} {number}"
    return f"{currency} {amount:,.2f}"
