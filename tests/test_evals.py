"""The evaluation set, its scorer, and the `conversa eval` command."""

from __future__ import annotations

import json
import operator
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, AnyMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import interrupt

from evals import run
from evals.dataset import TOOL_NAMES, DatasetError, Example, load_dataset
from evals.experiment import CHECKS, EVALUATORS, example_uuid, sync_dataset
from evals.scoring import Outcome, ToolCall, format_failures, format_table, judge, score
from evals.target import GraphTarget
from graphs.features import ROUTES
from server.cli.main import main as cli_main
from tests.fakes import FakeLangSmith
from tests.langsmith_api import forget_langsmith_settings
from tools.finance import FINANCE_TOOLS
from tools.handoff import request_human
from tools.memory import MEMORY_TOOLS
from tools.relationships import RELATIONSHIP_TOOLS

SPECIALIST_TOOLS = {
    "finance": {t.name for t in FINANCE_TOOLS},
    "relationships": {t.name for t in RELATIONSHIP_TOOLS},
    "general": {t.name for t in MEMORY_TOOLS},
}

# --------------------------------------------------------------------------- #
# The dataset
# --------------------------------------------------------------------------- #


def test_dataset_is_big_enough_and_bilingual() -> None:
    examples = load_dataset()

    languages = Counter(e.language for e in examples)
    assert len(examples) >= 60
    assert languages["pt"] >= 30
    assert languages["en"] >= 20
    assert len({e.id for e in examples}) == len(examples)
    assert {e.route for e in examples} == set(ROUTES)


def test_dataset_tools_are_the_real_ones_and_match_their_route() -> None:
    real = set().union(*SPECIALIST_TOOLS.values()) | {request_human.name}
    assert real == TOOL_NAMES

    for example in load_dataset():
        assert set(example.tools) <= SPECIALIST_TOOLS.get(example.route, set()), example.id
        if example.args:
            schema = next(
                t for t in [*FINANCE_TOOLS, *RELATIONSHIP_TOOLS, *MEMORY_TOOLS]
                if t.name == example.tools[0]
            )  # fmt: skip
            assert set(example.args) <= set(schema.tool_call_schema.model_fields), example.id  # type: ignore[union-attr]


def test_dataset_covers_the_cases_the_demo_needs() -> None:
    examples = load_dataset()
    first_tools = {e.tools[0] for e in examples if e.tools}

    assert TOOL_NAMES - first_tools == {"request_human"}
    for language in ("pt", "en"):
        routes = {e.route for e in examples if e.language == language}
        assert routes == set(ROUTES), language
    gated_money = [
        e for e in examples if e.features is not None and "finance" not in e.features
        and any(word in e.text.lower() for word in ("gastei", "spent"))
    ]  # fmt: skip
    assert gated_money and all(e.route == "general" and not e.tools for e in gated_money)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 1"),
        ('["a list"]', "JSON object"),
        ('{"id": "x", "text": "t", "language": "pt"}', "'route'"),
        ('{"id": "x", "text": "t", "language": "es", "route": "general"}', "language"),
        ('{"id": "x", "text": "t", "language": "pt", "route": "sales"}', "sales"),
        ('{"id": "x", "text": "t", "language": "pt", "route": "finance", "tools": ["pay"]}', "pay"),
        ('{"id": "x", "text": "t", "language": "pt", "route": "general", "args": {"a": 1}}',
         "only given with 'tools'"),
        ('{"id": "x", "text": "t", "language": "pt", "route": "general", "features": ["vip"]}',
         "features"),
        ('{"id": "x", "text": "t", "language": "pt", "route": "general", "extra": 1}', "extra"),
    ],
)  # fmt: skip
def test_malformed_examples_are_refused(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")

    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


def test_duplicate_ids_and_empty_files_are_refused(tmp_path: Path) -> None:
    line = json.dumps({"id": "x", "text": "oi", "language": "pt", "route": "general"})
    duplicated, empty = tmp_path / "dup.jsonl", tmp_path / "empty.jsonl"
    duplicated.write_text(f"{line}\n\n{line}\n")
    empty.write_text("\n")

    with pytest.raises(DatasetError, match=r"dup.jsonl:3: duplicate id 'x'"):
        load_dataset(duplicated)
    with pytest.raises(DatasetError, match="no examples"):
        load_dataset(empty)


def test_examples_round_trip_as_json() -> None:
    for example in load_dataset():
        assert Example.from_dict(json.loads(json.dumps(example.to_dict()))) == example


# --------------------------------------------------------------------------- #
# The scorer
# --------------------------------------------------------------------------- #

EXPENSE = Example(
    id="pt-expense", text="Gastei 10 no mercado", language="pt", route="finance",
    tools=("record_transaction",), args={"amount": "10", "category": "Groceries"},
)  # fmt: skip
HELLO = Example(id="pt-hello", text="Oi", language="pt", route="general")
BIRTHDAY = Example(
    id="en-birthday", text="Mom's birthday is March 12", language="en", route="relationships",
    tools=("add_important_date",), args={"person_name": "mom", "date": "March 12"},
)  # fmt: skip


def test_scores_one_right_one_wrong_route_one_wrong_args() -> None:
    right = Outcome(
        route="finance",
        tool_calls=(ToolCall("record_transaction", {"amount": "10", "category": " groceries "}),),
        language="pt",
    )
    wrong_route = Outcome(route="finance", reply="Olá! Tudo bem com você?", language="pt")
    wrong_args = Outcome(
        route="relationships",
        tool_calls=(ToolCall("add_important_date", {"person_name": "mom", "date": "03/12"}),),
        language="en",
    )  # 3 December, not March 12

    verdicts = [judge(EXPENSE, right), judge(HELLO, wrong_route), judge(BIRTHDAY, wrong_args)]
    overall, pt, en = score(verdicts)

    assert [v.passed for v in verdicts] == [True, False, False]
    assert (overall.count, overall.route, overall.tools, overall.language) == (3, 2 / 3, 2 / 3, 1.0)
    assert overall.passed == pytest.approx(1 / 3)
    assert (pt.label, pt.count, pt.route, pt.tools, pt.passed) == ("pt", 2, 0.5, 1.0, 0.5)
    assert (en.label, en.count, en.route, en.tools, en.passed) == ("en", 1, 1.0, 0.0, 0.0)
    table = format_table([overall, pt, en])
    assert "overall" in table and "66.7%" in table and "33.3%" in table
    failures = format_failures(verdicts)
    assert "pt-expense" not in failures
    assert "- pt-hello [pt] 'Oi'\n    route: expected general, got finance" in failures
    assert "tools: expected ['add_important_date'] with" in failures
    assert "date='03/12'" in failures


def _expense(args: dict[str, Any], local_time: str = "2026-11-04T10:00-03:00") -> Outcome:
    return Outcome(
        route="finance",
        tool_calls=(ToolCall("record_transaction", args),),
        language="pt",
        local_time=local_time,
    )


EXPENSE_YESTERDAY = Example(
    id="pt-expense-yesterday", text="Gastei 5.000 no mercado ontem", language="pt",
    route="finance", tools=("record_transaction",),
    args={"kind": "expense", "amount": "5000", "category": "groceries", "date": "ontem"},
)  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [
        {"kind": "expense", "amount": "5.000", "category": "mercado", "date": "ontem"},
        {"kind": "expense", "amount": 5000, "category": "Supermercado", "date": "2026-11-03"},
        {"kind": "expense", "amount": "5000.00", "category": "groceries", "date": "yesterday"},
        {"kind": "expense", "amount": "R$ 5.000,00", "category": "GROCERY", "date": "03/11"},
    ],
)
def test_the_scorer_judges_what_the_arguments_mean(args: dict[str, Any]) -> None:
    assert judge(EXPENSE_YESTERDAY, _expense(args)).tools_ok


@pytest.mark.parametrize(
    "args",
    [
        {"kind": "expense", "amount": "5", "category": "mercado", "date": "ontem"},
        {"kind": "expense", "amount": "5.000,01", "category": "mercado", "date": "ontem"},
        {"kind": "expense", "amount": "abc", "category": "mercado", "date": "ontem"},
        {"kind": "expense", "amount": "5.000", "category": "transporte", "date": "ontem"},
        {"kind": "expense", "amount": "5.000", "category": "mercado", "date": "anteontem"},
        {"kind": "expense", "amount": "5.000", "category": "mercado", "date": "2026-11-04"},
        {"kind": "expense", "amount": "5.000", "category": "mercado"},  # today, not yesterday
        {"kind": "income", "amount": "5.000", "category": "mercado", "date": "ontem"},
        {"kind": "expense", "amount": "5.000", "date": "ontem"},
    ],
)
def test_the_scorer_refuses_arguments_that_mean_something_else(args: dict[str, Any]) -> None:
    assert not judge(EXPENSE_YESTERDAY, _expense(args)).tools_ok


def test_relative_dates_resolve_from_the_runs_own_local_time() -> None:
    args = {"kind": "expense", "amount": "5000", "category": "groceries", "date": "2026-11-03"}
    assert judge(EXPENSE_YESTERDAY, _expense(args, "2026-11-04T23:59-03:00")).tools_ok
    assert not judge(EXPENSE_YESTERDAY, _expense(args, "2026-11-05T00:01-03:00")).tools_ok
    round_trip = Outcome.from_dict(_expense(args).to_dict())
    assert round_trip.local_time == "2026-11-04T10:00-03:00"


def test_tool_names_must_match_exactly_and_in_order() -> None:
    two_calls = Outcome(
        route="finance",
        tool_calls=(ToolCall("record_transaction", {"amount": "10", "category": "groceries"}),
                    ToolCall("get_balance")),
        language="pt",
    )  # fmt: skip
    text_only = Outcome(route="finance", reply="Anotei!", language="pt")
    missing_arg = Outcome(
        route="finance", tool_calls=(ToolCall("record_transaction", {"amount": "10"}),)
    )

    assert not judge(EXPENSE, two_calls).tools_ok
    assert not judge(EXPENSE, text_only).tools_ok
    assert not judge(EXPENSE, missing_arg).tools_ok
    assert judge(HELLO, text_only).tools_ok
    assert "got [] (a text answer)" in format_failures([judge(EXPENSE, text_only)])


def test_reply_language_is_detected_and_the_state_counts_without_a_reply() -> None:
    english_reply = Outcome(route="general", reply="Hi! How can I help you today?", language="pt")
    stopped = Outcome(route="general", language="pt")
    stopped_en = Outcome(route="general", language="en")

    assert not judge(HELLO, english_reply).language_ok
    assert judge(HELLO, stopped).language_ok
    assert not judge(HELLO, stopped_en).language_ok
    assert "language: expected pt, got en" in format_failures([judge(HELLO, english_reply)])


def test_a_crashed_run_fails_every_check() -> None:
    crashed = Outcome(error="RuntimeError: boom")

    verdict = judge(HELLO, crashed)

    assert not (verdict.route_ok or verdict.tools_ok or verdict.language_ok)
    assert verdict.problems()[0] == "error: RuntimeError: boom"


def test_langsmith_evaluators_reuse_the_scorer() -> None:
    inputs = {"id": EXPENSE.id, "text": EXPENSE.text, "features": ["finance"]}
    reference = {"route": "finance", "tools": ["record_transaction"],
                 "args": EXPENSE.args, "language": "pt"}  # fmt: skip
    outputs = Outcome(
        route="finance",
        tool_calls=(ToolCall("record_transaction", {"amount": "10", "category": "groceries"}),),
        language="pt",
    ).to_dict()

    scores = {
        e.__name__: e(inputs=inputs, outputs=outputs, reference_outputs=reference)["score"]
        for e in EVALUATORS
    }

    assert scores == {
        "route_correct": True,
        "tools_correct": True,
        "reply_language_correct": True,
        "all_correct": True,
    }
    wrong = dict(outputs, route="general")
    assert (
        EVALUATORS[0](inputs=inputs, outputs=wrong, reference_outputs=reference)["score"] is False
    )


# --------------------------------------------------------------------------- #
# LangSmith upload
# --------------------------------------------------------------------------- #


@pytest.fixture
def langsmith(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLangSmith]:
    """A local LangSmith endpoint that `langsmith.Client()` talks to, taking only our key."""
    server = FakeLangSmith(api_key="lsv2-test")
    monkeypatch.setenv("LANGSMITH_ENDPOINT", server.url)
    monkeypatch.setenv("LANGSMITH_API_KEY", "lsv2-test")
    monkeypatch.delenv("LANGSMITH_TRACING", raising=False)
    forget_langsmith_settings()
    yield server
    monkeypatch.undo()
    forget_langsmith_settings()
    server.close()


def _reference(example: Example) -> dict[str, Any]:
    return {"route": example.route, "tools": list(example.tools), "args": example.args,
            "language": example.language}  # fmt: skip


def test_dataset_sync_over_http_is_idempotent_by_name(langsmith: FakeLangSmith) -> None:
    from langsmith import Client

    api, examples = langsmith.api, load_dataset()

    dataset = sync_dataset(Client(), "evals", examples)

    assert [d["name"] for d in api.datasets.values()] == ["evals"]
    assert set(api.examples) == {example_uuid("evals", e.id) for e in examples}
    for example in examples:
        stored = api.examples[example_uuid("evals", example.id)]
        assert stored["dataset_id"] == str(dataset.id)
        assert stored["inputs"] == {"id": example.id, "text": example.text,
                                    "features": example.plan}  # fmt: skip
        assert stored["outputs"] == _reference(example)
        assert stored["metadata"] == {"id": example.id, "language": example.language}

    before = len(api.requests)
    sync_dataset(Client(), "evals", examples)
    changed = [*examples[:-1], Example(**{**examples[-1].__dict__, "route": "handoff"})]
    sync_dataset(Client(), "evals", changed)

    writes = [(method, path) for method, path in api.requests[before:] if method != "GET"]
    last = example_uuid("evals", examples[-1].id)
    assert writes == [("PATCH", f"/examples/{last}")]
    assert api.examples[last]["outputs"] == _reference(changed[-1])
    assert len(api.examples) == len(examples) and len(api.datasets) == 1
    assert api.unhandled == []


WRONG = Example(id="en-wrong-on-purpose", text="Hi, how are you?", language="en", route="finance")
"""An example the graph gets wrong, so the experiment reports failures too."""


def test_langsmith_experiment_over_http_scores_like_the_local_runner(
    offline_model: None,
    langsmith: FakeLangSmith,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wanted = ["pt-expense-groceries-yesterday", "pt-handoff-attendant", "pt-smalltalk-hi",
              "en-reminder-dad", "en-what-do-you-know"]  # fmt: skip
    examples = [e for e in load_dataset() if e.id in wanted] + [WRONG]
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps(e.to_dict()) for e in examples))
    api = langsmith.api

    for language in ("pt", "en"):  # the second run finds the first one's examples stored
        selected = [e for e in examples if e.language == language]
        local = run.evaluate(selected, GraphTarget())
        prefix = f"demo-{language}"
        argv = ["--langsmith", "--dataset", str(path), "--language", language,
                "--langsmith-dataset", "demo", "--experiment-prefix", prefix]  # fmt: skip

        assert run.main(argv) == 0

        (dataset,) = api.datasets.values()
        (experiment,) = [
            s for s in api.sessions.values() if s["name"].startswith(f"demo-{language}")
        ]
        assert experiment["reference_dataset_id"] == dataset["id"]
        assert "dataset_version" in experiment["extra"]["metadata"]  # the closing update came
        roots = api.root_runs(experiment["name"])
        by_example = {r["reference_example_id"]: r for r in roots}
        assert len(roots) == len(by_example) == len(selected)
        for example, verdict in zip(selected, local, strict=True):
            root = by_example[example_uuid("demo", example.id)]
            assert root["inputs"]["text"] == example.text and root["outputs"]["route"]
            feedback = {f["key"]: f["score"] for f in api.feedback if f["run_id"] == root["id"]}
            expected = {key: getattr(verdict, check) for key, check in CHECKS.items()}
            assert feedback == expected, example.id
        assert format_table(score(local)) in capsys.readouterr().out

    assert not all(v.passed for v in local)  # WRONG is judged wrong in both places
    assert set(api.examples) == {example_uuid("demo", e.id) for e in examples}
    assert api.unhandled == []


def test_langsmith_endpoint_down_or_key_refused_is_a_clear_error(
    offline_model: None,
    langsmith: FakeLangSmith,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LANGSMITH_API_KEY", "lsv2-revoked")
    forget_langsmith_settings()

    assert run.main(["--langsmith", "--only", "pt-smalltalk-hi"]) == 2
    refused = capsys.readouterr().err
    assert "LangSmith refused the request (the API key was not accepted)" in refused
    assert "Check LANGSMITH_API_KEY" in refused
    assert langsmith.api.datasets == {} and langsmith.api.runs == {}

    down = langsmith.url
    langsmith.close()
    monkeypatch.setenv("LANGSMITH_API_KEY", "lsv2-test")
    forget_langsmith_settings()

    assert run.main(["--langsmith", "--only", "pt-smalltalk-hi"]) == 2
    unreachable = capsys.readouterr().err
    assert f"cannot reach LangSmith at {down}. Check LANGSMITH_ENDPOINT" in unreachable


def test_langsmith_without_a_key_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LANGSMITH_API_KEY", raising=False)
    monkeypatch.delenv("LANGCHAIN_API_KEY", raising=False)

    assert run.main(["--langsmith"]) == 2
    assert cli_main(["eval", "--langsmith"]) == 2

    err = capsys.readouterr().err
    assert err.count("no LangSmith API key. Set LANGSMITH_API_KEY") == 2


def test_bad_options_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--min-score", "80"]) == 2
    assert run.main(["--dataset", str(tmp_path / "missing.jsonl")]) == 2
    assert run.main(["--only", "no-such-example"]) == 2

    err = capsys.readouterr().err
    assert "--min-score must be between 0 and 1" in err
    assert "cannot read the dataset" in err
    assert "no example matches" in err


# --------------------------------------------------------------------------- #
# Running graphs
# --------------------------------------------------------------------------- #


class _StandInState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    route: str
    language: str
    reply: str
    tool_runs: Annotated[int, operator.add]


def _stand_in_graph() -> StateGraph[Any, Any, Any, Any]:
    """A graph shaped like the assistant: router → specialist ⇄ tools → reply, or handoff."""

    def router(state: _StandInState) -> dict[str, Any]:
        text = state["messages"][-1].text.lower()
        chosen = "handoff" if "atendente" in text else "finance" if "gastei" in text else "general"
        return {"route": chosen, "language": "pt"}

    def finance(state: _StandInState) -> dict[str, Any]:
        call = {"name": "get_balance", "args": {"period": "today"}, "id": "c1", "type": "tool_call"}
        return {"messages": [AIMessage("", tool_calls=[call])]}

    def finance_tools(state: _StandInState) -> dict[str, Any]:
        raise AssertionError("tools must not run during an evaluation")

    def general(state: _StandInState) -> dict[str, Any]:
        return {"messages": [AIMessage("Olá, tudo bem com você?")]}

    def handoff(state: _StandInState) -> dict[str, Any]:
        interrupt({"reason": "asked for a person"})
        return {}

    def reply(state: _StandInState) -> dict[str, Any]:
        return {"reply": state["messages"][-1].text}

    builder = StateGraph(_StandInState)
    for node in (router, finance, finance_tools, general, handoff, reply):
        builder.add_node(node.__name__, node)
    builder.add_edge(START, "router")
    builder.add_conditional_edges("router", lambda s: s["route"], ["finance", "general", "handoff"])
    builder.add_edge("finance", "finance_tools")
    builder.add_edge("finance_tools", "finance")
    builder.add_edge("general", "reply")
    builder.add_edge("handoff", END)
    builder.add_edge("reply", END)
    return builder


def test_stand_in_graph_stops_before_tools_and_counts_handoff_as_finished() -> None:
    target = GraphTarget(_stand_in_graph())
    spent = Example(id="a", text="Quanto gastei hoje?", language="pt", route="finance",
                    tools=("get_balance",), args={"period": "today"})  # fmt: skip
    human = Example(id="b", text="Quero um atendente", language="pt", route="handoff")
    hello = Example(id="c", text="Oi", language="pt", route="general")

    outcomes = [target(e) for e in (spent, human, hello)]

    assert outcomes[0] == Outcome(
        route="finance", tool_calls=(ToolCall("get_balance", {"period": "today"}),), language="pt"
    )
    assert outcomes[1] == Outcome(route="handoff", language="pt")
    assert outcomes[2].reply == "Olá, tudo bem com você?"
    assert all(v.passed for v in run.evaluate([spent, human, hello], target))


def test_a_graph_error_is_reported_not_raised() -> None:
    builder = StateGraph(_StandInState)

    def broken(state: _StandInState) -> dict[str, Any]:
        raise RuntimeError("no model")

    builder.add_node("broken", broken)
    builder.add_edge(START, "broken")

    outcome = GraphTarget(builder)(HELLO)

    assert outcome.error == "RuntimeError: no model"


@pytest.fixture
def offline_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Use the offline model (no OpenAI-compatible endpoint configured)."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_real_graph_with_the_offline_model_scores_demo_examples(
    offline_model: None, capsys: pytest.CaptureFixture[str]
) -> None:
    wanted = ["pt-expense-groceries-yesterday", "pt-birthday-mother", "pt-handoff-attendant",
              "pt-smalltalk-hi", "en-reminder-dad", "en-what-do-you-know",
              "pt-gated-money-no-finance"]  # fmt: skip
    examples = [e for e in load_dataset() if e.id in wanted]

    verdicts = run.evaluate(examples, GraphTarget())

    assert [v.problems() for v in verdicts if not v.passed] == []
    assert run.main(["--only", "pt-expense-groceries-yesterday", "--min-score", "1"]) == 0
    out = capsys.readouterr().out
    assert "model: offline" in out
    assert "No failures." in out


def test_min_score_fails_the_command(
    offline_model: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "set.jsonl"
    lines = [
        {"id": "right", "text": "Oi, tudo bem?", "language": "pt", "route": "general"},
        {"id": "wrong", "text": "Oi, tudo bem?", "language": "pt", "route": "finance"},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines))

    assert run.main(["--dataset", str(path)]) == 0
    assert run.main(["--dataset", str(path), "--min-score", "0.5"]) == 0
    assert run.main(["--dataset", str(path), "--min-score", "0.6"]) == 1

    captured = capsys.readouterr()
    assert "- wrong [pt] 'Oi, tudo bem?'\n    route: expected finance, got general" in captured.out
    assert "Score 50.0% is below --min-score 60.0%." in captured.err


def test_the_eval_command_prints_its_table_for_the_whole_dataset() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "conversa"), "eval", "--min-score", "0.9"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^overall\s+\d+\s+[\d.]+%\s+[\d.]+%\s+[\d.]+%", done.stdout, re.MULTILINE)
    assert re.search(r"^pt\s+", done.stdout, re.MULTILINE)
    assert re.search(r"^en\s+", done.stdout, re.MULTILINE)
