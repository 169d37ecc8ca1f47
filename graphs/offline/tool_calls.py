"""Which tool call the offline model makes for a specialist, with which arguments.

Given the user's message and the names of the tools the specialist offers, pick the one call a
model would make (``record_transaction`` with kind, amount, category and the relative date as
written; ``schedule_reminder`` with the text and the time expression; ...), or none. Rules, in
Portuguese and English, over the folded text of :mod:`graphs.offline.lexicon`; amounts and
categories are read by :mod:`graphs.offline.money`, with the tools' own rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from graphs.offline.lexicon import (
    DATE,
    HUMAN,
    MEMORY_ASK,
    MEMORY_SAVE,
    MONEY,
    MONTHS_EN,
    MONTHS_PT,
    RELATIVE_DAY,
    REMINDER,
    WEEKDAYS_EN,
    WEEKDAYS_PT,
    clean,
    cut,
    fold,
    rx,
)
from graphs.offline.money import find_category, find_money


@dataclass(frozen=True)
class ToolGuess:
    """One tool call the offline model makes."""

    name: str
    args: dict[str, Any]


def choose_tool_call(text: str, tools: set[str], today: date | None = None) -> ToolGuess | None:
    """Pick one call among ``tools`` that answers ``text``, or None when nothing fits.

    ``today`` (the user's local date, from the system prompt) turns a month name into
    ``YYYY-MM`` periods.
    """
    folded = fold(text)
    for chooser in (_handoff_call, _finance_call, _relationships_call, _memory_call):
        guess = chooser(text, folded, tools, today)
        if guess is not None and guess.name in tools:
            return guess
    return None


def _handoff_call(text: str, folded: str, tools: set[str], today: date | None) -> ToolGuess | None:
    if "request_human" in tools and HUMAN.search(folded):
        return ToolGuess("request_human", {"reason": f"The user asked for a person: {text}"[:500]})
    return None


# -- finance ------------------------------------------------------------------ #

_DELETE = rx(r"\b(?:apag\w*|exclu\w*|delet\w*|remov\w*|cancel\w*|desfaz\w*|erase|undo)\b")
_ENTRY_ID = rx(
    r"""(?:\#\s*|\bn[o.º°]\s*|\bnumero\s+|\bid\s+|\b(?:lancamento|transacao|gasto|despesa
        |receita|registro|entrada|transaction|entry|expense|income|record|item)\s+(?:\#\s*)?)
        (\d+)\b"""
)
_BY_CATEGORY = rx(
    r"""\b(?:por\s+categoria|categorias|by\s+category|per\s+category|categories|breakdown
      | onde\s+(?:eu\s+)?(?:mais\s+)?gast\w*|em\s+que\s+(?:eu\s+)?gast\w*
      | com\s+o\s+que\s+(?:eu\s+)?(?:mais\s+)?gast\w*|where\s+did\s+i\s+spend
      | what\s+did\s+i\s+spend\s+(?:the\s+most\s+)?on)\b"""
)
_LIST = rx(
    r"""\b(?:extrato|lancamentos|transacoes|transactions|statement|historico|history
      | (?:list\w*|mostr\w*|ver|show)\s+(?:me\s+)?(?:os\s+|as\s+|meus\s+|minhas\s+|my\s+)*
        (?:gastos|despesas|compras|receitas|expenses|purchases|entries|spending)
      | (?:ultim[oa]s|recentes|last|recent)\s+(?:\d+\s+)?
        (?:gastos|despesas|compras|expenses|purchases|entries))\b"""
)
_BALANCE = rx(
    r"""\b(?:saldo|balance|resumo|summary
      | quanto\s+(?:eu\s+)?(?:ja\s+)?(?:gastei|ganhei|recebi|gasto|paguei|tenho)
      | quanto\s+(?:me\s+)?(?:sobrou|sobra|resta)|how\s+much\s+(?:is\s+|do\s+i\s+have\s+)?left
      | how\s+much\s+(?:did|have)\s+i\s+(?:spent|spend|earned|earn|received|receive|paid|pay)
      | how\s+much\s+(?:money\s+)?(?:do\s+i\s+have|i\s+spent))\b"""
)
_INCOME = rx(
    r"""\b(?:recebi|recebemos|ganhei|ganhamos|entrou|entraram|receita|salario|freela\w*
      | received|earned|got\s+paid|income|salary|paycheck|refund)\b"""
)
_FILLER = rx(
    r"""\b(?:eu|hoje|gastei|gastou|paguei|comprei|recebi|ganhei|de|do|da|dos|das|no|na|nos|nas
      | em|com|um|uma|o|a|os|as|pro|pra|para|pelo|pela|meu|minha|reais|real|i|spent|paid
      | bought|received|earned|got|on|at|in|for|the|a|an|my|of|some|dollars|bucks|today)\b"""
)
_PERIODS: tuple[tuple[str, str], ...] = (
    (r"\bmes\s+passado|last\s+month|previous\s+month", "last_month"),
    (r"\bsemana\s+passada|last\s+week|previous\s+week", "last_week"),
    (r"\b(?:est[ea]|ess[ea]|nest[ea]|ness[ea])\s+semana|this\s+week|\bsemana\b|\bweek\b",
     "this_week"),
    (r"\b(?:est[ea]|ess[ea]|nest[ea]|ness[ea])\s+ano|this\s+year|\bano\b|\byear\b", "this_year"),
    (r"\bhoje\b|\btoday\b", "today"),
    (r"\b(?:est[ea]|ess[ea]|nest[ea]|ness[ea])\s+mes|this\s+month|\bmes\b|\bmonth\b",
     "this_month"),
)  # fmt: skip


def _finance_call(text: str, folded: str, tools: set[str], today: date | None) -> ToolGuess | None:
    if not tools & {"record_transaction", "get_balance", "list_transactions"}:
        return None
    limit = re.search(r"\b(?:ultim[oa]s|last|recent\w*)\s+(\d{1,2})\b", folded)
    listing = ToolGuess("list_transactions", {"limit": int(limit.group(1))} if limit else {})
    if _DELETE.search(folded):
        entry = _ENTRY_ID.search(folded)
        if entry:
            return ToolGuess("delete_transaction", {"transaction_id": int(entry.group(1))})
        return (
            ToolGuess("offer_entries_to_delete", {})
            if "offer_entries_to_delete" in tools
            else listing
        )
    if _BY_CATEGORY.search(folded):
        return ToolGuess("spending_by_category", {"period": _period(folded, today)})
    if _LIST.search(folded):
        return listing
    if (_BALANCE.search(folded) or "?" in folded) and MONEY.search(folded):
        return ToolGuess("get_balance", {"period": _period(folded, today)})
    return _transaction(text, folded)


def _period(folded: str, today: date | None) -> str:
    for pattern, period in _PERIODS:
        if re.search(pattern, folded):
            return period
    months = [*MONTHS_PT, *MONTHS_EN]
    found = re.search(r"\b(" + "|".join(months) + r")\b(?:\s+(?:de\s+)?(\d{4}))?", folded)
    if found and today is not None and found.group(1) != "may":
        month = months.index(found.group(1)) % 12 + 1
        year = int(found.group(2)) if found.group(2) else today.year
        if not found.group(2) and month > today.month:
            year -= 1
        return f"{year:04d}-{month:02d}"
    return "this_month"


def _transaction(text: str, folded: str) -> ToolGuess | None:
    dates = [m.span() for m in (*DATE.finditer(folded), *RELATIVE_DAY.finditer(folded))]
    money = find_money(folded, dates)
    if money is None or re.search(r"\b(?:quanto|how\s+much)\b", folded):
        return None
    named = find_category(folded, [*dates, money.span])
    category, keyword = (named[0], text[named[1][0] : named[1][1]]) if named else ("other", "")
    args: dict[str, Any] = {
        "kind": "income" if _INCOME.search(folded) else "expense",
        "amount": money.amount,
        "currency": money.currency,
        "category": category,
        "description": keyword or _description(text, [*dates, money.span]),
    }
    if dates:
        start, end = min(dates)
        if folded[start:end] not in ("hoje", "today"):
            args["date"] = clean(text[start:end])
    return ToolGuess("record_transaction", args)


def _description(text: str, spans: list[tuple[int, int]]) -> str:
    original = cut(text, spans)
    words = [
        original[m.start() : m.end()]
        for m in re.finditer(r"[^\W\d_][\w'-]*", fold(original))
        if not _FILLER.fullmatch(m.group())
    ]
    return " ".join(words[:4])


# -- relationships ------------------------------------------------------------ #

_CANCEL_REMINDER = rx(
    r"""\b(?:cancel\w*|apag\w*|exclu\w*|remov\w*|delet\w*|desmarc\w*|tir\w*)\s+
        (?:o\s+|a\s+|meu\s+|the\s+|my\s+|that\s+|esse\s+|este\s+)?(?:lembrete|reminder)"""
)
_REMINDER_ID = rx(r"\b(?:lembrete|reminder)\s+(?:\#\s*|n[o.º°]\s*|numero\s+)?(\d+)\b|\#\s*(\d+)")
_LIST_REMINDERS = rx(
    r"""\b(?:(?:meus|quais|os|lista\w*|ver|mostr\w*|tenho)\s+(?:os\s+|meus\s+)?lembretes
      | lembretes\s+(?:agendados|ativos|marcados|pendentes)|quais\s+lembretes
      | (?:my|list|show|which|what|pending|scheduled)\s+(?:(?:my|all|the)\s+)*reminders)\b"""
)
_UPCOMING = rx(
    r"""\b(?:proxim[oa]s\s+(?:datas|aniversarios|eventos|compromissos)|datas?\s+importantes?
      | (?:quais|que)\s+(?:sao\s+)?(?:as\s+|os\s+)?(?:datas|aniversarios)|quem\s+faz\s+aniversario
      | aniversarios\s+(?:do|deste|desse|este|esse|da|nesta|nessa)|upcoming|coming\s+up
      | next\s+(?:birthdays|dates|anniversaries)|important\s+dates|whose\s+birthday
      | (?:quando|when)\b.*\b(?:aniversario|birthday|anniversary))\b"""
)
_DATE_KIND = rx(
    r"""\b(?P<anniversary>aniversario\s+de\s+(?:casamento|namoro)|bodas|anniversary
          |wedding\s+anniversary)
      | \b(?P<birthday>aniversario|niver|birthday|bday)\b"""
)
_NUMBER_WORDS = (
    r"\d+|um|uma|dois|duas|tres|cinco|dez|quinze|vinte|trinta|meia|an?|one|two|five|ten"
    r"|half\s+an?"
)
_WHEN = rx(
    rf"""(?:
        \b(?:em|daqui\s+a|dentro\s+de|in)\s+(?:{_NUMBER_WORDS})\s*
          (?:minutos?|min|horas?|h|dias?|semanas?|minutes?|mins?|hours?|hrs?|days?|weeks?)\b
      | (?:\b(?:depois\s+de\s+amanha|amanha|hoje(?:\s+a\s+noite)?|tomorrow|today|tonight
            |(?:na\s+|no\s+)?(?:proxim[ao]\s+)?(?:{WEEKDAYS_PT})(?:-feira)?
            |(?:on\s+|next\s+)?(?:{WEEKDAYS_EN}))\b
          | (?:dia\s+)?{DATE.pattern})
        (?:\s*,?\s*(?:(?:as|a|at|@)\s+\d{{1,2}}(?:[:h]\d{{2}})?\s*(?:h|hs|horas?)?
            \s*(?:am|pm|da\s+manha|da\s+tarde|da\s+noite)?
          | \d{{1,2}}(?::\d{{2}})?\s*(?:am|pm|h)
          | (?:de|pela|in\s+the)\s+(?:manha|tarde|noite|morning|afternoon|evening)
          | a\s+(?:tarde|noite)))?
      | (?:\b(?:as|at)\s+\d{{1,2}}(?:[:h]\d{{2}})?\s*(?:h|hs|horas?|am|pm)?
        | \b\d{{1,2}}(?::\d{{2}})?\s*(?:am|pm)\b|\b\d{{1,2}}h(?:\d{{2}})?\b)
          (?:\s+(?:de\s+)?(?:amanha|hoje|tomorrow|today))?
    )"""
)
_OBLIGATION = rx(r"\b(?:tenho\s+que|tenho\s+de|preciso|i\s+have\s+to|i\s+need\s+to|i\s+must)\b")


def something_to_do_at_a_time(folded: str) -> bool:
    """Whether the user mentions something to do at a time without asking for a reminder
    ("tenho que pagar a luz amanhã às 9h"): the relationships specialist proposes one."""
    return bool(_OBLIGATION.search(folded) and _WHEN.search(folded))


_REMINDER_TRIGGER = rx(
    r"""(?:\bme\s+lembr\w*|\blembr\w*-me|\b(?:cri\w*|coloc\w*|agend\w*|marc\w*|faz\w*)\s+
        (?:um\s+)?lembrete|\blembrete|\bme\s+avis\w*|\bavis\w*-me
      | \bremind\s+me|\bset\s+(?:a|an)\s+(?:reminder|alarm)|\breminder)
        (?:\s+(?:de|para|pra|que|do|da|about|to|that|of|for))?\b:?"""
)
_PERSON_OF = rx(
    r"""(?:aniversario|niver|bodas|anniversary|birthday)(?:\s+de\s+(?:casamento|namoro))?\s+
        (?:d[aoe]|of|com\s+(?:o|a)|with)\s+(?:(?:minha|meu|nossa|nosso|my|our)\s+)?(?P<who>[^\W\d_][\w-]*)"""
)
_PERSON_POSSESSIVE = rx(
    r"\b(?:my\s+)?(?P<who>[^\W\d_][\w-]*)'s\s+(?:\w+\s+)?(?:birthday|bday|anniversary)"
)
_PERSON_VERB = rx(
    r"\b(?P<who>[^\W\d_][\w-]*)\s+(?:faz|fara|completa|makes|turns)\s+(?:aniversario|anos|\d+)"
)
_NAME_IS_RELATION = rx(
    r"""(?:^|\bque\s+|\bthat\s+)(?:o\s+|a\s+)?(?P<name>[^\W\d_][\w-]*)\s+(?:e|is)\s+
        (?:o\s+|a\s+)?(?:meu|minha|my)\s+(?P<relation>[^\W\d_][\w-]*)"""
)
_RELATION_IS_NAME = rx(
    r"""\b(?:meu|minha|my)\s+(?P<relation>[^\W\d_][\w-]*)(?:'s\s+name)?\s+
        (?:se\s+chama|chama-se|e|is|is\s+called|is\s+named)\s+(?:o\s+|a\s+)?
        (?P<name>[^\W\d_][\w-]*)"""
)


def _relationships_call(
    text: str, folded: str, tools: set[str], today: date | None
) -> ToolGuess | None:
    if not tools & {"add_important_date", "upcoming_dates", "schedule_reminder", "list_reminders"}:
        return None
    reminderish = bool(REMINDER.search(folded))
    if _CANCEL_REMINDER.search(folded):
        found = _REMINDER_ID.search(folded)
        if found:
            return ToolGuess(
                "cancel_reminder", {"reminder_id": int(found.group(1) or found.group(2))}
            )
        return ToolGuess("list_reminders", {})
    if _LIST_REMINDERS.search(folded):
        return ToolGuess("list_reminders", {})
    if reminderish and "schedule_reminder" in tools:
        guess = _reminder(text, folded)
        if guess is not None:
            return guess
    if not reminderish and "propose_reminder" in tools and something_to_do_at_a_time(folded):
        guess = _reminder(text, folded, _OBLIGATION)
        if guess is not None:
            return ToolGuess("propose_reminder", guess.args)
    kind = _DATE_KIND.search(folded)
    written = DATE.search(folded)
    if kind and written and not re.search(r"\?\s*$", folded):
        person = _person(text, folded)
        if person:
            return ToolGuess(
                "add_important_date",
                {
                    "person_name": person,
                    "kind": "anniversary" if kind.group("anniversary") else "birthday",
                    "date": clean(text[written.start() : written.end()]),
                },
            )
    if _UPCOMING.search(folded):
        return ToolGuess("upcoming_dates", {"days": _days(folded)})
    for pattern in (_NAME_IS_RELATION, _RELATION_IS_NAME):
        found = pattern.search(folded)
        if found:
            name = text[found.start("name") : found.end("name")]
            relation = text[found.start("relation") : found.end("relation")]
            return ToolGuess(
                "remember_person", {"name": name[:1].upper() + name[1:], "relation": relation}
            )
    return None


def _reminder(
    text: str, folded: str, trigger: re.Pattern[str] = _REMINDER_TRIGGER
) -> ToolGuess | None:
    when = _WHEN.search(folded)
    if when is None:
        return None
    spans = [when.span(), *(m.span() for m in trigger.finditer(folded))]
    rest = clean(cut(text, spans))
    rest = re.sub(r"(?i)^(?:de|para|pra|que|to|about|that|of|por favor|please)\s+", "", rest)
    rest = clean(rest)
    if not rest:
        return None
    return ToolGuess(
        "schedule_reminder", {"text": rest, "when": clean(text[when.start() : when.end()])}
    )


def _person(text: str, folded: str) -> str | None:
    for pattern in (_PERSON_OF, _PERSON_POSSESSIVE, _PERSON_VERB):
        found = pattern.search(folded)
        if found and found.group("who") not in ("meu", "minha", "my", "o", "a", "e"):
            return text[found.start("who") : found.end("who")]
    return None


def _days(folded: str) -> int:
    found = re.search(r"\b(\d{1,3})\s+(?:dias|days)\b", folded)
    if found:
        return max(1, min(366, int(found.group(1))))
    if re.search(r"\b(?:semana|week)\b", folded):
        return 7
    if re.search(r"\b(?:ano|year)\b|\b(?:quando|when)\b", folded):
        return 366
    return 30


# -- memory ------------------------------------------------------------------- #


def _memory_call(text: str, folded: str, tools: set[str], today: date | None) -> ToolGuess | None:
    save = MEMORY_SAVE.search(folded)
    if save and "save_memory" in tools:
        content = clean(text[save.end() :])
        if content:
            return ToolGuess("save_memory", {"text": content[:1].upper() + content[1:]})
    if MEMORY_ASK.search(folded) and "search_memories" in tools:
        about = re.search(r"\b(?:sobre|about)\s+(.+)$", folded)
        topic = clean(text[about.start(1) :]) if about else ""
        if not topic or fold(topic) in ("mim", "me", "eu", "myself"):
            topic = clean(text)
        return ToolGuess("search_memories", {"query": topic})
    return None
