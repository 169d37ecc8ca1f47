"""A small, dependency-free guess of whether a message is Portuguese or English."""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

Language = Literal["pt", "en"]
"""The languages the assistant speaks (and the channel's notices are written in)."""

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)
_PT_ONLY_CHARS = frozenset("ãõçâêôàáéíóú")


def _words(text: str) -> frozenset[str]:
    """Split a whitespace-separated word list into a set."""
    return frozenset(text.split())


# Words that are (almost) only ever Portuguese or only ever English. Words that
# are common in both ("a", "as", "no", "me", "do", "se") are left out.
_PORTUGUESE_WORDS = _words(
    """
    oi olá ola tudo bem bom boa dia tarde noite obrigado obrigada valeu você voce vc
    vocês voces não nao sim é está esta tá ta estou sou são sao eu meu minha meus
    minhas seu sua o os um uma uns umas da das dos de que com para pra por pelo pela
    quem qual quais quando onde como porque porquê quero queria preciso pode podes
    posso isso isto esse essa aquele muito muita mais mas ou também tambem então
    entao aqui ali agora hoje amanhã amanha ontem ajuda ajudar favor gostaria tchau
    nós nos ele ela eles elas já ja ainda só nada coisa fazer tem tenho ter quanto gastei
    """
)
_ENGLISH_WORDS = _words(
    """
    hi hello hey the is are was were you your yours who what when where why how i
    i'm im my mine we our they their it it's its this that these those and or but
    not with for from of to in on at can could would should will does did don't
    want need please thanks thank yes good morning afternoon evening night bye
    there here about just have has had be been am an help know tell
    much spent today tomorrow yesterday
    delete remove cancel show list any upcoming birthday birthdays anniversary reminder
    reminders remind transaction transactions expense expenses income balance spending
    week month last next paid bought received salary
    """
)


def language_of_locale(locale: str) -> Language:
    """The language a locale ("pt-BR", "en-US") speaks, for when the text says nothing."""
    return "en" if locale.lower().startswith("en") else "pt"


def detect_language(text: str, default: Language = "pt") -> Language:
    """Guess whether ``text`` is Portuguese ("pt") or English ("en").

    Each known Portuguese or English word counts as evidence for its language,
    and so does each Portuguese-only character (``ã``, ``ç``, ``é``...). The
    language with more evidence wins; with no evidence or a tie, ``default``.
    """
    lowered = text.lower()
    words = _WORD.findall(lowered)
    portuguese = sum(word in _PORTUGUESE_WORDS for word in words)
    portuguese += sum(char in _PT_ONLY_CHARS for char in lowered)
    english = sum(word in _ENGLISH_WORDS for word in words)
    if portuguese == english:
        return default
    return "pt" if portuguese > english else "en"


def fold(text: str) -> str:
    """Lower-case `text` and drop its accents, so "Atendente", "ATENDENTE" and "atêndente" match."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))
