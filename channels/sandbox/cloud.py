"""Serve a local stand-in for the slice of Meta's WhatsApp Cloud API (Graph API) conversa uses.

Each business number is registered with `add_number(phone_number_id, display_phone_number,
token, app_secret)`; requests must carry that number's bearer token. The sandbox answers:

* ``POST /{phone-number-id}/messages``: text, template (registered with `add_template`, rendered
  into ``body``) and interactive (reply buttons, lists, within Meta's limits) messages, each
  recorded in `messages` and answered with a ``wamid``; an interactive one also records
  ``choices`` (``{"type": "buttons" or "list", "button", "options": [{"id", "title",
  "description"}]}``, None for any other message), as the Twilio sandbox does. The read
  receipt (``"status": "read"``, with or without ``typing_indicator``) is recorded in `typing`.
* ``GET /{media-id}`` (a file added with `add_media`) answers its URL, on the sandbox itself;
  that URL serves the bytes to the same bearer token, each try recorded in `media_fetches`.
* `fail_next` makes the next requests fail with the Graph API's error body and code.

With a `webhook_url`, every accepted message gets ``sent`` then ``delivered`` status webhooks,
signed with the number's app secret, from a background thread (recorded in `status_callbacks`);
`send_status` posts one at once. `signed_inbound` and `signed_webhook` build the signed POST Meta
would make for a user's message, and `signed_press` the one for a press on one of our buttons or
list rows, for tests and the chat. Other processes use ``/healthz`` and
``/sandbox/{messages,typing,errors,reset}``. Run it with ``python -m channels.sandbox.cloud``.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import signal
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from channels.sandbox._callbacks import StatusWorker
from channels.sandbox._cloud_api import CloudApi, CloudState, ErrorRule, MediaFile, Number
from channels.sandbox._cloud_wire import (
    STATUSES,
    GraphError,
    press_content,
    signed,
    status_item,
    user_message,
    webhook_document,
)
from channels.sandbox._server import SandboxServer
from channels.sandbox._wire import RawReply, Reply

__all__ = ["CloudSandbox", "main"]

logger = logging.getLogger(__name__)


class CloudSandbox:
    """Fake Graph API for WhatsApp on a local ``ThreadingHTTPServer``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        webhook_url: str | None = None,
        auto_status: Sequence[str] = ("sent", "delivered"),
        status_delay: float = 0.0,
        callback_timeout: float = 5.0,
    ) -> None:
        """Configure the sandbox; `auto_status` are the statuses posted to `webhook_url` for
        each accepted message, in order (``()``, or no URL, posts none)."""
        if unknown := [s for s in auto_status if s not in STATUSES]:
            raise ValueError(f"unknown statuses in auto_status: {unknown}")
        self.host, self.port = host, port
        self.webhook_url = webhook_url
        """Where status webhooks go (the service's ``/webhooks/cloud``); settable at any time."""
        self.auto_status = tuple(auto_status)
        self.callback_timeout = callback_timeout
        self._state = CloudState()
        self._api = CloudApi(self._state, lambda: self.url, self._follow_up)
        self._worker = StatusWorker(self._progress, status_delay)
        self._server: SandboxServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> Self:
        """Bind the server; serve requests and status webhooks from daemon threads."""
        if self._server is not None:
            raise RuntimeError("CloudSandbox is already running")
        self._server = SandboxServer((self.host, self.port), self._answer)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="cloud-sandbox", daemon=True)  # fmt: skip
        self._thread.start()
        self._worker.start()
        return self

    def stop(self) -> None:
        """Shut the server down, dropping status webhooks not yet posted."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        self._worker.stop()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> Self:
        return self if self._server is not None else self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL (``CLOUD_API_BASE_URL``), e.g. ``http://127.0.0.1:5051``."""
        if self._server is None:
            raise RuntimeError("CloudSandbox is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"

    # -- state -------------------------------------------------------------------

    def add_number(
        self, phone_number_id: str, display_phone_number: str, token: str, app_secret: str
    ) -> None:
        """Serve a business number: its Graph API id, the number users see, its access token
        and the app secret its webhooks are signed with."""
        if not phone_number_id.isdigit():
            raise ValueError("phone_number_id is digits, as Meta's are")
        number = Number(phone_number_id, display_phone_number, token, app_secret)
        with self._state.cond:
            self._state.numbers[phone_number_id] = number

    def add_template(
        self, phone_number_id: str, name: str, text: str, language: str = "pt_BR"
    ) -> None:
        """Approve a template (body text with ``{{1}}``...) for the number."""
        with self._state.cond:
            self._state.templates[(phone_number_id, name, language)] = text

    def add_media(self, data: bytes, mime_type: str, phone_number_id: str) -> str:
        """Store a file a user sent to the number; return its media id."""
        media_id = str(10**15 + secrets.randbelow(9 * 10**15))  # numeric, as Meta's are
        with self._state.cond:
            self._state.media[media_id] = MediaFile(phone_number_id, mime_type, bytes(data))
        return media_id

    def fail_next(
        self,
        code: int,
        *,
        status: int = 400,
        message: str | None = None,
        details: str | None = None,
        times: int = 1,
        to: str | None = None,
        endpoint: str = "messages",
    ) -> None:
        """Fail the next `times` requests to `endpoint` ("messages", "typing" or "media") with
        Meta's error `code`; for "messages", only sends to `to` (digits) when given."""
        self._state.inject(ErrorRule(code, status, message, details, times, to, endpoint))

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every accepted message: id (the wamid), phone_number_id, to, type, body (the text,
        the rendered template or the interactive body), template, interactive, choices (an
        interactive message's options, normalised), status, payload."""
        return self._state.all("messages")

    def wait_for_messages(
        self, count: int, timeout: float = 10.0, **fields: Any
    ) -> list[dict[str, Any]]:
        """Block until `count` messages match `fields` (e.g. ``to=``) and return them."""
        return self._state.wait_for("messages", count, timeout, fields)

    @property
    def typing(self) -> list[dict[str, Any]]:
        """Every read receipt: phone_number_id, message_id, typing (with the indicator), at."""
        return self._state.all("typing")

    @property
    def media_fetches(self) -> list[dict[str, Any]]:
        """Every request for a media file's bytes: media_id, authorized, at."""
        return self._state.all("media_fetches")

    @property
    def status_callbacks(self) -> list[dict[str, Any]]:
        """Every status webhook attempt: wamid, status, url, http_status or error, at."""
        return self._state.all("callbacks")

    def wait_for_status_callbacks(
        self, count: int, timeout: float = 10.0, **fields: Any
    ) -> list[dict[str, Any]]:
        """Block until `count` status webhook attempts match `fields` (e.g. ``wamid=``)."""
        return self._state.wait_for("callbacks", count, timeout, fields)

    def reset(self) -> None:
        """Forget messages, receipts, media, templates, callbacks and injected errors (not the
        numbers); status webhooks still pending for forgotten messages are dropped."""
        self._state.clear()

    # -- webhooks ----------------------------------------------------------------

    def _number(self, phone_number_id: str) -> Number:
        with self._state.cond:
            number = self._state.numbers.get(phone_number_id)
        if number is None:
            raise KeyError(f"no sandbox number {phone_number_id!r}; add_number() it first")
        return number

    def signed_webhook(
        self,
        phone_number_id: str,
        *,
        messages: Iterable[Mapping[str, Any]] = (),
        statuses: Iterable[Mapping[str, Any]] = (),
        profiles: Mapping[str, str] | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers of Meta's POST of these `messages[]` and `statuses[]` (build them
        with `channels.sandbox._cloud_wire.user_message` / `status_item`) to the number."""
        number = self._number(phone_number_id)
        contacts = [{"profile": {"name": name}, "wa_id": wa_id}
                    for wa_id, name in (profiles or {}).items()]  # fmt: skip
        document = webhook_document(
            phone_number_id,
            number.display_phone_number,
            messages=messages,
            statuses=statuses,
            contacts=contacts,
        )
        return signed(document, number.app_secret)

    def signed_inbound(
        self,
        phone_number_id: str,
        from_wa_id: str,
        text: str | None = None,
        *,
        kind: str | None = None,
        content: Mapping[str, Any] | None = None,
        profile_name: str | None = "Sandbox User",
        wamid: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """Meta's signed POST of one user message: `text`, or a `kind` with its `content`
        (``kind="audio", content={"id": media_id, "mime_type": "audio/ogg"}``...)."""
        message = user_message(from_wa_id, text=text, wamid=wamid, kind=kind, content=content,
                               context=context)  # fmt: skip
        profiles = {from_wa_id: profile_name} if profile_name else None
        return self.signed_webhook(phone_number_id, messages=[message], profiles=profiles)

    def signed_press(
        self,
        phone_number_id: str,
        wa_id: str,
        message: Mapping[str, Any] | str,
        number: int,
        *,
        wamid: str | None = None,
        profile_name: str | None = "Sandbox User",
    ) -> tuple[bytes, dict[str, str]]:
        """Meta's signed POST of user `wa_id` pressing option `number` (from 1) of one of our
        interactive messages (its record in `messages`, or its wamid): a `button_reply` or
        `list_reply`, with the `context` naming our message, as Meta sends it."""
        record = self._message(message) if isinstance(message, str) else message
        choices = record.get("choices")
        if not choices:
            raise ValueError(f"message {record.get('id')} has no buttons or list to press")
        if (record.get("phone_number_id"), record.get("to")) != (phone_number_id, wa_id):
            raise ValueError(f"message {record.get('id')} was not sent by {phone_number_id} "
                             f"to {wa_id}")  # fmt: skip
        context = {"from": self._number(phone_number_id).display_phone_number, "id": record["id"]}
        return self.signed_inbound(
            phone_number_id, wa_id, kind="interactive", content=press_content(choices, number),
            profile_name=profile_name, wamid=wamid, context=context,
        )  # fmt: skip

    def _message(self, wamid: str) -> dict[str, Any]:
        """A copy of the record of our message `wamid`."""
        found = [m for m in self.messages if m["id"] == wamid]
        if not found:
            raise KeyError(f"no sandbox message {wamid!r}")
        return found[0]

    def send_status(
        self, wamid: str, status: str, error_code: int | None = None, url: str | None = None
    ) -> int:
        """Set message `wamid` to `status` and post its signed status webhook now, to `url` or
        `webhook_url`; return the receiver's HTTP status (a transport error is raised)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {STATUSES}")
        target = url or self.webhook_url
        if not target:
            raise ValueError("no webhook_url: pass url=")
        with self._state.cond:
            record = next((m for m in self._state.records["messages"] if m["id"] == wamid), None)
            if record is None:
                raise KeyError(f"no sandbox message {wamid!r}")
            record["status"] = status
        result = self._post_status(record, status, target, error_code)
        if isinstance(result, Exception):
            raise result
        return result

    def _follow_up(self, record: dict[str, Any]) -> Any:
        if self.webhook_url and self.auto_status:
            return self._worker.schedule(record["id"], self.auto_status)
        return None

    def _progress(self, wamid: str, status: str, previous: str) -> bool:
        """One automatic step; False once the message is gone or was moved on by hand."""
        previous = "accepted" if previous == "queued" else previous  # StatusWorker's start
        with self._state.cond:
            record = next((m for m in self._state.records["messages"] if m["id"] == wamid), None)
            if record is None or record["status"] != previous:
                return False
            record["status"] = status
        url = self.webhook_url
        if url:
            self._post_status(record, status, url, None)
        return True

    def _post_status(
        self, record: Mapping[str, Any], status: str, url: str, error_code: int | None
    ) -> int | Exception:
        item = status_item(record["id"], status, record["to"], error_code=error_code,
                           opaque=record.get("opaque"))  # fmt: skip
        body, headers = self.signed_webhook(record["phone_number_id"], statuses=[item])
        attempt: dict[str, Any] = {"wamid": record["id"], "status": status, "url": url,
                                   "http_status": None, "error": None}  # fmt: skip
        result: int | Exception
        try:
            response = httpx.post(url, content=body, headers=headers,
                                  timeout=self.callback_timeout, trust_env=False)  # fmt: skip
            result = attempt["http_status"] = response.status_code
        except Exception as exc:  # a broken receiver must not take the sandbox down
            result, attempt["error"] = exc, f"{type(exc).__name__}: {exc}"
        self._state.add("callbacks", attempt)
        return result

    # -- serving -----------------------------------------------------------------

    def _answer(self, method: str, path: str, query: dict[str, list[str]],
                authorization: str | None, body: bytes) -> Reply | RawReply:  # fmt: skip
        """Answer a control request, else a Graph API request, always in Meta's error shape."""
        try:
            reply = self._control(method, path, query, body)
            if reply is not None:
                return reply
            return self._api.answer(method, path, query, authorization, body)
        except GraphError as exc:
            return Reply(exc.status, exc.payload)
        except Exception:
            logger.exception("Cloud API sandbox failed on %s %s", method, path)
            error = GraphError(1, 500, "An unknown error occurred")
            return Reply(500, error.payload)

    def _control(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> Reply | None:
        def only(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
            wanted = {k: v[-1] for k, v in query.items() if v}
            return [r for r in records if all(str(r.get(k)) == v for k, v in wanted.items())]

        route = (method, path)
        if route == ("GET", "/healthz"):
            return Reply(200, {"status": "ok"})
        if route == ("GET", "/sandbox/messages"):
            return Reply(200, only(self.messages))
        if route == ("GET", "/sandbox/typing"):
            return Reply(200, only(self.typing))
        if route == ("POST", "/sandbox/reset"):
            self.reset()
            return Reply(200, {"status": "ok"})
        if route == ("POST", "/sandbox/errors"):
            try:
                spec = json.loads(body or b"{}")
                self.fail_next(int(spec.pop("code")), **spec)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise GraphError(100, 400, "Invalid error spec", repr(exc)) from exc
            return Reply(201, {"status": "ok"})
        return None


def _number_arg(value: str) -> tuple[str, str, str, str]:
    parts = value.split(":")
    if len(parts) != 4 or not all(parts):
        raise argparse.ArgumentTypeError("expected PHONE_NUMBER_ID:DISPLAY_NUMBER:TOKEN:APP_SECRET")
    return parts[0], parts[1], parts[2], parts[3]


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m channels.sandbox.cloud",
        description="Serve a local fake of Meta's WhatsApp Cloud API.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5051)
    parser.add_argument(
        "--number",
        action="append",
        type=_number_arg,
        default=[],
        metavar="ID:DISPLAY:TOKEN:SECRET",
        help="a business number (repeatable)",
    )
    parser.add_argument("--webhook-url", help="where status webhooks go (/webhooks/cloud)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    sandbox = CloudSandbox(args.host, args.port, webhook_url=args.webhook_url)
    for number in args.number:
        sandbox.add_number(*number)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with sandbox:
        print(f"Cloud API sandbox listening on {sandbox.url}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
