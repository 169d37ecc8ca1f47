"""What the offline model says, in Portuguese or English.

Two kinds of text: the plain offline line (it says it is an offline model, what the user said,
what it can do for this user and how to get a real model), and the confirmation of a tool's
result ("Anotei: despesa de R$ 45,90 em mercado (ontem).") that ends a specialist's turn. Tool
results come from :mod:`tools` as short English text or JSON; they are read, not just echoed,
so the user hears their language.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from graphs.language import Language

OFFLINE_LINES: dict[Language, dict[str, str]] = {
    "pt": {
        "intro": (
            "Olá! Sou um modelo offline (nenhuma chave de API configurada), "
            "então não consigo pensar de verdade."
        ),
        "quote": 'Você disse: "{text}".',
        "no_text": "Recebi sua mensagem.",
        "hint": "Configure OPENAI_API_KEY (ou OPENAI_BASE_URL) para usar um modelo real.",
        "offer": "Com um modelo real eu poderia: {offer}.",
    },
    "en": {
        "intro": "Hi! I'm an offline model (no API key configured), so I can't really think.",
        "quote": 'You said: "{text}".',
        "no_text": "I got your message.",
        "hint": "Set OPENAI_API_KEY (or OPENAI_BASE_URL) to use a real model.",
        "offer": "With a real model I could: {offer}.",
    },
}

_EXAMPLES: tuple[tuple[str, dict[Language, str]], ...] = (
    (
        "record_transaction",
        {
            "pt": 'Para anotar um gasto, escreva por exemplo "gastei 45,90 no mercado ontem"; '
            'para o saldo, "quanto gastei este mês?".',
            "en": 'To record an expense, write for example "I spent 45.90 on groceries '
            'yesterday"; for your balance, "how much did I spend this month?".',
        },
    ),
    (
        "add_important_date",
        {
            "pt": 'Experimente: "o aniversário da minha mãe é 12 de março" ou '
            '"quais são os próximos aniversários?".',
            "en": 'Try: "my mom\'s birthday is March 12" or "any upcoming birthdays?".',
        },
    ),
    (
        "schedule_reminder",
        {
            "pt": 'Para um lembrete: "me lembra de ligar pro João amanhã às 9h".',
            "en": 'For a reminder: "remind me to call John tomorrow at 9am".',
        },
    ),
    (
        "save_memory",
        {
            "pt": 'Para eu guardar algo: "lembre que eu sou vegetariano"; '
            'para consultar: "o que você sabe sobre mim?".',
            "en": 'To have me keep something: "remember that I\'m vegetarian"; '
            'to ask: "what do you know about me?".',
        },
    ),
)


def shorten(text: str, limit: int = 80) -> str:
    """Collapse whitespace in ``text`` and cut it to ``limit`` characters with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


def offline_line(text: str, language: Language, offer: str, tools: set[str]) -> str:
    """Say plainly that this is an offline model, quote ``text`` and list what it can do."""
    strings = OFFLINE_LINES[language]
    shortened = shorten(text)
    parts = [strings["intro"]]
    parts.append(strings["quote"].format(text=shortened) if shortened else strings["no_text"])
    if offer:
        parts.append(strings["offer"].format(offer=offer))
    parts += [example[language] for name, example in _EXAMPLES if name in tools]
    parts.append(strings["hint"])
    return " ".join(parts)


# --------------------------------------------------------------------------- #
# Tool results
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class ToolOutcome:
    """One tool call of the turn and what the tool answered."""

    name: str
    args: dict[str, Any]
    result: str


_ERROR_PREFIX = re.compile(r"^\s*error\b:?\s*", re.IGNORECASE)
_ERROR_WRAPPER = re.compile(r"^\w*(?:Error|Exception)\((['\"])(.*)\1\)$", re.DOTALL)

_PERIODS: dict[str, dict[Language, str]] = {
    "today": {"pt": "hoje", "en": "today"},
    "this_week": {"pt": "esta semana", "en": "this week"},
    "last_week": {"pt": "semana passada", "en": "last week"},
    "this_month": {"pt": "este mês", "en": "this month"},
    "last_month": {"pt": "mês passado", "en": "last month"},
    "this_year": {"pt": "este ano", "en": "this year"},
}
_KINDS: dict[str, dict[Language, str]] = {
    "expense": {"pt": "despesa", "en": "expense"},
    "income": {"pt": "receita", "en": "income"},
    "birthday": {"pt": "aniversário", "en": "birthday"},
    "anniversary": {"pt": "aniversário de casamento", "en": "anniversary"},
    "other": {"pt": "data", "en": "date"},
}


def is_error(result: str) -> bool:
    """Tell whether a tool's answer reports an error (the ToolNode starts those "Error")."""
    if _ERROR_PREFIX.match(result):
        return True
    parsed = _json(result)
    return isinstance(parsed, dict) and "error" in parsed


def tool_results_reply(outcomes: list[ToolOutcome], language: Language) -> str:
    """Tell the user, in ``language``, what the turn's tool calls did."""
    return " ".join(_one_result(outcome, language) for outcome in outcomes).strip()


def _one_result(outcome: ToolOutcome, language: Language) -> str:
    if is_error(outcome.result):
        return _error(outcome.result, language)
    args, pt = outcome.args, language == "pt"
    parsed = _json(outcome.result)
    number = re.search(r"#\s*(\d+)", outcome.result)
    ref = f"#{number.group(1)}" if number else ""
    name = outcome.name
    if name == "record_transaction":
        kind = _KINDS.get(str(args.get("kind")), _KINDS["expense"])[language]
        money = _money(str(args.get("amount", "")), str(args.get("currency", "BRL")), language)
        what = args.get("description") or args.get("category") or ""
        where = (" em " if pt else " for ") + str(what) if what else ""
        when = f" ({args['date']})" if args.get("date") else ""
        lead = "Anotei: " + kind + " de" if pt else "Recorded: " + kind + " of"
        entry = (", lançamento " if pt else ", entry ") + ref if ref else ""
        return f"{lead} {money}{where}{when}{entry}."
    if name == "get_balance" and isinstance(parsed, dict):
        return _balance(parsed, language)
    if name == "spending_by_category" and isinstance(parsed, dict):
        return _categories(parsed, language)
    if name == "list_transactions" and isinstance(parsed, dict):
        return _transactions(parsed.get("transactions") or [], language)
    if name == "offer_entries_to_delete":
        return "Qual lançamento você quer apagar?" if pt else "Which entry should I delete?"
    if name == "propose_reminder":
        text, when = args.get("text", ""), args.get("when", "")
        if pt:
            return f"Quer que eu te lembre de {text} ({when})?"
        return f"Do you want me to remind you to {text} ({when})?"
    if name == "delete_transaction":
        entry = f"#{args.get('transaction_id', '')}"
        return f"Pronto, apaguei o lançamento {entry}." if pt else f"Done, I deleted entry {entry}."
    if name == "add_important_date":
        kind = _KINDS.get(str(args.get("kind")), _KINDS["other"])[language]
        person, day = args.get("person_name", ""), args.get("date", "")
        if pt:
            return f"Anotei: {kind} de {person} em {day}. Eu te aviso quando estiver chegando!"
        return f"Saved: {person}'s {kind} on {day}. I'll let you know when it's coming up!"
    if name == "schedule_reminder":
        text, when = args.get("text", ""), args.get("when", "")
        due = re.search(r"\bfor (\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2})", outcome.result)
        if due:
            when = f"{when}: {_day(due.group(1), language)} {due.group(2)}"
        if pt:
            return f"Combinado! Vou te lembrar de {text} ({when})" + (
                f", lembrete {ref}." if ref else "."
            )
        return f"Done! I'll remind you to {text} ({when})" + (f", reminder {ref}." if ref else ".")
    if name == "cancel_reminder":
        reminder = f"#{args.get('reminder_id', '')}"
        if pt:
            return f"Pronto, cancelei o lembrete {reminder}."
        return f"Done, I cancelled reminder {reminder}."
    if name == "remember_person":
        who = args.get("name", "")
        relation = f" ({args['relation']})" if args.get("relation") else ""
        return f"Anotei: {who}{relation}." if pt else f"Noted: {who}{relation}."
    if name == "save_memory":
        text = args.get("text", "")
        return f"Pode deixar, vou lembrar: {text}" if pt else f"Got it, I'll remember: {text}"
    if name == "search_memories":
        return _memories(parsed, language)
    if name == "request_human":
        return (
            "Certo, vou chamar uma pessoa da equipe."
            if pt
            else "Sure, I'm bringing in a person from the team."
        )
    if name == "upcoming_dates" and isinstance(parsed, dict):
        return _upcoming(parsed, args, language)
    if name == "list_reminders" and isinstance(parsed, dict):
        return _reminders(parsed, language)
    return f"{'Pronto' if pt else 'Done'}: {_render(parsed, outcome.result, language)}"


def _error(result: str, language: Language) -> str:
    reason = _ERROR_PREFIX.sub("", result.strip())
    reason = reason.split("\n Please fix your mistakes", 1)[0].strip()
    wrapped = _ERROR_WRAPPER.match(reason)
    reason = shorten(wrapped.group(2) if wrapped else reason, 200).rstrip(".")
    if language == "pt":
        return f"Desculpe, não consegui fazer isso: {reason}. Pode tentar de outro jeito?"
    return f"Sorry, I couldn't do that: {reason}. Could you try another way?"


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def _money(amount: str, currency: str, language: Language) -> str:
    symbol = {"BRL": "R$ ", "USD": "US$ " if language == "pt" else "$", "EUR": "€ "}.get(
        currency.upper(), ""
    )
    text = amount
    if re.fullmatch(r"-?\d+(?:[.,]\d+)?", amount):
        value = float(amount.replace(",", "."))
        text = f"{value:,.2f}"
        if language == "pt":
            text = text.replace(",", "_").replace(".", ",").replace("_", ".")
    return f"{symbol}{text}" if symbol else f"{text} {currency.upper()}"


def _day(iso: str, language: Language) -> str:
    found = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", iso)
    if not found or language == "en":
        return iso
    return f"{found.group(3)}/{found.group(2)}/{found.group(1)}"


def _period(data: dict[str, Any], language: Language) -> str:
    period = str(data.get("period", ""))
    label = _PERIODS.get(period, {}).get(language, period)
    if data.get("from") and data.get("to"):
        start, end = _day(str(data["from"]), language), _day(str(data["to"]), language)
        label += f" ({start} a {end})" if language == "pt" else f" ({start} to {end})"
    return label


def _balance(data: dict[str, Any], language: Language) -> str:
    pt, label = language == "pt", _period(data, language)
    totals = [t for t in data.get("totals") or [] if isinstance(t, dict)]
    if not totals:
        return f"Não encontrei lançamentos em {label}." if pt else f"No entries in {label}."
    lines = []
    for t in totals:
        cur = str(t.get("currency", "BRL"))
        income, expenses, balance = (
            _money(str(t.get(key, "0")), cur, language) for key in ("income", "expenses", "balance")
        )
        if pt:
            lines.append(f"receitas {income}, despesas {expenses}, saldo {balance}")
        else:
            lines.append(f"income {income}, expenses {expenses}, balance {balance}")
    return f"{'Seu resumo de' if pt else 'Your summary for'} {label}: {'; '.join(lines)}."


def _categories(data: dict[str, Any], language: Language) -> str:
    pt, label = language == "pt", _period(data, language)
    rows = [c for c in data.get("categories") or [] if isinstance(c, dict)]
    if not rows:
        return f"Não encontrei gastos em {label}." if pt else f"No expenses in {label}."
    parts = [
        f"{c.get('category')} "
        + _money(str(c.get("total", "0")), str(c.get("currency", "BRL")), language)
        for c in rows
    ]
    heading = "Seus gastos por categoria em" if pt else "Your spending by category for"
    return f"{heading} {label}: {'; '.join(parts)}."


def _transactions(rows: list[Any], language: Language) -> str:
    pt = language == "pt"
    entries = [r for r in rows if isinstance(r, dict)]
    if not entries:
        return "Você ainda não tem lançamentos." if pt else "You have no entries yet."
    lines = []
    for r in entries:
        kind = _KINDS.get(str(r.get("kind")), _KINDS["expense"])[language]
        money = _money(str(r.get("amount", "")), str(r.get("currency", "BRL")), language)
        what = r.get("description") or r.get("category") or ""
        day = _day(str(r.get("date", "")), language)
        lines.append(f"#{r.get('id')} {day} {kind} {money} {what}".strip())
    heading = "Seus últimos lançamentos" if pt else "Your latest entries"
    return f"{heading}:\n" + "\n".join(lines)


def _upcoming(data: dict[str, Any], args: dict[str, Any], language: Language) -> str:
    pt = language == "pt"
    rows = [d for d in data.get("dates") or [] if isinstance(d, dict)]
    days = args.get("days", 30)
    if not rows:
        return (
            f"Nenhuma data nos próximos {days} dias."
            if pt
            else f"No dates in the next {days} days."
        )
    lines = []
    for d in rows:
        kind = _KINDS.get(str(d.get("kind")), _KINDS["other"])[language]
        what = str(d.get("label") or kind)
        person, day, soon = (
            d.get("person", ""),
            _day(str(d.get("date", "")), language),
            d.get("in_days"),
        )
        if pt:
            line = f"• {day}: {what} de {person}"
            line += " (hoje)" if soon == 0 else f" (em {soon} dias)" if soon is not None else ""
            line += f", {d['years']} anos" if d.get("years") else ""
        else:
            line = f"• {day}: {person}'s {what}"
            line += " (today)" if soon == 0 else f" (in {soon} days)" if soon is not None else ""
            line += f", {d['years']} years" if d.get("years") else ""
        lines.append(line)
    return ("Próximas datas:" if pt else "Upcoming dates:") + "\n" + "\n".join(lines)


def _reminders(data: dict[str, Any], language: Language) -> str:
    pt = language == "pt"
    rows = [r for r in data.get("reminders") or [] if isinstance(r, dict)]
    if not rows:
        return "Você não tem lembretes agendados." if pt else "You have no reminders scheduled."
    lines = []
    for r in rows:
        due = str(r.get("due", ""))
        day, _, clock = due.partition(" ")
        lines.append(f"• #{r.get('id')} {_day(day, language)} {clock}: {r.get('text', '')}")
    return ("Seus lembretes:" if pt else "Your reminders:") + "\n" + "\n".join(lines)


def _memories(parsed: Any, language: Language) -> str:
    pt = language == "pt"
    found = [m.get("memory") for m in parsed or [] if isinstance(m, dict) and m.get("memory")]
    if not found:
        return "Ainda não sei nada sobre isso." if pt else "I don't know anything about that yet."
    heading = "Eis o que eu lembro" if pt else "Here is what I remember"
    return f"{heading}: " + "; ".join(str(m) for m in found) + "."


def _render(parsed: Any, raw: str, language: Language) -> str:
    """Render a tool's JSON (or text) answer as short lines."""
    if parsed is None:
        return shorten(raw, 600)
    if isinstance(parsed, dict):
        lists = [v for v in parsed.values() if isinstance(v, list)]
        if len(lists) == 1:
            parsed = lists[0]
        else:
            return "; ".join(f"{k}: {_scalar(v, language)}" for k, v in parsed.items())
    if isinstance(parsed, list):
        if not parsed:
            return "nada por enquanto." if language == "pt" else "nothing yet."
        return "\n" + "\n".join(f"• {_scalar(item, language)}" for item in parsed)
    return _scalar(parsed, language)


def _scalar(value: Any, language: Language) -> str:
    if isinstance(value, dict):
        parts = []
        for key, item in value.items():
            if item in ("", None, [], {}):
                continue
            text = _day(str(item), language) if isinstance(item, str) else str(item)
            parts.append(f"#{text}" if key == "id" else text)
        return ", ".join(parts)
    if isinstance(value, list):
        return ", ".join(_scalar(v, language) for v in value)
    return _day(str(value), language) if isinstance(value, str) else str(value)
