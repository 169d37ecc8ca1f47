"""The offline model's lexicon: text folding and the Portuguese and English cues it looks for.

Matching runs on a *folded* copy of the text (lower case, accents removed, same length), so a
pattern's span can be cut from the original text to keep what the user wrote ("amanhã às 9h").
Shared by :mod:`graphs.offline.nlu` (routes, facts) and :mod:`graphs.offline.tool_calls`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

# --------------------------------------------------------------------------- #
# Text helpers
# --------------------------------------------------------------------------- #


_QUOTES = {"’": "'", "‘": "'", "´": "'", "`": "'"}


def fold(text: str) -> str:
    """Lower-case ``text`` and drop accents, keeping one character per character."""
    out = []
    for char in text:
        base = "".join(
            c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)
        )
        lowered = base.lower() if len(base) == 1 else char.lower()
        out.append(_QUOTES.get(lowered, lowered) if len(lowered) == 1 else char)
    return "".join(out)


def rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.VERBOSE)


def clean(text: str) -> str:
    """Collapse whitespace and trim punctuation and filler from both ends."""
    text = " ".join(text.split())
    text = re.sub(r"^[\s,.;:!?-]+|[\s,.;:!?-]+$", "", text)
    text = re.sub(r"(?i)[\s,]+(por favor|pfv|pls|please)$", "", text)
    return text.strip(" ,.;:!?")


def cut(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """Return ``text`` without the given spans (each replaced by a space)."""
    pieces, last = [], 0
    for start, end in sorted(spans):
        if start < last:
            continue
        pieces.append(text[last:start])
        last = end
    pieces.append(text[last:])
    return " ".join(pieces)


WEEKDAYS_PT = r"segunda|terca|quarta|quinta|sexta|sabado|domingo"
WEEKDAYS_EN = r"monday|tuesday|wednesday|thursday|friday|saturday|sunday"
MONTHS_PT = (
    "janeiro", "fevereiro", "marco", "abril", "maio", "junho",
    "julho", "agosto", "setembro", "outubro", "novembro", "dezembro",
)  # fmt: skip
MONTHS_EN = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
_MONTH_EN = (
    r"(?:january|february|march|april|may|june|july|august|september|october|november"
    r"|december|jan|feb|mar|apr|jun|jul|aug|sept?|oct|nov|dec)"
)
_MONTH_PT = "(?:" + "|".join(MONTHS_PT) + ")"

DATE = rx(
    rf"""\b(?:
        \d{{4}}-\d{{2}}-\d{{2}}
      | \d{{1,2}}/\d{{1,2}}(?:/\d{{2,4}})?
      | \d{{1,2}}\s+de\s+{_MONTH_PT}(?:\s+de\s+\d{{4}})?
      | {_MONTH_EN}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?\b(?:,?\s+\d{{4}})?
      | \d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH_EN}\b(?:,?\s+\d{{4}})?
    )"""
)
RELATIVE_DAY = rx(
    rf"""\b(?:
        anteontem|ontem|hoje
      | the\s+day\s+before\s+yesterday|yesterday|today
      | (?:{WEEKDAYS_PT})(?:-feira)?\s+passad[ao]
      | (?:last|past)\s+(?:{WEEKDAYS_EN})
    )\b"""
)

# --------------------------------------------------------------------------- #
# Intent cues
# --------------------------------------------------------------------------- #

HUMAN = rx(
    r"""\b(?:
        (?:falar|conversar|fale|falo)\s+com\s+(?:um|uma|o|a|algum|alguma)?\s*
            (?:atendente|humano|humana|pessoa|operador|operadora|suporte|gerente)
      | (?:quero|preciso\s+de|chama|chame|chamar|me\s+passa\s+para|transfere)\s+
            (?:(?:para|pra)\s+)?(?:um|uma|o|a)?\s*(?:atendente|humano|humana|pessoa|operador)
      | atendimento\s+humano|atendente
      | (?:talk|speak|chat)\s+(?:to|with)\s+(?:a|an|the|some)?\s*(?:real\s+)?
            (?:person|human|agent|representative|operator|someone)
      | (?:get|want|need)\s+(?:me\s+)?(?:a|an)?\s*(?:real\s+)?(?:human|person|agent)
      | human\s+(?:agent|support)|real\s+person
    )\b"""
)
REMINDER = rx(
    r"""(?:
        \bme\s+lembr\w*|\blembr\w*-me\b|\blembrete\w*|\bme\s+avis\w*|\bavis\w*-me\b
      | \bremind\w*|\bset\s+(?:a|an)\s+alarm\b
    )"""
)
MONEY = rx(
    r"""(?:
        \b(?:gastei|gastou|gastamos|gasto|gastos|gastar|paguei|pagamos|comprei|compramos
           |recebi|recebemos|ganhei|receita|receitas|salario|saldo|despesa|despesas|dinheiro
           |reais|extrato|lancamento|lancamentos|transacao|transacoes|orcamento|financas
           |spent|spend|spending|paid|bought|received|earned|income|salary|paycheck|balance
           |expense|expenses|budget|money|transaction|transactions|finances|dollars|bucks
           |entrou|entraram|reembolso|sobrou|custou|custa|cost|costs|refund)\b
      | r\$|us\$|\$\s*\d|€\s*\d|\d\s*(?:reais|real)\b
      | (?<![\d:/.,])\d+[.,]\d{2}\b(?![.,/:]\d)
    )"""
)
PEOPLE_DATES = rx(
    r"""\b(?:
        aniversario\w*|niver|bodas|datas?\s+importante\w*|proximas\s+datas|lembrar
      | mae|pai|irma|irmao|esposa|marido|filho|filha|namorad[ao]|noiv[ao]|av[oó]|tio|tia
      | prim[ao]|sogr[ao]|cunhad[ao]|sobrinh[ao]|net[ao]|amig[ao]|chefe
      | birthday\w*|bday|anniversar\w*|upcoming|important\s+dates?
      | mom|mum|mother|dad|father|sister|brother|wife|husband|son|daughter|girlfriend
      | boyfriend|fiance|fiancee|grandma|grandpa|grandmother|grandfather|aunt|uncle|cousin
      | nephew|niece|boss|friend
    )\b"""
)
MEMORY_SAVE = rx(
    r"""\b(?:
        (?:se\s+)?lembr[ae](?:-se)?\s+(?:de\s+)?que|guard[ae]\s+(?:isso|que|essa)
      | anot[ae]\s+(?:ai\s+)?que|nao\s+esquec[ae]\s+(?:de\s+)?que|memoriz[ae]
      | remember\s+(?:that|this)|don'?t\s+forget\s+(?:that|this)|keep\s+in\s+mind
      | note\s+that|save\s+(?:this|that)
    )\b"""
)
MEMORY_ASK = rx(
    r"""\b(?:
        o\s+que\s+(?:voce|vc|tu)\s+(?:sabe|lembra)|(?:voce|vc)\s+(?:se\s+)?lembra
      | o\s+que\s+(?:sabe|lembra)|qual\s+(?:e\s+)?(?:o|a)\s+(?:meu|minha)
      | what\s+do\s+you\s+(?:know|remember)|do\s+you\s+remember
      | what(?:'s|\s+is)\s+my
    )\b"""
)
