"""Control endpoints of :mod:`channels.sandbox.twilio`: ``/healthz`` and ``/sandbox/*``.

Other processes (the demo, the CLI chat, benchmarks) drive the sandbox over HTTP through these;
they are built on :class:`~channels.sandbox.twilio.TwilioSandbox`'s public API only, which
:class:`Controlled` names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from channels.sandbox._wire import ApiError, Reply, first


class Controlled(Protocol):
    """The part of the sandbox's public API the control endpoints use."""

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every created message."""
        ...

    @property
    def status_callbacks(self) -> list[dict[str, Any]]:
        """Every status callback attempt."""
        ...

    @property
    def typing_indicators(self) -> list[dict[str, Any]]:
        """Every accepted typing indicator."""
        ...

    def inject_error(
        self, code: int, status: int, message: str | None, times: int, to: str | None, endpoint: str
    ) -> None:
        """Fail upcoming requests."""
        ...

    def send_status(self, sid: str, status: str, error_code: int | None, url: str | None) -> int:
        """Post a status callback now."""
        ...

    def add_media(self, data: bytes, content_type: str, *, account_sid: str) -> str:
        """Serve a file as inbound media."""
        ...

    def reset(self) -> None:
        """Forget what the sandbox has seen."""
        ...


def _matching(
    records: list[dict[str, Any]], query: Mapping[str, list[str]], keys: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Keep ``records`` whose fields equal the query parameters named in ``keys``."""
    fields = {k: v[-1] for k, v in query.items() if k in keys and v}
    return [r for r in records if all(r.get(k) == v for k, v in fields.items())]


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    """Parse a control request's JSON object body."""
    try:
        spec = json.loads(raw or b"{}")
    except ValueError as exc:
        raise ApiError(20001, 400, f"Invalid {what} spec: {exc}") from exc
    if not isinstance(spec, dict):
        raise ApiError(20001, 400, f"Invalid {what} spec: expected a JSON object")
    return spec


def _inject_error(sandbox: Controlled, raw: bytes) -> dict[str, Any]:
    """Handle ``POST /sandbox/errors``: register an injected error."""
    spec = _json_object(raw, "error")
    try:
        rule = {
            "code": int(spec["code"]),
            "status": int(spec.get("status", 400)),
            "message": spec.get("message"),
            "times": int(spec.get("times", 1)),
            "to": spec.get("to"),
            "endpoint": str(spec.get("endpoint", "messages")),
        }
        sandbox.inject_error(**rule)
    except (ValueError, KeyError, TypeError) as exc:
        raise ApiError(20001, 400, f"Invalid error spec: {exc!r}") from exc
    return rule


def _send_status(sandbox: Controlled, raw: bytes) -> dict[str, Any]:
    """Handle ``POST /sandbox/status``: post one status callback synchronously."""
    spec = _json_object(raw, "status")
    try:
        sid, status = str(spec["sid"]), str(spec["status"])
        code, url = spec.get("error_code"), spec.get("url")
        error_code = None if code is None else int(code)
        url = None if url is None else str(url)
    except (ValueError, KeyError, TypeError) as exc:
        raise ApiError(20001, 400, f"Invalid status spec: {exc!r}") from exc
    try:
        http_status = sandbox.send_status(sid, status, error_code, url)
    except KeyError as exc:
        raise ApiError(20404, 404, f"No sandbox message {sid!r}") from exc
    except ValueError as exc:
        raise ApiError(20001, 400, str(exc)) from exc
    except Exception as exc:  # the receiver failed; the status was still updated
        raise ApiError(11200, 502, f"Status callback for {sid} failed: {exc!r}") from exc
    return {"sid": sid, "status": status, "http_status": http_status}


def _add_media(sandbox: Controlled, query: Mapping[str, list[str]], body: bytes) -> Reply:
    """Handle ``POST /sandbox/media?account_sid=AC...&content_type=audio/ogg``: store a file."""
    account = first(query, "account_sid")
    content_type = first(query, "content_type")
    if not account or not content_type:
        raise ApiError(20001, 400, "account_sid and content_type query parameters are required")
    if not body:
        raise ApiError(20001, 400, "The request body (the file) is empty")
    url = sandbox.add_media(body, content_type, account_sid=account)
    return Reply(201, {"url": url, "content_type": content_type, "size": len(body)})


def control(
    sandbox: Controlled, method: str, path: str, query: Mapping[str, list[str]], body: bytes
) -> Reply | None:
    """Answer a ``/healthz`` or ``/sandbox/*`` request, or return ``None`` for other paths."""
    route = (method, path)
    if route == ("GET", "/healthz"):
        return Reply(200, {"status": "ok"})
    if route == ("GET", "/sandbox/messages"):
        return Reply(200, _matching(sandbox.messages, query, ("to", "from", "account_sid")))
    if route == ("POST", "/sandbox/errors"):
        return Reply(201, _inject_error(sandbox, body))
    if route == ("POST", "/sandbox/reset"):
        sandbox.reset()
        return Reply(200, {"status": "ok"})
    if route == ("POST", "/sandbox/status"):
        return Reply(200, _send_status(sandbox, body))
    if route == ("GET", "/sandbox/status"):
        return Reply(200, _matching(sandbox.status_callbacks, query, ("sid", "status")))
    if route == ("POST", "/sandbox/media"):
        return _add_media(sandbox, query, body)
    if route == ("GET", "/sandbox/typing"):
        keys = ("message_id", "account_sid")
        return Reply(200, _matching(sandbox.typing_indicators, query, keys))
    return None
