"""Run the evaluation set as a LangSmith experiment.

The dataset is uploaded under a fixed name, idempotently: each example's LangSmith id is derived
from the dataset name and the example's `id`, so a second upload only adds new examples and
updates changed ones. The experiment runs only the examples given (a `--language` or `--only`
slice), even when the stored dataset holds more. Its target and evaluators are the local runner's
(`evals.target`, `evals.scoring`), so both report the same numbers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from evals.dataset import Example
from evals.scoring import Outcome, judge
from evals.target import GraphTarget

DEFAULT_DATASET_NAME = "conversa-assistant-evals"
API_KEY_VARIABLES = ("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY")
_NAMESPACE = uuid.UUID("5b0c6c7e-2f5e-4d8e-9a51-8e1f0c0a7e11")


def has_api_key() -> bool:
    """Whether a LangSmith API key is configured."""
    return any(os.environ.get(name) for name in API_KEY_VARIABLES)


def example_uuid(dataset_name: str, example_id: str) -> str:
    """The LangSmith id of an example: stable across uploads."""
    return str(uuid.uuid5(_NAMESPACE, f"{dataset_name}/{example_id}"))


def _inputs(example: Example) -> dict[str, Any]:
    return {"id": example.id, "text": example.text, "features": example.plan}


def _reference(example: Example) -> dict[str, Any]:
    return {
        "route": example.route,
        "tools": list(example.tools),
        "args": example.args,
        "language": example.language,
    }


def sync_dataset(client: Any, name: str, examples: Sequence[Example]) -> Any:
    """Create or update the LangSmith dataset ``name`` so it holds these examples' current data.

    Stored examples that are not among ``examples`` are left as they are.
    """
    if client.has_dataset(dataset_name=name):
        dataset = client.read_dataset(dataset_name=name)
    else:
        dataset = client.create_dataset(
            name, description="conversa: expected route and tool calls per message (pt/en)."
        )
    existing = {str(e.id): e for e in client.list_examples(dataset_id=dataset.id)}
    new = []
    for example in examples:
        example_id = example_uuid(name, example.id)
        inputs, outputs = _inputs(example), _reference(example)
        metadata = {"id": example.id, "language": example.language}
        stored = existing.get(example_id)
        if stored is None:
            new.append(
                {"id": example_id, "inputs": inputs, "outputs": outputs, "metadata": metadata}
            )
        elif stored.inputs != inputs or stored.outputs != outputs:
            client.update_example(example_id, inputs=inputs, outputs=outputs, metadata=metadata)
    if new:
        client.create_examples(dataset_id=dataset.id, examples=new)
    return dataset


def _example_of(inputs: dict[str, Any], reference: dict[str, Any]) -> Example:
    return Example(
        id=str(inputs.get("id", "")),
        text=str(inputs.get("text", "")),
        language=reference.get("language", "pt"),
        route=str(reference.get("route", "")),
        tools=tuple(reference.get("tools") or ()),
        args=dict(reference.get("args") or {}),
        features=tuple(inputs.get("features") or ()),
    )


def _evaluator(key: str, check: str) -> Callable[..., dict[str, Any]]:
    def evaluate(
        inputs: dict[str, Any], outputs: dict[str, Any], reference_outputs: dict[str, Any]
    ) -> dict[str, Any]:
        verdict = judge(_example_of(inputs, reference_outputs), Outcome.from_dict(outputs))
        return {"key": key, "score": bool(getattr(verdict, check))}

    evaluate.__name__ = key
    return evaluate


CHECKS = {
    "route_correct": "route_ok",
    "tools_correct": "tools_ok",
    "reply_language_correct": "language_ok",
    "all_correct": "passed",
}
"""LangSmith feedback key → the `evals.scoring.Verdict` attribute it reports."""

EVALUATORS = [_evaluator(key, check) for key, check in CHECKS.items()]
"""LangSmith row evaluators, one per check of `evals.scoring`."""


def run_experiment(
    examples: Sequence[Example],
    *,
    dataset_name: str = DEFAULT_DATASET_NAME,
    experiment_prefix: str = "conversa",
    client: Any = None,
) -> Any:
    """Upload ``examples`` and evaluate the assistant graph on them (only them) in LangSmith.

    Return the experiment's results once its runs and feedback have been sent.
    """
    if client is None:
        from langsmith import Client

        client = Client()
    dataset = sync_dataset(client, dataset_name, examples)
    target = GraphTarget()

    def predict(inputs: dict[str, Any]) -> dict[str, Any]:
        example = _example_of(inputs, {"route": "general"})
        return target(example).to_dict()

    # The stored dataset may hold more examples (other languages, older runs): run only these.
    selected = client.list_examples(
        dataset_id=dataset.id, example_ids=[example_uuid(dataset_name, e.id) for e in examples]
    )
    results = client.evaluate(
        predict,
        data=list(selected),
        evaluators=EVALUATORS,
        experiment_prefix=experiment_prefix,
        description="conversa assistant graph on the evaluation set (tools not executed).",
        max_concurrency=0,
    )
    client.flush()  # runs are uploaded in the background: send them before the command ends
    return results
