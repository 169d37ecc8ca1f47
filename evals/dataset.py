"""Read and check `dataset.jsonl`: one example a line, what the assistant should do with it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from graphs.features import FEATURES, ROUTES
from graphs.language import Language
from nodes.specialists import SPECIALISTS

DATASET_PATH = Path(__file__).with_name("dataset.jsonl")
"""The evaluation set shipped with the code."""

TOOL_NAMES = frozenset(tool.name for s in SPECIALISTS.values() for tool in s.tools)
"""Every tool a specialist may call (the names the graph, the offline model and this set share)."""

_KEYS = {"id", "text", "language", "features", "route", "tools", "args"}


class DatasetError(ValueError):
    """An example in the evaluation set is malformed; the message names the line and the fix."""


@dataclass(frozen=True)
class Example:
    """One message and what the assistant should do with it."""

    id: str
    """Unique, stable name (LangSmith examples are keyed by it)."""
    text: str
    """What the user writes."""
    language: Language
    """The language the reply must be in."""
    route: str
    """The route the router must choose."""
    tools: tuple[str, ...] = ()
    """The tools the specialist's first step must call, in order; empty: it answers in text."""
    args: dict[str, Any] = field(default_factory=dict)
    """A subset of the first tool call's expected arguments."""
    features: tuple[str, ...] | None = None
    """The user's plan features; None means all of them."""

    @property
    def plan(self) -> list[str]:
        """The features the run context gets."""
        return list(FEATURES) if self.features is None else list(self.features)

    @classmethod
    def from_dict(cls, data: Any) -> Example:
        """Build an example from its JSON object, or raise `DatasetError` saying what is wrong."""
        if not isinstance(data, dict):
            raise DatasetError("an example must be a JSON object")
        unknown = set(data) - _KEYS
        if unknown:
            raise DatasetError(f"unknown keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
        for key in ("id", "text", "language", "route"):
            if not isinstance(data.get(key), str) or not data[key].strip():
                raise DatasetError(f"{key!r} must be a non-empty string")
        if data["language"] not in get_args(Language):
            raise DatasetError(f"language must be one of {get_args(Language)}")
        if data["route"] not in ROUTES:
            raise DatasetError(f"route {data['route']!r} is not one of {tuple(ROUTES)}")
        tools = data.get("tools", [])
        if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
            raise DatasetError("'tools' must be a list of tool names")
        if unknown_tools := [t for t in tools if t not in TOOL_NAMES]:
            raise DatasetError(f"unknown tools {unknown_tools}; known: {sorted(TOOL_NAMES)}")
        args = data.get("args", {})
        if not isinstance(args, dict) or (args and not tools):
            raise DatasetError("'args' must be an object, and only given with 'tools'")
        _check_meaning(args)
        features = data.get("features")
        if features is not None:
            if not isinstance(features, list) or any(f not in FEATURES for f in features):
                raise DatasetError(f"'features' must be a list of {sorted(FEATURES)}")
            features = tuple(features)
        return cls(
            id=data["id"],
            text=data["text"],
            language=data["language"],
            route=data["route"],
            tools=tuple(tools),
            args=dict(args),
            features=features,
        )

    def to_dict(self) -> dict[str, Any]:
        """The example as its JSON object."""
        data: dict[str, Any] = {"id": self.id, "text": self.text, "language": self.language}
        if self.features is not None:
            data["features"] = list(self.features)
        data |= {"route": self.route, "tools": list(self.tools)}
        if self.args:
            data["args"] = self.args
        return data


def _check_meaning(args: dict[str, Any]) -> None:
    """Refuse an expected amount or category that the tools themselves would refuse."""
    from store import categories
    from tools._runtime import ToolError
    from tools.amounts import parse_amount

    if "category" in args and categories.find(str(args["category"])) is None:
        raise DatasetError(
            f"category {args['category']!r} is not on the canonical list (store/categories.py); "
            f"use one of: {categories.allowed()}"
        )
    if "amount" in args:
        try:
            parse_amount(args["amount"])
        except ToolError as exc:
            raise DatasetError(f"amount: {exc}") from exc


def load_dataset(path: Path = DATASET_PATH) -> list[Example]:
    """Read the examples of a JSONL file, checking each one and that ids are unique."""
    examples: list[Example] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            example = Example.from_dict(json.loads(line))
        except (ValueError, DatasetError) as exc:
            raise DatasetError(f"{path}:{number}: {exc}") from exc
        if example.id in seen:
            raise DatasetError(f"{path}:{number}: duplicate id {example.id!r}")
        seen.add(example.id)
        examples.append(example)
    if not examples:
        raise DatasetError(f"{path}: no examples")
    return examples
