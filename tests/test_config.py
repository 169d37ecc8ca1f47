"""Configuration is environment only, and `.env.example` documents every variable."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from graphs.settings import LLMSettings
from server.settings import Settings, VoiceSettings
from store.settings import EmbeddingSettings
from tests.conftest import ROOT


def test_env_example_lists_every_setting_with_its_default() -> None:
    text = (ROOT / ".env.example").read_text()
    documented = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, flags=re.MULTILINE))
    for model in (Settings, LLMSettings, EmbeddingSettings, VoiceSettings):
        for name, field in model.model_fields.items():
            assert name.upper() in documented, f"{name.upper()} is missing from .env.example"
            default = field.default
            if default is not None and not isinstance(default, bool):
                assert documented[name.upper()] == str(default).removesuffix(".0") or float(
                    documented[name.upper()]
                ) == float(default), f"{name.upper()}: .env.example says otherwise"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("INBOUND_DEBOUNCE_SECONDS", "-1"),
        ("INBOUND_DEBOUNCE_SECONDS", "60"),
        ("SEND_RATE_PER_SECOND", "0"),
        ("APP_ENV", "staging"),
        ("DB_POOL_TIMEOUT", "soon"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings()
