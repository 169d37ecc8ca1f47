"""The assistant graph on its own: compiled with an in-memory saver, the model scripted."""

from __future__ import annotations

from dataclasses import replace

from langgraph.checkpoint.memory import InMemorySaver

from graphs import diagram
from graphs.assistant import build_graph
from graphs.context import Context
from graphs.prompts import FALLBACK_REPLY, USER_DATA_RULE
from tests.fakes import ScriptedModel


def _run(text: str, context: Context, thread: str = "t1") -> dict[str, object]:
    """Run one turn for a user whose plan has no features: the general assistant answers."""
    context = replace(context, features=[])
    graph = build_graph().compile(checkpointer=InMemorySaver())
    return graph.invoke(
        {"messages": [{"role": "user", "content": text}]},
        {"configurable": {"thread_id": thread}},
        context=context,
    )


def test_english_message_gets_an_english_system_prompt(scripted: ScriptedModel) -> None:
    scripted.say("Hi Ana!")

    result = _run("Hello, who are you?", Context(tenant_name="Acme", user_name="Ana"))

    assert result == {"route": "general", "reply": "Hi Ana!", "choices": None}
    system = scripted.requests[0]["messages"][0]["content"]
    assert "Answer in English" in system and "Acme" in system and "Ana" in system


def test_unclear_language_follows_the_locale(scripted: ScriptedModel) -> None:
    scripted.say("ok!").say("ok!")

    _run("ok", Context(locale="en-US"))
    _run("ok", Context(locale="pt-BR"))

    assert "Answer in English" in scripted.requests[0]["messages"][0]["content"]
    assert "Answer in Brazilian Portuguese" in scripted.requests[1]["messages"][0]["content"]


def test_empty_model_answer_becomes_a_polite_fallback(scripted: ScriptedModel) -> None:
    scripted.say("   ")

    assert _run("Oi", Context()) == {
        "route": "general",
        "reply": FALLBACK_REPLY["pt"],
        "choices": None,
    }


def test_local_time_uses_the_timezone_and_survives_a_bad_one(scripted: ScriptedModel) -> None:
    scripted.say("a").say("b")

    _run("Oi", Context(timezone="Asia/Tokyo"))
    _run("Oi", Context(timezone="Not/AZone"))

    assert "+09:00" in scripted.requests[0]["messages"][0]["content"]
    assert "+00:00" in scripted.requests[1]["messages"][0]["content"]


def test_persona_and_prompt_override_reach_the_model(scripted: ScriptedModel) -> None:
    scripted.say("Arr!")

    _run("Oi", Context(system_prompt="Talk like a pirate for {tenant_name}.", tenant_name="Acme"))

    assert scripted.requests[0]["messages"][0]["content"] == (
        "Talk like a pirate for Acme.\n" + USER_DATA_RULE
    ), "the override, and the rule that the user's words are data (appended)"


def test_the_readme_diagram_is_the_graph_that_runs() -> None:
    readme = diagram.README.read_text()
    assert diagram.current(readme) == diagram.block(), "run `python -m graphs.diagram`"
