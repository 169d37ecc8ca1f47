"""`conversa eval`: run the evaluation set through the assistant graph and print a score table.

Locally (the default) every example runs through the real graph, stopping before any tool
executes, with whichever model the environment configures (the offline model without
`OPENAI_API_KEY`/`OPENAI_BASE_URL`). `--langsmith` runs the same set as a LangSmith experiment.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from langsmith.utils import (
    LangSmithAuthError,
    LangSmithConnectionError,
    LangSmithError,
    get_api_url,
)

from evals.dataset import DATASET_PATH, DatasetError, Example, load_dataset
from evals.scoring import Outcome, Verdict, format_failures, format_table, judge, score

NO_KEY_MESSAGE = (
    "conversa eval --langsmith: no LangSmith API key. Set LANGSMITH_API_KEY (and, for a "
    "self-hosted LangSmith, LANGSMITH_ENDPOINT), or run without --langsmith for a local score."
)


def evaluate(examples: Sequence[Example], target: Callable[[Example], Outcome]) -> list[Verdict]:
    """Run every example through ``target`` and judge what it did."""
    return [judge(example, target(example)) for example in examples]


def report(verdicts: Sequence[Verdict], model: str) -> str:
    """The score table and the failures, as printed by the command."""
    heading = f"conversa eval: {len(verdicts)} examples, model: {model}"
    return "\n\n".join([heading, format_table(score(verdicts)), format_failures(verdicts)])


def _model_label() -> str:
    from graphs.context import Context
    from graphs.settings import LLMSettings

    if not LLMSettings().configured:
        return "offline (no OPENAI_API_KEY or OPENAI_BASE_URL set)"
    return Context().model


def build_parser() -> argparse.ArgumentParser:
    """Describe the command's options."""
    parser = argparse.ArgumentParser(
        prog="conversa eval",
        description="Run the evaluation set through the assistant graph and print a score table "
        "(route, tool-call and reply-language accuracy).",
    )
    parser.add_argument(
        "--dataset", type=Path, default=DATASET_PATH, help="JSONL file (default: %(default)s)"
    )
    parser.add_argument("--language", choices=("pt", "en"), help="only examples in this language")
    parser.add_argument("--only", metavar="TEXT", help="only examples whose id contains TEXT")
    parser.add_argument(
        "--min-score",
        type=float,
        metavar="X",
        help="exit 1 when the share of examples passing every check is below X (0 to 1)",
    )
    parser.add_argument(
        "--langsmith",
        action="store_true",
        help="run as a LangSmith experiment (needs LANGSMITH_API_KEY)",
    )
    parser.add_argument(
        "--langsmith-dataset",
        metavar="NAME",
        help="LangSmith dataset name (default: conversa-assistant-evals)",
    )
    parser.add_argument(
        "--experiment-prefix", default="conversa", help="LangSmith experiment name prefix"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status.

    0 ok, 1 below --min-score, 2 usage error (or, with --langsmith, LangSmith unreachable or
    refusing the key).
    """
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.min_score is not None and not 0 <= args.min_score <= 1:
        print("conversa eval: --min-score must be between 0 and 1", file=sys.stderr)
        return 2
    try:
        examples = load_dataset(args.dataset)
    except (OSError, DatasetError) as exc:
        print(f"conversa eval: cannot read the dataset: {exc}", file=sys.stderr)
        return 2
    if args.language:
        examples = [e for e in examples if e.language == args.language]
    if args.only:
        examples = [e for e in examples if args.only in e.id]
    if not examples:
        print("conversa eval: no example matches the filters", file=sys.stderr)
        return 2

    if args.langsmith:
        return _run_langsmith(examples, args)

    from evals.target import GraphTarget

    verdicts = evaluate(examples, GraphTarget())
    print(report(verdicts, _model_label()))
    overall = score(verdicts)[0].passed
    if args.min_score is not None and overall < args.min_score:
        print(f"\nScore {overall:.1%} is below --min-score {args.min_score:.1%}.", file=sys.stderr)
        return 1
    return 0


def _langsmith_failure(exc: LangSmithError) -> str:
    """Say why LangSmith could not be used and what to check."""
    endpoint = get_api_url(None)
    if isinstance(exc, LangSmithConnectionError):
        return (
            f"conversa eval --langsmith: cannot reach LangSmith at {endpoint}. Check "
            "LANGSMITH_ENDPOINT and the network, or run without --langsmith for a local score."
        )
    if isinstance(exc, LangSmithAuthError):
        return (
            "conversa eval --langsmith: LangSmith refused the request (the API key was not "
            f"accepted) at {endpoint}. Check LANGSMITH_API_KEY (and LANGSMITH_WORKSPACE_ID for an "
            "org-scoped key), or run without --langsmith for a local score."
        )
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return (
        f"conversa eval --langsmith: a LangSmith request failed at {endpoint}: {detail}. Check "
        "LANGSMITH_ENDPOINT and LANGSMITH_API_KEY, or run without --langsmith for a local score."
    )


def _run_langsmith(examples: list[Example], args: argparse.Namespace) -> int:
    from evals.experiment import DEFAULT_DATASET_NAME, has_api_key, run_experiment

    if not has_api_key():
        print(NO_KEY_MESSAGE, file=sys.stderr)
        return 2
    try:
        results = run_experiment(
            examples,
            dataset_name=args.langsmith_dataset or DEFAULT_DATASET_NAME,
            experiment_prefix=args.experiment_prefix,
        )
    except LangSmithError as exc:
        print(_langsmith_failure(exc), file=sys.stderr)
        return 2
    print(f"LangSmith experiment: {getattr(results, 'experiment_name', results)}")
    verdicts = []
    by_id = {e.id: e for e in examples}
    for row in results:
        example = by_id.get(str((row["example"].inputs or {}).get("id")))
        if example is not None:
            verdicts.append(judge(example, Outcome.from_dict(row["run"].outputs or {})))
    if verdicts:
        print(report(verdicts, _model_label()))
    overall = score(verdicts)[0].passed if verdicts else 0.0
    if args.min_score is not None and overall < args.min_score:
        print(f"\nScore {overall:.1%} is below --min-score {args.min_score:.1%}.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
