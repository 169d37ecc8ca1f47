"""Read the money of a message for the offline model: its amount, currency and category.

Amounts follow the tools' own notation rules (:mod:`tools.amounts`) and categories the tools'
own list of words (:mod:`store.categories`), so the offline model sends only what the tools
accept, and a new synonym there is one here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from graphs.offline.lexicon import MONTHS_PT, rx
from store import categories
from tools._runtime import ToolError
from tools.amounts import parse_amount

Span = tuple[int, int]

_AMOUNT = rx(
    r"""(?P<cur>r\$|us\$|\$|€|£)?\s*
        (?<![\d/:.,])(?P<num>\d{1,3}(?:[.,]\d{3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?)
        (?![\d/:h])(?!\s*(?:minut|hora|dia|seman|mes|ano|min\b|hour|day|week|month|year|am\b
        |pm\b|de\s+(?:"""
    + "|".join(MONTHS_PT)
    + r""")))
        (?:\s*(?P<unit>reais|real|conto|pila|mil|k|dolares|dollars?|bucks|euros?|usd|brl|eur)\b)?"""
)
_CURRENCIES = {"r$": "BRL", "us$": "USD", "$": "USD", "€": "EUR", "£": "GBP"}
_CURRENCIES |= {"dolares": "USD", "dollars": "USD", "dollar": "USD", "bucks": "USD"}
_CURRENCIES |= {"euros": "EUR", "euro": "EUR", "usd": "USD", "eur": "EUR"}
_AMOUNT_WORDS = {
    **dict.fromkeys(("um", "uma", "one", "a"), 1), **dict.fromkeys(("dois", "duas", "two"), 2),
    "tres": 3, "three": 3, "quatro": 4, "four": 4, "cinco": 5, "five": 5, "seis": 6, "six": 6,
    "sete": 7, "seven": 7, "oito": 8, "eight": 8, "nove": 9, "nine": 9, "dez": 10, "ten": 10,
    "onze": 11, "eleven": 11, "doze": 12, "twelve": 12, "treze": 13, "thirteen": 13,
    "catorze": 14, "quatorze": 14, "fourteen": 14, "quinze": 15, "fifteen": 15,
    "dezesseis": 16, "sixteen": 16, "dezessete": 17, "seventeen": 17, "dezoito": 18,
    "eighteen": 18, "dezenove": 19, "nineteen": 19, "vinte": 20, "twenty": 20, "trinta": 30,
    "thirty": 30, "quarenta": 40, "forty": 40, "cinquenta": 50, "fifty": 50, "sessenta": 60,
    "sixty": 60, "setenta": 70, "seventy": 70, "oitenta": 80, "eighty": 80, "noventa": 90,
    "ninety": 90, "cem": 100, "cento": 100, "duzentos": 200, "duzentas": 200, "trezentos": 300,
    "quatrocentos": 400, "quinhentos": 500, "seiscentos": 600, "setecentos": 700,
    "oitocentos": 800, "novecentos": 900,
}  # fmt: skip
_SPOKEN_AMOUNT = rx(
    r"""\b(?P<words>(?:(?:"""
    + "|".join(sorted(_AMOUNT_WORDS, key=len, reverse=True))
    + r"""|hundred|thousand|mil|e|and)[\s-]+)+)
        (?P<unit>reais|real|dolares|dollars?|bucks|euros?)\b"""
)
_CATEGORY_NAMES = {word: name for word, name in categories.words().items() if name != "other"}
_CATEGORY_WORD = re.compile(
    r"(?<![\w-])(?:"
    + "|".join(
        re.escape(word).replace(r"\ ", r"\s+")
        for word in sorted(_CATEGORY_NAMES, key=len, reverse=True)
    )
    + r")(?![\w-])"
)


@dataclass(frozen=True)
class Money:
    """An amount found in a message: as the tools take it, where it was, in which currency."""

    amount: str
    span: Span
    currency: str


def find_money(folded: str, skip: list[Span]) -> Money | None:
    """Return the first amount of ``folded`` outside the ``skip`` spans (dates), or None.

    Digits come first ("45,90", "R$ 1.234,56", "2 mil"); else an amount said in words
    ("cinquenta reais"), as a voice note's transcript has it.
    """
    for found in _AMOUNT.finditer(folded):
        if any(s <= found.start() < e for s, e in skip):
            continue
        value = _parsed(found.group("num"))
        if value is None:
            return None
        if found.group("unit") in ("mil", "k"):
            value *= 1000
        code = _CURRENCIES.get(found.group("cur") or found.group("unit") or "", "BRL")
        return Money(_plain(value), found.span(), code)
    return _spoken_amount(folded)


def plain_amount(written: str) -> str | None:
    """Return ``written`` ("1.234,56", "45,90", "1.500") as a plain decimal, or None."""
    value = _parsed(written)
    return _plain(value) if value is not None else None


def find_category(folded: str, skip: list[Span]) -> tuple[str, Span] | None:
    """Return the canonical category first named in ``folded`` outside ``skip``, and where."""
    for found in _CATEGORY_WORD.finditer(folded):
        if not any(s < found.end() and found.start() < e for s, e in skip):
            return _CATEGORY_NAMES[" ".join(found.group().split())], found.span()
    return None


def _parsed(written: str) -> Decimal | None:
    try:
        return parse_amount(written)
    except ToolError:
        return None


def _plain(value: Decimal) -> str:
    return str(int(value)) if value == value.to_integral_value() else str(value)


def _spoken_amount(folded: str) -> Money | None:
    found = _SPOKEN_AMOUNT.search(folded)
    if found is None:
        return None
    total = current = 0
    for word in re.split(r"[\s-]+", found.group("words").strip()):
        if word in ("e", "and"):
            continue
        if word == "hundred":
            current = max(current, 1) * 100
        elif word in ("thousand", "mil"):
            total, current = total + max(current, 1) * 1000, 0
        else:
            current += _AMOUNT_WORDS[word]
    value = total + current
    unit = found.group("unit")
    return Money(str(value), found.span(), _CURRENCIES.get(unit, "BRL")) if value > 0 else None
