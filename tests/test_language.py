"""Guess whether a message is Portuguese or English."""

from __future__ import annotations

import pytest

from graphs.language import Language, detect_language


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Oi, tudo bem?", "pt"),
        ("Quem é você?", "pt"),
        ("Bom dia! Quero marcar um horário", "pt"),
        ("Hi, who are you?", "en"),
        ("Hello, who are you?", "en"),
        ("Can you help me with my order?", "en"),
        ("How much did I spend yesterday?", "en"),
        ("ok", "pt"),
        ("", "pt"),
    ],
)
def test_detect_language(text: str, language: Language) -> None:
    assert detect_language(text) == language


@pytest.mark.parametrize(
    ("text", "default", "language"),
    [
        ("", "en", "en"),
        ("ok", "en", "en"),
        ("Oi, tudo bem?", "en", "pt"),
        ("Hello, who are you?", "pt", "en"),
    ],
)
def test_detect_language_default(text: str, default: Language, language: Language) -> None:
    assert detect_language(text, default=default) == language


def test_portuguese_only_characters_count_as_portuguese() -> None:
    assert detect_language("ação", default="en") == "pt"
    assert detect_language("São Paulo") == "pt"


def test_tie_returns_default() -> None:
    assert detect_language("oi hello", default="en") == "en"
    assert detect_language("oi hello", default="pt") == "pt"
