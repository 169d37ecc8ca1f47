"""The product's imports flow one way, so each room can be read (and changed) without the rooms
above it: server → evals → channels → graphs → nodes → tools → store.

Nodes and tools may import the graph's shared vocabulary (its state, run context, prompts,
features, settings, language and model loading), as LangGraph's templates do; that vocabulary in
turn imports only the store. Every import counts, inside a function too: an import moved into a
function to dodge a cycle is still a cycle. The modules that must stay light (the webhook's
process, the relay, the send path) are checked by importing them in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("server", "evals", "channels", "graphs", "nodes", "tools", "store")
"""The product's folders, each allowed to import only the folders after it."""

VOCABULARY = frozenset(
    {
        "graphs.state",
        "graphs.context",
        "graphs.prompts",
        "graphs.features",
        "graphs.settings",
        "graphs.language",
        "graphs.models",
        "graphs.structured",
    }
)
"""The graph's modules that nodes and tools may import (they import only the store)."""

EXCEPTIONS = {
    ("graphs.models", "graphs.offline.model"): "with no model configured, the model loader "
    "starts the offline stand-in, so development and tests take the same code path",
}
"""Imports against the flow, each with its reason (the cycle check still covers them)."""


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for layer in LAYERS:
        for path in (ROOT / layer).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _product_module(name: str) -> str | None:
    """The product module an imported name lives in (`store.inbox.claim_due` → `store.inbox`)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(path: Path) -> Iterator[tuple[str, int]]:
    """Every product module `path` imports (anywhere in the file), with the line."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _product_module(name)
            if target is not None:
                yield target, node.lineno


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        edges[name] = {target for target, _ in imports_of(path) if target != name}
    return edges


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def allowed(source: str, target: str) -> bool:
    """Whether `source` may import `target` under the one-way rule."""
    if (source, target) in EXCEPTIONS:
        return True
    if source.split(".")[0] == target.split(".")[0]:
        return source not in VOCABULARY or target in VOCABULARY
    if source in VOCABULARY:
        return target.startswith("store.")
    if source.split(".")[0] in ("nodes", "tools") and target in VOCABULARY:
        return True
    return _layer(source) < _layer(target)


def test_imports_flow_one_way() -> None:
    wrong = [
        f"{MODULES[source].relative_to(ROOT)}:{line} imports {target}"
        for source in MODULES
        for target, line in imports_of(MODULES[source])
        if target != source and not allowed(source, target)
    ]
    assert not wrong, "imports against the flow:\n" + "\n".join(sorted(wrong))


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_through_others() -> None:
    assert _cycles(_edges()) == []


def test_the_checks_see_a_cycle_and_an_upward_import() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert not allowed("tools.reminders", "server.jobs.reminders")
    assert not allowed("store.memory", "graphs.settings")
    assert not allowed("graphs.prompts", "tools.finance")
    assert not allowed("graphs.state", "graphs.assistant")
    assert allowed("nodes.router", "graphs.prompts")
    assert not allowed("nodes.router", "graphs.assistant")
    assert allowed("server.jobs.turn", "store.inbox")


@pytest.mark.parametrize("module", ["server.app", "server.relay", "server.jobs.send"])
def test_the_light_processes_do_not_load_langgraph(module: str) -> None:
    """The webhook's process, the relay and the send path never need the graph."""
    code = (
        f"import sys, {module}\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'langgraph', 'langchain_core'})\n"
        "print(','.join(heavy))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "", f"{module} loads {done.stdout.strip()}"
