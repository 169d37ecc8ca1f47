"""A real model behind `OPENAI_BASE_URL`: what it can do is checked, and routing adapts.

The "server without json_schema" is the local OpenAI-compatible server with
`refuse_json_schema=True`: it answers a `response_format` of type `json_schema` with a 400 and
an error body, as many Ollama and vLLM set-ups do.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from langgraph.checkpoint.memory import InMemorySaver
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from graphs.assistant import build_graph
from graphs.context import Context
from graphs.offline.llm_server import ChatCompletionsServer
from graphs.probe import probe_model
from graphs.structured import forget_methods, structured_method
from nodes import router
from server.jobs.memories import extract_facts
from server.metrics_llm import LLMMetrics
from server.settings import Settings
from store.embedded import free_port
from tests.conftest import BIN
from tests.fakes import ScriptedModel

ALL = ["finance", "relationships", "long_term_memory", "human_handoff", "reminders"]
REFUSAL = "response_format type 'json_schema' is not supported by this server"


@pytest.fixture(autouse=True)
def _fresh_methods() -> Iterator[None]:
    """No test inherits (or leaves behind) a structured-output method learned by another."""
    forget_methods()
    yield
    forget_methods()


@pytest.fixture
def bare(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ScriptedModel, ChatCompletionsServer]]:
    """A scripted model behind a server that refuses json_schema, configured as the model."""
    model = ScriptedModel()
    with ChatCompletionsServer(model, refuse_json_schema=True) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        monkeypatch.setenv("LLM_MODEL", "scripted")
        monkeypatch.setenv("LLM_MAX_RETRIES", "0")
        yield model, server


def _turn(text: str, graph: Any, features: list[str] = ALL) -> dict[str, Any]:
    config: Any = {"configurable": {"thread_id": "t"}, "callbacks": [LLMMetrics()]}
    context = Context(features=features, tenant_id="", user_id="", model="scripted")
    return graph.invoke({"messages": [{"role": "user", "content": text}]}, config, context=context)


def _fallbacks(reason: str) -> float:
    return REGISTRY.get_sample_value("conversa_routing_fallbacks_total", {"reason": reason}) or 0.0


def _kind(request: dict[str, Any]) -> str:
    """How a chat request asked for its answer."""
    if isinstance(request.get("response_format"), dict):
        return str(request["response_format"]["type"])
    choice = request.get("tool_choice")
    if isinstance(choice, dict):
        return "forced:" + choice["function"]["name"]
    return "tools" if request.get("tools") else "plain"


# --- routing ---------------------------------------------------------------------------------


def test_without_json_schema_routing_uses_function_calling_and_reaches_the_specialist(
    bare: tuple[ScriptedModel, ChatCompletionsServer],
) -> None:
    model, server = bare
    graph = build_graph().compile(checkpointer=InMemorySaver())
    model.call_tool("RouteDecision", {"route": "finance", "reason": "money spent"})
    model.say("Anotado: 50 reais no mercado.")

    first = _turn("gastei 50 reais no mercado", graph)

    assert first == {"route": "finance", "reply": "Anotado: 50 reais no mercado.", "choices": None}
    refused, router, specialist = server.requests
    assert _kind(refused) == "json_schema", "json_schema is tried first"
    assert _kind(router) == "forced:RouteDecision"
    assert "finance specialist" in specialist["messages"][0]["content"]

    # The next turn goes straight to function calling: the refusal is remembered.
    model.call_tool("RouteDecision", {"route": "relationships", "reason": "a birthday"})
    model.say("Guardei o aniversário.")
    second = _turn("o aniversário da minha mãe é 12/03", graph)

    assert second["route"] == "relationships"
    assert [_kind(r) for r in server.requests[3:5]] == ["forced:RouteDecision", "tools"]
    assert structured_method("scripted") == "function_calling"


def test_llm_structured_output_forces_the_method(
    scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_STRUCTURED_OUTPUT", "function_calling")
    graph = build_graph().compile(checkpointer=InMemorySaver())
    scripted.call_tool("RouteDecision", {"route": "finance", "reason": "money"}).say("Ok!")

    assert _turn("qual meu saldo?", graph)["route"] == "finance"
    assert _kind(scripted.requests[0]) == "forced:RouteDecision"


def test_a_forced_json_schema_on_a_server_without_it_falls_back_and_is_counted(
    bare: tuple[ScriptedModel, ChatCompletionsServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, server = bare
    monkeypatch.setenv("LLM_STRUCTURED_OUTPUT", "json_schema")
    graph = build_graph().compile(checkpointer=InMemorySaver())
    model.say("Posso ajudar com isso.")
    before = _fallbacks("refused")

    with capture_logs() as logs:
        # A fresh logger: the module's own may be cached, by an earlier test, with the
        # processors configured before the capture began.
        monkeypatch.setattr(router, "log", structlog.get_logger(router.__name__))
        result = _turn("gastei 50 reais", graph)

    assert result == {"route": "general", "reply": "Posso ajudar com isso.", "choices": None}, (
        "the user is answered"
    )
    assert [_kind(r) for r in server.requests] == ["json_schema", "tools"], "no retry when forced"
    assert _fallbacks("refused") - before == 1
    (warning,) = [e for e in logs if e["event"].startswith("routing call failed")]
    assert warning["log_level"] == "warning" and warning["reason"] == "refused"
    assert REFUSAL in warning["error"], "the server's own words are logged"


def test_a_routing_failure_logs_no_word_of_the_completion(
    scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver())
    prose = "Claro! A Ana Beatriz pediu retorno no +55 11 98888-1234, ou 11 97777-5555."
    scripted.say(prose).say("Posso ajudar com isso.")  # a server that answers in prose

    with capture_logs() as logs:
        monkeypatch.setattr(router, "log", structlog.get_logger(router.__name__))  # see above
        assert _turn("gastei 50 reais", graph)["route"] == "general"

    (warning,) = [e for e in logs if e["event"].startswith("routing call failed")]
    assert warning["reason"] == "invalid_output"
    logged = repr(logs)
    for said in ("Ana Beatriz", "98888-1234", "97777-5555", "pediu retorno"):
        assert said not in logged, said


def test_routing_fallbacks_are_counted_by_reason(
    scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver())
    invalid, unreachable = _fallbacks("invalid_output"), _fallbacks("unreachable")

    # A route the plan does not offer: the schema is broken, the turn goes on.
    scripted.structured({"route": "finance", "reason": "x"}).say("Posso ajudar com datas.")
    assert _turn("gastei 50 reais", graph, ["relationships"])["route"] == "general"
    assert _fallbacks("invalid_output") - invalid == 1

    # Nothing listens where the model should be: counted as unreachable, the turn still fails
    # later (the specialist needs the model too), which is the job's error to report.
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(Exception, match="Connection"):
        _turn("qual meu saldo?", build_graph().compile(checkpointer=InMemorySaver()))
    assert _fallbacks("unreachable") - unreachable == 1


def test_memory_extraction_uses_function_calling_without_json_schema(
    bare: tuple[ScriptedModel, ChatCompletionsServer],
) -> None:
    model, server = bare
    model.call_tool("MemoryFacts", {"facts": ["Meu cachorro se chama Rex"]})

    assert extract_facts("meu cachorro se chama Rex", "scripted") == ["Meu cachorro se chama Rex"]
    assert [_kind(r) for r in server.requests] == ["json_schema", "forced:MemoryFacts"]


# --- the model check -------------------------------------------------------------------------


def _script_capable(model: ScriptedModel, *, json_schema: bool = True) -> None:
    """Answer the check's calls as a model that can do everything."""
    model.say("ok").call_tool("record_colour", {"colour": "blue"})
    if json_schema:
        model.structured({"colour": "blue"})
    else:
        model.call_tool("CheckAnswer", {"colour": "blue"})


def test_the_check_of_a_capable_model_says_everything_works(scripted: ScriptedModel) -> None:
    _script_capable(scripted)

    report = probe_model("scripted")

    assert [_kind(r) for r in scripted.requests] == ["plain", "tools", "json_schema"]
    assert report.usable and report.structured_output == "json_schema"
    assert report.lines()[1:6] == [
        "model chat: ok",
        "model tool calls: ok",
        "model json_schema output: ok",
        "model function-calling output: ok",
        "model routing uses: json_schema",
    ]


def test_the_check_finds_json_schema_missing_and_routing_takes_function_calling(
    bare: tuple[ScriptedModel, ChatCompletionsServer],
) -> None:
    model, server = bare
    _script_capable(model, json_schema=False)

    report = probe_model()

    assert [_kind(r) for r in server.requests] == [
        "plain", "tools", "json_schema", "forced:CheckAnswer",
    ]  # fmt: skip
    assert report.usable and report.tool_calls.ok and report.function_calling.ok
    assert not report.json_schema.ok and REFUSAL in report.json_schema.detail
    assert report.json_schema.detail.startswith("refused: ") and "400" in report.json_schema.detail
    assert report.structured_output == "function_calling"
    assert structured_method("scripted") == "function_calling", "remembered for the turns"


def test_the_check_of_a_model_that_answers_tools_with_text(scripted: ScriptedModel) -> None:
    scripted.say("ok").say("The sky is blue.").structured({"colour": "blue"})

    report = probe_model("scripted")

    assert not report.usable
    assert "model tool calls: no (the model answered in text instead of calling the tool" in (
        "\n".join(report.lines())
    )


def test_the_check_of_a_model_that_is_down_says_so_and_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("LLM_MAX_RETRIES", "3")  # the check asks once all the same

    report = probe_model()

    assert not report.usable and report.structured_output is None
    assert (
        report.chat.detail.startswith("unreachable: ") and "Connection error" in report.chat.detail
    )
    assert report.tool_calls.detail == "not tried: the model did not answer"
    assert (
        f"nothing answered at {url}: start the model server or fix OPENAI_BASE_URL"
        in (report.notes[0])
    )
    assert structured_method(report.model) == "json_schema", "nothing learned from a dead model"


def _conversa(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "conversa"), *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_conversa_check_names_what_works_and_fails_when_tools_do_not(
    settings: Settings, llm: ScriptedModel, llm_server: ChatCompletionsServer
) -> None:
    _script_capable(llm)
    good = _conversa("check", env={**os.environ})
    llm.say("ok").say("I'd rather not call tools.").structured({"colour": "blue"})
    weak = _conversa("check", env={**os.environ})

    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.splitlines()[:3] == ["postgres: ok", "redis: ok", "migrations: ok"]
    assert f"model: scripted at {llm_server.base_url}" in good.stdout
    assert "model tool calls: ok" in good.stdout
    assert "model routing uses: json_schema" in good.stdout
    assert weak.returncode == 1, "a model that cannot call tools fails the check"
    assert "model tool calls: no (the model answered in text" in weak.stdout
    assert "postgres: ok" in weak.stdout


def test_conversa_check_without_a_key_names_the_offline_model(settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLM_"))}

    result = _conversa("check", env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "model: offline model (no OPENAI_API_KEY or OPENAI_BASE_URL: a stand-in" in (
        result.stdout
    )
    assert "model tool calls: ok (by fixed rules" in result.stdout


def test_a_wrong_llm_structured_output_is_refused_with_the_allowed_values(
    settings: Settings,
) -> None:
    result = _conversa("check", env={**os.environ, "LLM_STRUCTURED_OUTPUT": "xml"})

    assert result.returncode == 2
    assert "invalid configuration" in result.stderr and "llm_structured_output" in result.stderr
    assert "'auto', 'json_schema' or 'function_calling'" in result.stderr


def test_the_worker_logs_what_the_model_supports_at_start(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ScriptedModel()
    _script_capable(model, json_schema=False)
    with ChatCompletionsServer(model, refuse_json_schema=True) as server:
        env = {**os.environ, "OPENAI_BASE_URL": server.base_url, "LLM_CHECK_AT_START": "true"}
        started = _conversa("worker", "--burst", env=env)

    assert started.returncode == 0, started.stdout + started.stderr
    log = started.stdout + started.stderr
    (line,) = [row for row in log.splitlines() if "model check" in row]
    assert "routing_uses=function_calling" in line and "tool_calls=ok" in line
    assert REFUSAL in line, "the server's words say why json_schema is missing"
    assert model.remaining == 0

    # A model that is down does not stop the worker from starting; the line says so.
    env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{free_port()}/v1"
    down = _conversa("worker", "--burst", env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "model check: the model did not answer" in down.stdout + down.stderr


def test_the_local_server_can_refuse_json_schema_like_ollama_or_vllm() -> None:
    model = ScriptedModel().say("plain answers still work")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    schema = {"type": "json_schema", "json_schema": {"name": "X", "schema": {"type": "object"}}}
    with ChatCompletionsServer(model, refuse_json_schema=True) as server:
        refused = httpx.post(
            f"{server.base_url}/chat/completions", json={**body, "response_format": schema}
        )
        plain = httpx.post(f"{server.base_url}/chat/completions", json=body)

    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "response_format"
    assert REFUSAL in refused.json()["error"]["message"]
    assert plain.status_code == 200
    assert plain.json()["choices"][0]["message"]["content"] == "plain answers still work"
