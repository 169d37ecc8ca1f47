"""A process reads the model's settings once and keeps one chat model per configuration, yet a
changed environment (a test's `monkeypatch.setenv`, say) is read again at once."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from graphs.models import ChatModel, load_chat_model
from graphs.offline.llm_server import ChatCompletionsServer
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


class _Answer(BaseModel):
    answer: str


def _wire_bodies(model_class: type[ChatOpenAI], **options: Any) -> list[dict[str, Any]]:
    """The request bodies one model class sends for a tool call, structured output and a
    stream, as the server received them."""

    def respond(request: dict[str, Any]) -> dict[str, Any]:
        return {"content": '{"answer": "sim"}' if request.get("response_format") else "ok"}

    @tool
    def record_transaction(amount: float, category: str, note: str | None = None) -> str:
        """Record an expense."""
        return "ok"

    thread = [SystemMessage("Você é um assistente."), HumanMessage("gastei 30 no almoço"),
              AIMessage("", tool_calls=[{"id": "c1", "name": "record_transaction",
                                         "args": {"amount": 30, "category": "food"}}]),
              ToolMessage("lançamento #1", tool_call_id="c1"), AIMessage("Anotei #1."),
              HumanMessage([{"type": "text", "text": "e quanto foi?"}])]  # fmt: skip
    with ChatCompletionsServer(respond) as server:
        model = model_class(model="m", base_url=server.base_url, api_key="k", **options)  # type: ignore[arg-type]
        assert model.bind_tools([record_transaction]).invoke(thread).content == "ok"
        assert model.with_structured_output(_Answer, method="json_schema").invoke(thread) == (
            _Answer(answer="sim")
        )
        assert "".join(str(c.content) for c in model.stream(thread)) == "ok"
        return server.requests


def test_the_chat_model_sends_the_same_bytes_without_the_clients_type_walk() -> None:
    sent = _wire_bodies(ChatModel)
    assert sent == _wire_bodies(ChatOpenAI)
    assert [len(body["messages"]) for body in sent] == [6, 6, 6]  # not the empty placeholder
    assert sent[0]["tools"][0]["function"]["name"] == "record_transaction"
    assert sent[1]["response_format"]["type"] == "json_schema" and sent[2]["stream"] is True
    # A configured extra_body still goes out beside the messages.
    with_extra = _wire_bodies(ChatModel, extra_body={"ttl": 300})
    assert all(body["ttl"] == 300 and len(body["messages"]) == 6 for body in with_extra)


def test_load_chat_model_builds_the_wire_form_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "key")
    assert type(load_chat_model("m")) is ChatModel
