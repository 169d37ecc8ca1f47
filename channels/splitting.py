"""Split a reply into WhatsApp-sized parts: at paragraphs, then sentences, then words."""

from __future__ import annotations

import re

MAX_BODY = 1600
"""Twilio's limit for one WhatsApp message body, in characters."""

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


def split_body(body: str, limit: int = MAX_BODY) -> list[str]:
    """Return `body` as parts of at most `limit` characters, in order, none empty.

    Paragraph breaks are preferred, then sentence ends, then spaces; a single word longer than
    `limit` (a URL, say) is cut where it must be.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    body = body.strip()
    if len(body) <= limit:
        return [body] if body else []
    parts: list[str] = []
    for piece in _pieces(body, limit):
        if parts and len(parts[-1]) + len(piece.joiner) + len(piece.text) <= limit:
            parts[-1] += piece.joiner + piece.text
        else:
            parts.append(piece.text)
    return parts


class _Piece:
    __slots__ = ("joiner", "text")

    def __init__(self, text: str, joiner: str) -> None:
        self.text, self.joiner = text, joiner


def _pieces(text: str, limit: int) -> list[_Piece]:
    """Break `text` into pieces no longer than `limit`, remembering what joined them."""
    out: list[_Piece] = []
    for paragraph in (p.strip() for p in re.split(r"\n\s*\n", text)):
        if not paragraph:
            continue
        joiner = "\n\n"
        if len(paragraph) <= limit:
            out.append(_Piece(paragraph, joiner))
            continue
        for sentence in (s for s in _SENTENCE_END.split(paragraph) if s):
            if len(sentence) <= limit:
                out.append(_Piece(sentence, joiner))
            else:
                out.extend(
                    _Piece(w, joiner if i == 0 else " ")
                    for i, w in enumerate(_words(sentence, limit))
                )
            joiner = " "
    return out


def _words(sentence: str, limit: int) -> list[str]:
    """Pack the sentence's words into runs of at most `limit`, cutting words that are longer."""
    runs: list[str] = []
    for word in sentence.split():
        while len(word) > limit:
            runs.append(word[:limit])
            word = word[limit:]
        if runs and len(runs[-1]) + 1 + len(word) <= limit:
            runs[-1] += " " + word
        elif word:
            runs.append(word)
    return runs
