"""Records of :mod:`channels.sandbox.twilio`: what its API has been sent, behind one lock.

Accounts and credential checks, stored messages (and the token each create call used, to sign
its callbacks), typing indicators, status callback attempts and injected errors all live here,
guarded by one condition variable, so tests can block until the record they expect appears.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Literal

from channels.sandbox._callbacks import StatusUpdate, status_form
from channels.sandbox._messages import resource
from channels.sandbox._wire import (
    FAILED_STATUSES,
    MESSAGE_STATUSES,
    ApiError,
    basic_credentials,
    error_message,
)

DEFAULT_FAILURE_CODE = 30008  # "Unknown error"
ENDPOINTS = ("messages", "typing")

Kind = Literal["messages", "typing", "callbacks"]


@dataclass
class _ErrorRule:
    """An injected failure for upcoming requests to one endpoint."""

    code: int
    status: int
    message: str | None
    times: int
    to: str | None
    endpoint: str


def _copy(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return a deep-enough copy of a stored record (its lists and dicts are copied)."""
    return {
        k: list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v
        for k, v in record.items()
    }


class Records:
    """The sandbox's thread-safe state (templates and media keep their own)."""

    def __init__(self, accounts: dict[str, str] | None) -> None:
        """Check credentials against ``accounts`` (SID to token), or accept any if ``None``."""
        self._accounts = dict(accounts) if accounts is not None else None
        self._cond = threading.Condition()
        self._errors: list[_ErrorRule] = []
        self._tokens: dict[str, str] = {}  # message SID -> password its create call used
        self._kinds: dict[Kind, list[dict[str, Any]]] = {
            "messages": [],
            "typing": [],
            "callbacks": [],
        }

    # -- accounts and injected errors ---------------------------------------------

    def add_account(self, sid: str, token: str) -> None:
        """Accept ``sid``/``token`` credentials (switches on credential checking)."""
        with self._cond:
            if self._accounts is None:
                self._accounts = {}
            self._accounts[sid] = token

    def authenticate(self, authorization: str | None, account_sid: str | None) -> tuple[str, str]:
        """Check HTTP Basic credentials and return them.

        With ``account_sid`` (from the URL) the username must be that account; without,
        any known account will do. Without ``accounts``, any credentials are accepted.
        """
        username, password = basic_credentials(authorization)
        if account_sid is not None and username != account_sid:
            raise ApiError(20003, 401)
        with self._cond:
            accounts = None if self._accounts is None else dict(self._accounts)
        if accounts is not None:
            expected = accounts.get(username)
            if expected is None or not hmac.compare_digest(expected, password):
                raise ApiError(20003, 401)
        return username, password

    def inject_error(
        self, code: int, status: int, message: str | None, times: int, to: str | None, endpoint: str
    ) -> None:
        """Fail the next ``times`` requests to ``endpoint`` (see ``TwilioSandbox.inject_error``)."""
        if times < 1:
            raise ValueError("times must be >= 1")
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}, got {endpoint!r}")
        if to is not None and endpoint != "messages":
            raise ValueError("to= only applies to the messages endpoint")
        with self._cond:
            self._errors.append(_ErrorRule(code, status, message, times, to, endpoint))

    def take_error(self, endpoint: str, to: str | None = None) -> None:
        """Raise the first injected error that applies to this request, if any."""
        with self._cond:
            for rule in self._errors:
                if rule.endpoint == endpoint and (rule.to is None or rule.to == to):
                    rule.times -= 1
                    if rule.times <= 0:
                        self._errors.remove(rule)
                    raise ApiError(rule.code, rule.status, rule.message)

    # -- records ----------------------------------------------------------------

    def add(self, kind: Kind, record: dict[str, Any], token: str | None = None) -> None:
        """Store ``record`` and wake waiters; a message keeps the ``token`` its create used."""
        with self._cond:
            self._kinds[kind].append(record)
            if token is not None:
                self._tokens[record["sid"]] = token
            self._cond.notify_all()

    def all(self, kind: Kind) -> list[dict[str, Any]]:
        """Return copies of every record of ``kind``, oldest first."""
        with self._cond:
            return [_copy(r) for r in self._kinds[kind]]

    def resources(self, account_sid: str) -> list[dict[str, Any]]:
        """Return the Message resources of ``account_sid``, newest first."""
        with self._cond:
            messages = self._kinds["messages"]
            return [resource(m) for m in reversed(messages) if m["account_sid"] == account_sid]

    def find_resource(self, account_sid: str, sid: str) -> dict[str, Any] | None:
        """Return the Message resource ``sid`` of ``account_sid``, if stored."""
        with self._cond:
            for message in self._kinds["messages"]:
                if message["sid"] == sid and message["account_sid"] == account_sid:
                    return resource(message)
        return None

    def wait_for(
        self,
        kind: Kind,
        what: str,
        count: int,
        timeout: float,
        fields: Mapping[str, Any],
        summary: tuple[str, ...] | None = None,
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` records of ``kind`` match ``fields``; else raise TimeoutError.

        The error lists the most recent records (their ``summary`` fields) to show what came.
        """
        records = self._kinds[kind]

        def matching() -> list[dict[str, Any]]:
            return [r for r in records if all(r.get(k) == v for k, v in fields.items())]

        with self._cond:
            matched = self._cond.wait_for(lambda: len(matching()) >= count, timeout=timeout)
            found = [_copy(r) for r in matching()]
            if matched:
                return found
            recent = [{k: r.get(k) for k in summary or r} for r in records[-5:]]
        raise TimeoutError(
            f"expected at least {count} {what}(s) matching {dict(fields) or 'anything'} "
            f"within {timeout}s, but found {len(found)} "
            f"({len(recent)} most recent of all {what}s: {recent})"
        )

    def apply_status(
        self,
        sid: str,
        status: str,
        error_code: int | None = None,
        url: str | None = None,
        expected: str | None = None,
    ) -> StatusUpdate | None:
        """Update the stored message's status and build the callback to post for it.

        Returns ``None``, changing nothing, if ``expected`` is given and the message's
        status is no longer that (someone else moved it on).
        """
        if status not in MESSAGE_STATUSES:
            raise ValueError(f"unknown message status {status!r}")
        if error_code is not None and status not in FAILED_STATUSES:
            raise ValueError("error_code only applies to failed or undelivered messages")
        with self._cond:
            message = next((m for m in self._kinds["messages"] if m["sid"] == sid), None)
            if message is None:
                raise KeyError(f"no Twilio sandbox message {sid!r}")
            if expected is not None and message["status"] != expected:
                return None
            target = url or message["status_callback"]
            if not target:
                raise ValueError(f"message {sid} has no StatusCallback; pass url=")
            message["status"] = status
            message["date_updated"] = format_datetime(datetime.now(UTC).replace(microsecond=0))
            if status in FAILED_STATUSES:
                code = DEFAULT_FAILURE_CODE if error_code is None else error_code
                message["error_code"] = code
                message["error_message"] = error_message(code)
            # Sign with the account's current token, else the one the create call used.
            token = (self._accounts or {}).get(message["account_sid"]) or self._tokens.get(sid)
            form = status_form(message)
            self._cond.notify_all()
        return StatusUpdate(sid, status, target, form, token or "")

    def clear(self) -> None:
        """Forget every record and injected error (not the accounts)."""
        with self._cond:
            for records in self._kinds.values():
                records.clear()
            self._errors.clear()
            self._tokens.clear()
            self._cond.notify_all()
