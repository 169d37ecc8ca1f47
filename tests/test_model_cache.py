"""A process reads the model's settings once and keeps one chat model per configuration, yet a
changed environment (a test's `monkeypatch.setenv`, say) is read again at once."""

from __future__ import annotations

import threading

import pytest

from graphs.models import load_chat_model
from graphs.settings import llm_settings
from store.settings import embedding_settings, forget_settings


def test_settings_are_read_once_while_the_environment_stays_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLM_MODEL", "first")
    monkeypatch.setenv("EMBEDDINGS_DIMS", "384")
    first = llm_settings()
    assert first.llm_model == "first"
    assert llm_settings() is first
    assert embedding_settings() is embedding_settings()

    monkeypatch.setenv("LLM_MODEL", "second")
    monkeypatch.setenv("EMBEDDINGS_DIMS", "512")
    assert llm_settings().llm_model == "second"
    assert embedding_settings().embeddings_dims == 512

    monkeypatch.delenv("LLM_MODEL")
    assert llm_settings().llm_model == "gpt-4o-mini"  # the default again

    again = llm_settings()
    forget_settings()
    assert llm_settings() is not again and llm_settings() == again


def test_one_chat_model_per_configuration_shared_by_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "key-one")
    monkeypatch.setenv("LLM_MAX_RETRIES", "2")
    model = load_chat_model("m")
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(load_chat_model("m"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(found is model for found in seen)
    assert model.root_client is load_chat_model("m").root_client  # one client, one pool

    assert load_chat_model("other") is not model
    once = load_chat_model("m", max_retries=0)
    assert once is not model and once.max_retries == 0 and model.max_retries == 2

    monkeypatch.setenv("OPENAI_API_KEY", "key-two")
    rotated = load_chat_model("m")
    assert rotated is not model
    assert rotated.openai_api_key is not None
    assert rotated.openai_api_key.get_secret_value() == "key-two"
