"""Status callbacks of :mod:`channels.sandbox.twilio`: the form, its signature, the posting.

Twilio posts a message's status changes to the ``StatusCallback`` URL its create call gave,
signed with the account's auth token. :class:`StatusWorker` plays the automatic progression
(``sent`` then ``delivered`` by default) from a background thread, one message after another,
so a test sees callbacks arrive the way the service would.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from twilio.request_validator import RequestValidator

from channels.sandbox._wire import API_VERSION, FAILED_STATUSES

# Share the public module's logger so one logging setting covers the whole sandbox.
logger = logging.getLogger("channels.sandbox.twilio")

# What Twilio's webhook requests carry besides the form body and the signature.
WEBHOOK_HEADERS = {"User-Agent": "TwilioProxy/1.1", "Accept": "*/*"}

_Job = tuple[str, tuple[str, ...]]  # (message SID, statuses to post in order)


@dataclass(frozen=True)
class StatusUpdate:
    """A status change applied to a stored message, with the callback to post for it."""

    sid: str
    status: str
    url: str
    form: dict[str, str]
    token: str


def status_form(message: Mapping[str, Any]) -> dict[str, str]:
    """Build the form Twilio posts to a message's StatusCallback for its current status."""
    to, status = message["to"], message["status"]
    form = {
        "MessageSid": message["sid"],
        "SmsSid": message["sid"],
        "AccountSid": message["account_sid"],
        "To": to,
        "MessageStatus": status,
        "SmsStatus": status,
        "ApiVersion": API_VERSION,
    }
    if message["from"]:
        form["From"] = message["from"]
    if message["messaging_service_sid"]:
        form["MessagingServiceSid"] = message["messaging_service_sid"]
    if to.startswith("whatsapp:"):
        form["ChannelPrefix"] = "whatsapp"
        form["ChannelToAddress"] = to.removeprefix("whatsapp:")
        form["StructuredMessage"] = "false"
    if status in FAILED_STATUSES:
        form["ErrorCode"] = str(message["error_code"])
        form["ErrorMessage"] = message["error_message"]
    return form


def sign_webhook(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Return the ``X-Twilio-Signature`` Twilio would send for a form POST to ``url``."""
    return RequestValidator(auth_token).compute_signature(url, dict(params))


_clients: dict[int, httpx.Client] = {}
_clients_lock = threading.Lock()


def _client() -> httpx.Client:
    """The process's client for callbacks. One per post cost a TLS context and a TCP connection
    each, two thirds of the sandbox's CPU under load; idle connections go after 2 s, before a
    receiver would close them under a post (uvicorn keeps them 5 s)."""
    with _clients_lock:
        client = _clients.get(os.getpid())  # a forked child builds its own
        if client is None:
            # trust_env=False: go straight to the receiver, as Twilio would, whatever proxy is set.
            client = httpx.Client(trust_env=False, limits=httpx.Limits(keepalive_expiry=2.0))
            _clients[os.getpid()] = client
        return client


def post_webhook(url: str, params: Mapping[str, str], auth_token: str, timeout: float) -> int:
    """POST ``params`` as a signed Twilio webhook and return the receiver's HTTP status.

    Raises :class:`httpx.HTTPError` (or :class:`httpx.InvalidURL`) if no answer arrives.
    """
    headers = {**WEBHOOK_HEADERS, "X-Twilio-Signature": sign_webhook(auth_token, url, params)}
    response = _client().post(url, data=dict(params), headers=headers, timeout=timeout)
    return response.status_code


def attempt(update: StatusUpdate, timeout: float) -> tuple[dict[str, Any], int | Exception]:
    """Post one status callback; return the record of the attempt and the answer or error.

    A broken receiver must not take the sandbox down, so every error is returned, not raised.
    """
    record: dict[str, Any] = {
        "sid": update.sid,
        "status": update.status,
        "url": update.url,
        "params": update.form,
        "at": time.time(),
        "http_status": None,
        "error": None,
    }
    result: int | Exception
    try:
        result = post_webhook(update.url, update.form, update.token, timeout)
        record["http_status"] = result
    except Exception as exc:
        result = exc
        record["error"] = f"{type(exc).__name__}: {exc}"
        logger.debug("Twilio sandbox status callback to %s failed: %r", update.url, exc)
    return record, result


class StatusWorker:
    """A daemon thread that posts automatic status progressions, one message at a time.

    ``progress(sid, status, previous)`` applies and posts one step; it returns ``False`` when
    the message has moved on without the worker (reset away, or set by ``send_status``), which
    ends that message's progression.
    """

    def __init__(self, progress: Callable[[str, str, str], bool], delay: float) -> None:
        """Pause ``delay`` seconds before each step."""
        self._progress = progress
        self._delay = delay
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start a fresh thread with its own queue, so a restart never sees old jobs."""
        self._jobs, self._stopping = queue.SimpleQueue(), threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(self._jobs, self._stopping),
            name="twilio-sandbox-callbacks",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Drop pending progressions; give a callback in flight a second, then abandon it."""
        thread, self._thread = self._thread, None
        self._stopping.set()
        self._jobs.put(None)
        if thread is not None:
            thread.join(timeout=1.0)

    def schedule(self, sid: str, statuses: tuple[str, ...]) -> Callable[[], None]:
        """Return what queues message ``sid``'s progression through ``statuses``.

        The caller runs it once its response is out, so the client learns the SID first.
        """
        jobs, job = self._jobs, (sid, statuses)
        return lambda: jobs.put(job)

    def _run(self, jobs: queue.SimpleQueue[_Job | None], stop: threading.Event) -> None:
        """Play queued progressions until stopped."""
        while (job := jobs.get()) is not None:
            sid, statuses = job
            previous = "queued"
            for status in statuses:
                if self._delay > 0:
                    stop.wait(self._delay)
                if stop.is_set():
                    return
                if not self._progress(sid, status, previous):
                    break
                previous = status
