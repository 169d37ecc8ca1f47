"""The part of LangSmith's REST API the official `langsmith` client uses, kept in memory.

`tests.fakes.FakeLangSmith` serves it over HTTP. It covers run ingestion (multipart and batch),
datasets and examples (the JSON endpoints the client falls back to when `/info` announces no
multipart examples), experiments (sessions) and feedback. Answers have the shapes the client
parses (ids, `created_at`/`modified_at`, `tenant_id`); unknown paths answer 404 and are kept
in `unhandled`, so a test sees when the client needs something this fake does not serve.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

TENANT_ID = "00000000-0000-4000-8000-0000000015a1"
"""The workspace every object of the fake belongs to."""

Answer = tuple[int, Any]
"""An HTTP status and the JSON body to send with it."""

_UUID = r"([0-9a-fA-F-]{36})"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _not_found(what: str) -> Answer:
    return 404, {"detail": f"{what} not found"}


@dataclass
class LangSmithAPI:
    """Datasets, examples, experiments, runs and feedback, as LangSmith's API keeps them."""

    api_key: str | None = None
    """When set, requests with another `x-api-key` get a 401."""
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    examples: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    """Every request served, as (method, path)."""
    unhandled: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> Answer:
        """Answer one request; `query` is `urllib.parse.parse_qs` output."""
        with self._lock:
            self.requests.append((method, path))
            if self.api_key is not None and headers.get("x-api-key") != self.api_key:
                return 401, {"detail": "Invalid token"}
            for pattern, route in self._routes():
                if (match := re.fullmatch(pattern, f"{method} {path}")) is not None:
                    return route(*match.groups(), query=query, headers=headers, body=body)
            self.unhandled.append((method, path))
            return 404, {"detail": f"the fake LangSmith does not serve {method} {path}"}

    def _routes(self) -> list[tuple[str, Any]]:
        return [
            (r"GET /info", lambda **_: (200, {})),
            (r"POST /runs/multipart", self._ingest_multipart),
            (r"POST /runs/batch", self._ingest_batch),
            (r"GET /datasets", self._list_datasets),
            (r"POST /datasets", self._create_dataset),
            (rf"GET /datasets/{_UUID}", self._read_dataset),
            (r"GET /examples", self._list_examples),
            (r"POST /examples/bulk", self._create_examples),
            (rf"GET /examples/{_UUID}", self._read_example),
            (rf"PATCH /examples/{_UUID}", self._update_example),
            (r"GET /sessions", self._list_sessions),
            (r"POST /sessions", self._create_session),
            (rf"GET /sessions/{_UUID}", self._read_session),
            (rf"PATCH /sessions/{_UUID}", self._update_session),
            (r"POST /feedback", self._create_feedback),
        ]

    # ------------------------------------------------------------------ runs

    def _ingest_multipart(self, *, headers: Any, body: bytes, **_: Any) -> Answer:
        head = f"Content-Type: {headers.get('content-type')}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + body)
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition") or ""
            payload = json.loads(part.get_payload(decode=True) or b"null")
            kind, _, rest = str(name).partition(".")
            run_id, _, key = rest.partition(".")
            if kind == "feedback":
                self.feedback.append(payload)
            elif kind in ("post", "patch"):
                self._merge_run(run_id, {key: payload} if key else payload)
        return 202, {}

    def _ingest_batch(self, *, body: bytes, **_: Any) -> Answer:
        batch = json.loads(body)
        for run in [*batch.get("post", []), *batch.get("patch", [])]:
            self._merge_run(str(run["id"]), run)
        return 202, {}

    def _merge_run(self, run_id: str, fields: dict[str, Any]) -> None:
        run = self.runs.setdefault(run_id, {"id": run_id})
        run.update({k: v for k, v in fields.items() if v is not None})

    def root_runs(self, session_name: str) -> list[dict[str, Any]]:
        """The top-level runs traced into the experiment (or project) named ``session_name``."""
        with self._lock:
            ids = {s["id"] for s in self.sessions.values() if s["name"] == session_name}
            return [
                run
                for run in self.runs.values()
                if not run.get("parent_run_id")
                and (run.get("session_name") == session_name or run.get("session_id") in ids)
            ]

    # ------------------------------------------------------------ datasets

    def _list_datasets(self, *, query: dict[str, list[str]], **_: Any) -> Answer:
        found = [d for d in self.datasets.values() if d["name"] in query.get("name", [d["name"]])]
        return 200, found[: int(query.get("limit", ["100"])[0])]

    def _create_dataset(self, *, body: bytes, **_: Any) -> Answer:
        data = json.loads(body)
        if any(d["name"] == data["name"] for d in self.datasets.values()):
            return 409, {"detail": f"Dataset {data['name']} already exists"}
        now = _now()
        dataset = {
            "id": str(uuid.uuid4()),
            "name": data["name"],
            "description": data.get("description"),
            "data_type": data.get("data_type", "kv"),
            "created_at": now,
            "modified_at": now,
            "tenant_id": TENANT_ID,
            "example_count": 0,
            "session_count": 0,
            "metadata": (data.get("extra") or {}).get("metadata"),
        }
        self.datasets[dataset["id"]] = dataset
        return 200, dataset

    def _read_dataset(self, dataset_id: str, **_: Any) -> Answer:
        if dataset_id not in self.datasets:
            return _not_found(f"Dataset {dataset_id}")
        return 200, self.datasets[dataset_id]

    # ------------------------------------------------------------ examples

    def _list_examples(self, *, query: dict[str, list[str]], **_: Any) -> Answer:
        found = [
            e
            for e in self.examples.values()
            if e["dataset_id"] in query.get("dataset", [e["dataset_id"]])
            and e["id"] in query.get("id", [e["id"]])
        ]
        offset, limit = int(query.get("offset", ["0"])[0]), int(query.get("limit", ["100"])[0])
        return 200, found[offset : offset + limit]

    def _create_examples(self, *, body: bytes, **_: Any) -> Answer:
        new = json.loads(body)
        ids = [str(e.get("id") or uuid.uuid4()) for e in new]
        if clash := [i for i in ids if i in self.examples] or len(set(ids)) < len(ids):
            return 409, {"detail": f"Examples already exist: {clash}"}
        if missing := {e["dataset_id"] for e in new} - set(self.datasets):
            return _not_found(f"Dataset {sorted(missing)}")
        created = []
        for example_id, data in zip(ids, new, strict=True):
            now = _now()
            example = {
                "id": example_id,
                "dataset_id": data["dataset_id"],
                "inputs": data.get("inputs") or {},
                "outputs": data.get("outputs"),
                "metadata": data.get("metadata"),
                "created_at": data.get("created_at") or now,
                "modified_at": now,
                "source_run_id": None,
                "attachment_urls": None,
            }
            self.examples[example_id] = example
            self.datasets[data["dataset_id"]]["example_count"] += 1
            created.append(example)
        return 200, created

    def _read_example(self, example_id: str, **_: Any) -> Answer:
        if example_id not in self.examples:
            return _not_found(f"Example {example_id}")
        return 200, self.examples[example_id]

    def _update_example(self, example_id: str, *, body: bytes, **_: Any) -> Answer:
        if example_id not in self.examples:
            return _not_found(f"Example {example_id}")
        changes = json.loads(body)
        example = self.examples[example_id]
        for key in ("inputs", "outputs", "metadata"):
            if key in changes:
                example[key] = changes[key]
        example["modified_at"] = _now()
        return 200, example

    # ------------------------------------------------- experiments, feedback

    def _list_sessions(self, *, query: dict[str, list[str]], **_: Any) -> Answer:
        found = [s for s in self.sessions.values() if s["name"] in query.get("name", [s["name"]])]
        return 200, found[: int(query.get("limit", ["100"])[0])]

    def _create_session(self, *, body: bytes, **_: Any) -> Answer:
        data = json.loads(body)
        if any(s["name"] == data["name"] for s in self.sessions.values()):
            return 409, {"detail": f"Project {data['name']} already exists"}
        if (dataset_id := data.get("reference_dataset_id")) and dataset_id not in self.datasets:
            return _not_found(f"Dataset {dataset_id}")
        session = {
            "id": str(data.get("id") or uuid.uuid4()),
            "name": data["name"],
            "description": data.get("description"),
            "extra": data.get("extra"),
            "start_time": _now(),
            "end_time": None,
            "tenant_id": TENANT_ID,
            "reference_dataset_id": dataset_id,
        }
        self.sessions[session["id"]] = session
        if dataset_id:
            self.datasets[dataset_id]["session_count"] += 1
        return 200, session

    def _read_session(self, session_id: str, **_: Any) -> Answer:
        if session_id not in self.sessions:
            return _not_found(f"Project {session_id}")
        return 200, self.sessions[session_id]

    def _update_session(self, session_id: str, *, body: bytes, **_: Any) -> Answer:
        if session_id not in self.sessions:
            return _not_found(f"Project {session_id}")
        changes = {k: v for k, v in json.loads(body).items() if v is not None}
        self.sessions[session_id].update(changes)
        return 200, self.sessions[session_id]

    def _create_feedback(self, *, body: bytes, **_: Any) -> Answer:
        feedback = json.loads(body)
        self.feedback.append(feedback)
        return 200, feedback


def forget_langsmith_settings() -> None:
    """Drop what `langsmith` caches per process, so the next client reads the environment."""
    from langsmith import run_trees
    from langsmith import utils as ls_utils

    ls_utils.get_env_var.cache_clear()
    ls_utils.get_tracer_project.cache_clear()
    run_trees._CLIENT = None  # the library keeps one client per process
