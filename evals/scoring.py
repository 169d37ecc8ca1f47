"""Judge what the assistant did with each example, and sum it up as a score table.

Three checks per example, each scored on its own:
- route: the router chose the expected route;
- tools: the specialist's first step called exactly the expected tools, in order, and the first
  call's arguments include the expected ones, compared by meaning (`evals.meaning`: amounts as
  numbers, categories by the canonical list, dates by the day they resolve to from the run's
  local time, other text without case or extra spaces);
- language: the reply is in the example's language (`graphs.language.detect_language`); when the
  run stopped before a tool ran, there is no reply yet and the language the graph chose counts.
An example passes when all three do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from evals.dataset import Example
from evals.meaning import arguments_match
from graphs.language import Language, detect_language


@dataclass(frozen=True)
class ToolCall:
    """A tool call the model made."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What one run of the graph did with an example."""

    route: str = ""
    """The route in the state after the run."""
    tool_calls: tuple[ToolCall, ...] = ()
    """The calls of the first AI message of the turn (empty: it answered in text)."""
    reply: str = ""
    """The reply, when the run got that far."""
    language: str = ""
    """The language the graph chose for this turn (`state.language`)."""
    error: str = ""
    """Why the run failed, if it did."""
    local_time: str = ""
    """The user's local time the run saw (ISO 8601): what relative dates are resolved from."""

    @property
    def now(self) -> datetime:
        """The run's local time, or now in São Paulo when the run did not record it."""
        try:
            moment = datetime.fromisoformat(self.local_time)
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            from tools.dates import local_now

            return local_now("America/Sao_Paulo")
        return moment

    def to_dict(self) -> dict[str, Any]:
        """The outcome as JSON (what a LangSmith target returns)."""
        return {
            "route": self.route,
            "tool_calls": [{"name": c.name, "args": c.args} for c in self.tool_calls],
            "reply": self.reply,
            "language": self.language,
            "error": self.error,
            "local_time": self.local_time,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        """Rebuild an outcome from `to_dict`'s JSON."""
        calls = tuple(
            ToolCall(str(c.get("name", "")), dict(c.get("args") or {}))
            for c in data.get("tool_calls") or []
            if isinstance(c, dict)
        )
        return cls(
            route=str(data.get("route") or ""),
            tool_calls=calls,
            reply=str(data.get("reply") or ""),
            language=str(data.get("language") or ""),
            error=str(data.get("error") or ""),
            local_time=str(data.get("local_time") or ""),
        )


@dataclass(frozen=True)
class Verdict:
    """The three checks of one example."""

    example: Example
    outcome: Outcome
    route_ok: bool
    tools_ok: bool
    language_ok: bool

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return self.route_ok and self.tools_ok and self.language_ok

    def problems(self) -> list[str]:
        """Say what went wrong, one line per failed check."""
        example, outcome = self.example, self.outcome
        lines = [f"error: {outcome.error}"] if outcome.error else []
        if not self.route_ok:
            lines.append(f"route: expected {example.route}, got {outcome.route or '(none)'}")
        if not self.tools_ok:
            got = [f"{c.name}({_short_args(c.args)})" for c in outcome.tool_calls]
            want = list(example.tools)
            wanted = f"{want} with {example.args}" if example.args else f"{want}"
            lines.append(f"tools: expected {wanted}, got {got or '[] (a text answer)'}")
        if not self.language_ok:
            lines.append(
                f"language: expected {example.language}, got {reply_language(outcome) or '?'}"
            )
        return lines


def _short_args(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items())


def tools_match(example: Example, calls: Sequence[ToolCall], now: datetime | None = None) -> bool:
    """Whether ``calls`` are the expected tools, and the first means the expected arguments.

    Relative dates are resolved from ``now`` (the run's local time; default: `Outcome.now`).
    """
    if [c.name for c in calls] != list(example.tools):
        return False
    if not example.args:
        return True
    return arguments_match(calls[0].name, example.args, calls[0].args, now or Outcome().now)


def reply_language(outcome: Outcome) -> Language | str:
    """The language of the reply, or the one the graph chose when there is no reply yet."""
    fallback = outcome.language if outcome.language in ("pt", "en") else "pt"
    if outcome.reply.strip():
        return detect_language(outcome.reply, default=fallback)  # type: ignore[arg-type]
    return outcome.language


def judge(example: Example, outcome: Outcome) -> Verdict:
    """Run the three checks on one example's outcome."""
    failed = bool(outcome.error)
    return Verdict(
        example=example,
        outcome=outcome,
        route_ok=not failed and outcome.route == example.route,
        tools_ok=not failed and tools_match(example, outcome.tool_calls, outcome.now),
        language_ok=not failed and reply_language(outcome) == example.language,
    )


@dataclass(frozen=True)
class Score:
    """The accuracies of a group of examples (fractions between 0 and 1)."""

    label: str
    count: int
    route: float
    tools: float
    language: float
    passed: float


def _score(label: str, verdicts: Sequence[Verdict]) -> Score:
    count = len(verdicts)

    def share(values: Iterable[bool]) -> float:
        return sum(values) / count if count else 0.0

    return Score(
        label=label,
        count=count,
        route=share(v.route_ok for v in verdicts),
        tools=share(v.tools_ok for v in verdicts),
        language=share(v.language_ok for v in verdicts),
        passed=share(v.passed for v in verdicts),
    )


def score(verdicts: Sequence[Verdict]) -> list[Score]:
    """Score all examples, then each language that has examples."""
    rows = [_score("overall", verdicts)]
    for language in ("pt", "en"):
        group = [v for v in verdicts if v.example.language == language]
        if group:
            rows.append(_score(language, group))
    return rows


def format_table(scores: Sequence[Score]) -> str:
    """Render scores as a fixed-width table."""
    header = f"{'':<9}{'examples':>9}{'route':>9}{'tools':>9}{'language':>10}{'all ok':>9}"
    lines = [header, "-" * len(header)]
    for s in scores:
        lines.append(
            f"{s.label:<9}{s.count:>9}{s.route:>9.1%}{s.tools:>9.1%}{s.language:>10.1%}"
            f"{s.passed:>9.1%}"
        )
    return "\n".join(lines)


def format_failures(verdicts: Sequence[Verdict]) -> str:
    """List the examples that failed a check, with what went wrong."""
    failed = [v for v in verdicts if not v.passed]
    if not failed:
        return "No failures."
    lines = [f"Failures ({len(failed)}):"]
    for v in failed:
        lines.append(f"- {v.example.id} [{v.example.language}] {v.example.text!r}")
        lines += [f"    {problem}" for problem in v.problems()]
    return "\n".join(lines)
