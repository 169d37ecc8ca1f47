"""Talk to the local Chat Completions server through the real ChatOpenAI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from enum import StrEnum
from functools import reduce
from typing import Literal

import httpx
import openai
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from graphs.offline.llm_server import ChatCompletionsServer
from graphs.offline.model import OfflineResponder, ensure_offline_server
from graphs.offline.schema import instance_from_schema
from tests.fakes import ScriptedModel


class Mood(StrEnum):
    HAPPY = "happy"
    SAD = "sad"


class Address(BaseModel):
    city: str
    zip_code: str | None = None


class Contact(BaseModel):
    name: str = Field(description="Full name")
    age: int
    kind: Literal["customer", "supplier"]
    mood: Mood
    vip: bool
    tags: list[str]
    address: Address


class Weather(BaseModel):
    city: str
    celsius: float


@tool
def get_weather(city: str, unit: Literal["c", "f"] = "c") -> str:
    """Get the weather for a city."""
    return f"sunny in {city}"


@pytest.fixture
def script() -> ScriptedModel:
    return ScriptedModel()


@pytest.fixture
def server(script: ScriptedModel) -> Iterator[ChatCompletionsServer]:
    with ChatCompletionsServer(script) as srv:
        yield srv


@pytest.fixture
def offline() -> Iterator[ChatCompletionsServer]:
    with ChatCompletionsServer(OfflineResponder()) as srv:
        yield srv


def llm_for(server: ChatCompletionsServer, **kwargs: object) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server.base_url, api_key="test", model="scripted", max_retries=0, **kwargs
    )


# --------------------------------------------------------------------------- #
# Scripted model through ChatOpenAI
# --------------------------------------------------------------------------- #


def test_plain_invoke_returns_scripted_text(
    server: ChatCompletionsServer, script: ScriptedModel
) -> None:
    script.say("Olá, Maria!")

    answer = llm_for(server).invoke("oi")

    assert answer.content == "Olá, Maria!"
    assert answer.response_metadata["finish_reason"] == "stop"
    assert answer.response_metadata["model_name"] == "scripted"
    assert answer.response_metadata["id"].startswith("chatcmpl-")
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["total_tokens"] > 0
    assert script.remaining == 0
    [request] = server.requests
    assert request["model"] == "scripted"
    assert request["messages"] == [{"role": "user", "content": "oi"}]


def test_bind_tools_returns_parsed_tool_calls(
    server: ChatCompletionsServer, script: ScriptedModel
) -> None:
    script.call_tool("get_weather", {"city": "Recife", "unit": "c"}, id="call_1")

    answer = llm_for(server).bind_tools([get_weather]).invoke("How is the weather in Recife?")

    assert answer.tool_calls == [
        {
            "name": "get_weather",
            "args": {"city": "Recife", "unit": "c"},
            "id": "call_1",
            "type": "tool_call",
        }
    ]
    assert answer.response_metadata["finish_reason"] == "tool_calls"
    [request] = script.requests
    assert [t["function"]["name"] for t in request["tools"]] == ["get_weather"]


def test_several_tool_calls_in_one_turn(
    server: ChatCompletionsServer, script: ScriptedModel
) -> None:
    script.call_tools([("get_weather", {"city": "Recife"}), ("get_weather", {"city": "Natal"})])

    answer = llm_for(server).bind_tools([get_weather]).invoke("Recife and Natal?")

    assert [c["args"]["city"] for c in answer.tool_calls] == ["Recife", "Natal"]
    assert len({c["id"] for c in answer.tool_calls}) == 2


def test_structured_output_json_schema(
    server: ChatCompletionsServer, script: ScriptedModel
) -> None:
    script.structured({"city": "Recife", "celsius": 31.5})

    result = llm_for(server).with_structured_output(Weather).invoke("weather?")

    assert result == Weather(city="Recife", celsius=31.5)
    [request] = script.requests
    assert request["response_format"]["type"] == "json_schema"


def test_structured_output_function_calling(
    server: ChatCompletionsServer, script: ScriptedModel
) -> None:
    script.call_tool("Weather", {"city": "Natal", "celsius": 29})

    result = (
        llm_for(server)
        .with_structured_output(Weather, method="function_calling")
        .invoke("weather?")
    )

    assert result == Weather(city="Natal", celsius=29)
    [request] = script.requests
    assert request["tool_choice"] == {"type": "function", "function": {"name": "Weather"}}


def test_streaming_text_concatenates(server: ChatCompletionsServer, script: ScriptedModel) -> None:
    text = "Claro! Posso ajudar com  isso.\nO que você precisa?"
    script.say(text)

    chunks = list(llm_for(server, stream_usage=True).stream("oi"))

    assert len(chunks) > 3
    assert "".join(str(c.content) for c in chunks) == text
    merged = reduce(lambda a, b: a + b, chunks)
    assert isinstance(merged, AIMessageChunk)
    assert merged.response_metadata["finish_reason"] == "stop"
    assert merged.usage_metadata is not None
    assert merged.usage_metadata["total_tokens"] > 0
    [request] = server.requests
    assert request["stream"] is True
    assert request["stream_options"] == {"include_usage": True}


def test_streaming_without_usage(server: ChatCompletionsServer, script: ScriptedModel) -> None:
    script.say("ok then")

    chunks = list(llm_for(server).stream("oi"))

    assert "".join(str(c.content) for c in chunks) == "ok then"
    assert "stream_options" not in server.requests[0]


def test_streamed_tool_call_assembles(server: ChatCompletionsServer, script: ScriptedModel) -> None:
    args = {"city": "São Paulo, a cidade que nunca dorme", "unit": "f"}
    script.call_tool("get_weather", args, id="call_stream")

    chunks = list(llm_for(server).bind_tools([get_weather]).stream("weather?"))

    merged = reduce(lambda a, b: a + b, chunks)
    assert isinstance(merged, AIMessageChunk)
    assert merged.tool_calls == [
        {"name": "get_weather", "args": args, "id": "call_stream", "type": "tool_call"}
    ]
    assert merged.response_metadata["finish_reason"] == "tool_calls"


def test_streamed_structured_output(server: ChatCompletionsServer, script: ScriptedModel) -> None:
    script.structured({"city": "Recife", "celsius": 30})

    results = list(llm_for(server).with_structured_output(Weather).stream("weather?"))

    assert results[-1] == Weather(city="Recife", celsius=30)
    assert server.requests[0]["stream"] is True


async def _ainvoke(llm: ChatOpenAI) -> str:
    return str((await llm.ainvoke("oi")).content)


def test_async_invoke(server: ChatCompletionsServer, script: ScriptedModel) -> None:
    import asyncio

    script.say("async ok")

    assert asyncio.run(_ainvoke(llm_for(server))) == "async ok"


def test_exhausted_script_raises(server: ChatCompletionsServer, script: ScriptedModel) -> None:
    script.say("only one")
    llm = llm_for(server)
    llm.invoke("first")

    with pytest.raises(openai.InternalServerError, match="no response left for: second"):
        llm.invoke([HumanMessage("second")])


def test_scripted_model_raises_directly_when_empty() -> None:
    script = ScriptedModel()
    with pytest.raises(AssertionError, match="no response left for: hello"):
        script({"messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]})
    assert script.requests == []


# --------------------------------------------------------------------------- #
# Offline responder
# --------------------------------------------------------------------------- #


def test_offline_answers_portuguese(offline: ChatCompletionsServer) -> None:
    answer = llm_for(offline).invoke("Oi, tudo bem?")

    text = str(answer.content)
    assert "modelo offline" in text
    assert "não consigo pensar" in text
    assert '"Oi, tudo bem?"' in text
    assert "OPENAI_API_KEY" in text


def test_offline_answers_english(offline: ChatCompletionsServer) -> None:
    answer = llm_for(offline).invoke("Hello, who are you?")

    text = str(answer.content)
    assert "offline model" in text
    assert "can't really think" in text
    assert '"Hello, who are you?"' in text
    assert "OPENAI_API_KEY" in text


def test_offline_streams_too(offline: ChatCompletionsServer) -> None:
    chunks = list(llm_for(offline).stream("Hi, who are you?"))

    assert "offline model" in "".join(str(c.content) for c in chunks)


def test_offline_ignores_unforced_tools(offline: ChatCompletionsServer) -> None:
    answer = llm_for(offline).bind_tools([get_weather]).invoke("Qual o clima em Recife?")

    assert answer.tool_calls == []
    assert "modelo offline" in str(answer.content)


def test_offline_reads_content_parts_and_shortens(offline: ChatCompletionsServer) -> None:
    long_text = "Preciso de ajuda com o meu pedido " + "muito " * 40
    message = HumanMessage(content=[{"type": "text", "text": long_text}])

    text = str(llm_for(offline).invoke([message]).content)

    assert "modelo offline" in text
    assert "Preciso de ajuda com o meu pedido" in text
    assert "…" in text
    assert len(text) < 400


def test_offline_structured_output_json_schema(offline: ChatCompletionsServer) -> None:
    result = llm_for(offline).with_structured_output(Contact).invoke("Cadastre o João")

    assert isinstance(result, Contact)
    assert result.kind == "customer"
    assert result.mood is Mood.HAPPY
    assert isinstance(result.address, Address)


def test_offline_structured_output_function_calling(offline: ChatCompletionsServer) -> None:
    result = (
        llm_for(offline)
        .with_structured_output(Contact, method="function_calling")
        .invoke("Cadastre o João")
    )

    assert isinstance(result, Contact)
    assert result.kind == "customer"


def test_offline_structured_output_streaming(offline: ChatCompletionsServer) -> None:
    results = list(llm_for(offline).with_structured_output(Contact).stream("Cadastre o João"))

    assert isinstance(results[-1], Contact)


def test_instance_from_schema_handles_refs_and_unions() -> None:
    schema = {
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date-time"},
            "count": {"type": "integer", "minimum": 2},
            "pair": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 1},
            "maybe": {"anyOf": [{"$ref": "#/$defs/Item"}, {"type": "null"}]},
            "either": {"type": ["null", "number"]},
            "fixed": {"const": "x"},
            "optional": {"type": "string"},
        },
        "required": ["when", "count", "pair", "maybe", "either", "fixed"],
        "$defs": {
            "Item": {
                "type": "object",
                "properties": {"ok": {"type": "boolean"}},
                "required": ["ok"],
            }
        },
    }

    assert instance_from_schema(schema) == {
        "when": "1970-01-01T00:00:00Z",
        "count": 2,
        "pair": [{"ok": False}],
        "maybe": {"ok": False},
        "either": 0,
        "fixed": "x",
    }


def test_instance_from_schema_stops_on_recursion() -> None:
    schema = {
        "$ref": "#/$defs/Node",
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {"next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]}},
                "required": ["next"],
            }
        },
    }

    value = instance_from_schema(schema)

    depth = 0
    while value is not None:
        value = value["next"]
        depth += 1
    assert depth > 1


# --------------------------------------------------------------------------- #
# Raw HTTP
# --------------------------------------------------------------------------- #


def _assert_openai_error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error


def test_non_json_body_is_400(offline: ChatCompletionsServer) -> None:
    response = httpx.post(
        f"{offline.base_url}/chat/completions",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )

    error = _assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"


def test_missing_messages_is_400(offline: ChatCompletionsServer) -> None:
    response = httpx.post(f"{offline.base_url}/chat/completions", json={"model": "x"})

    error = _assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages"


def test_empty_messages_is_400(offline: ChatCompletionsServer) -> None:
    response = httpx.post(f"{offline.base_url}/chat/completions", json={"messages": []})

    _assert_openai_error(response, 400)


def test_responder_error_is_500(server: ChatCompletionsServer) -> None:
    response = httpx.post(
        f"{server.base_url}/chat/completions",
        json={"model": "x", "messages": [{"role": "user", "content": "anyone?"}]},
    )

    error = _assert_openai_error(response, 500)
    assert "no response left for: anyone?" in str(error["message"])


def test_unknown_path_is_404(offline: ChatCompletionsServer) -> None:
    _assert_openai_error(httpx.get(f"{offline.base_url}/nope"), 404)


def test_raw_completion_shape(offline: ChatCompletionsServer) -> None:
    response = httpx.post(
        f"{offline.base_url}/chat/completions",
        json={"model": "gpt-test", "messages": [{"role": "user", "content": "Hi there"}]},
    )

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["model"] == "gpt-test"
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert "offline model" in choice["message"]["content"]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_raw_stream_shape(offline: ChatCompletionsServer) -> None:
    request = {
        "model": "gpt-test",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "Hi there"}],
    }
    with httpx.stream("POST", f"{offline.base_url}/chat/completions", json=request) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line]

    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] > 0


def test_models_and_healthz(offline: ChatCompletionsServer) -> None:
    assert httpx.get(offline.base_url.removesuffix("/v1") + "/healthz").json() == {"status": "ok"}
    models = httpx.get(f"{offline.base_url}/models").json()
    assert models["object"] == "list"
    assert all(m["object"] == "model" for m in models["data"])


def test_server_lifecycle() -> None:
    server = ChatCompletionsServer(OfflineResponder())
    with pytest.raises(RuntimeError):
        _ = server.base_url
    assert server.start() is server
    assert server.start() is server
    assert server.running
    url = server.base_url
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    server.stop()
    server.stop()
    assert not server.running
    with pytest.raises(httpx.TransportError):
        httpx.get(url.removesuffix("/v1") + "/healthz")


def test_ensure_offline_server_is_idempotent() -> None:
    first = ensure_offline_server()
    second = ensure_offline_server()

    assert first == second
    assert httpx.get(first.removesuffix("/v1") + "/healthz").status_code == 200
