"""Content API side of :mod:`channels.sandbox.twilio`: WhatsApp templates and their approval.

Serves what the ``twilio`` package's ``client.content.v1`` calls (``POST /v1/Content`` with a
JSON body, ``GET /v1/Content/{sid}``, ``GET /v1/Content/{sid}/ApprovalRequests``, and
``POST /v1/Content/{sid}/ApprovalRequests/whatsapp``, which submits a template to WhatsApp: the
sandbox, playing Meta's reviewer, approves every submission at once; tests that need another
verdict call ``ContentStore.set_approval``), and renders
a message created with ``ContentSid`` + ``ContentVariables`` into the words the user would
read: an unknown ContentSid is Twilio's 21655, ContentVariables that are not a JSON object or
leave a placeholder empty 21656, and content WhatsApp has not approved 63027 (Twilio's code for
WhatsApp's "template does not exist" in that language; real Twilio reports it when delivery
fails, the sandbox refuses the create at once so a test sees it in the send's error).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from channels.sandbox._wire import ApiError, Reply
from channels.templates import PLACEHOLDER, render

APPROVAL_STATUSES = frozenset(
    {"unsubmitted", "received", "pending", "approved", "rejected", "paused", "disabled"}
)
_ITEM_RE = re.compile(
    r"^/v1/Content/(?P<sid>HX[0-9a-fA-F]{32})"
    r"(?P<approval>/ApprovalRequests(?P<submit>/whatsapp)?)?$"
)
CONTENT_SID_INVALID = 21655
CONTENT_VARIABLES_INVALID = 21656
TEMPLATE_NOT_APPROVED = 63027


@dataclass
class _Content:
    """One Content resource (only its ``twilio/text`` body matters here)."""

    sid: str
    account_sid: str
    friendly_name: str
    language: str
    body: str
    variables: dict[str, str]
    status: str
    rejection_reason: str
    created: str


class ContentStore:
    """The sandbox's Content resources, by SID (thread-safe)."""

    def __init__(self) -> None:
        """Start with no content."""
        self._lock = threading.Lock()
        self._items: dict[str, _Content] = {}

    def add(
        self,
        account_sid: str,
        body: str,
        *,
        language: str = "pt",
        friendly_name: str = "",
        variables: dict[str, str] | None = None,
        status: str = "approved",
        sid: str | None = None,
    ) -> str:
        """Store a template with text `body` ({{1}}...) for `account_sid`; return its HX SID."""
        if status not in APPROVAL_STATUSES:
            raise ValueError(f"unknown approval status {status!r}")
        if not body:
            raise ValueError("a template needs a body")
        sid = sid or "HX" + secrets.token_hex(16)
        now = format_datetime(datetime.now(UTC).replace(microsecond=0))
        content = _Content(sid, account_sid, friendly_name or sid, language, body,
                           dict(variables or {}), status, "", now)  # fmt: skip
        with self._lock:
            self._items[sid] = content
        return sid

    def set_approval(self, sid: str, status: str, rejection_reason: str = "") -> None:
        """Change a template's WhatsApp approval status (as Meta's review would)."""
        if status not in APPROVAL_STATUSES:
            raise ValueError(f"unknown approval status {status!r}")
        with self._lock:
            if sid not in self._items:
                raise KeyError(f"no sandbox content {sid!r}")
            self._items[sid].status = status
            self._items[sid].rejection_reason = rejection_reason

    def clear(self) -> None:
        """Forget every template."""
        with self._lock:
            self._items.clear()

    def render(self, account_sid: str, sid: str, variables_json: str | None) -> str:
        """Return the words a template send delivers, or raise Twilio's 21655 / 21656 / 63027."""
        with self._lock:
            content = self._items.get(sid)
        if content is None or content.account_sid != account_sid:
            raise ApiError(CONTENT_SID_INVALID, 400, f"The ContentSid {sid} is invalid.")
        if content.status != "approved":
            raise ApiError(
                TEMPLATE_NOT_APPROVED, 400,
                f"Template does not exist for a language and locale: WhatsApp has not approved "
                f"content {sid} ({content.language}, status {content.status}); submit it for "
                "approval and send it once approved.",
            )  # fmt: skip
        try:
            parsed = json.loads(variables_json) if variables_json else {}
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ApiError(CONTENT_VARIABLES_INVALID, 400,
                           "The ContentVariables Parameter is invalid: send a JSON object, "
                           'e.g. {"1": "value"}.')  # fmt: skip
        values = {str(k): str(v) for k, v in parsed.items()}
        needed = {str(int(n)) for n in PLACEHOLDER.findall(content.body)}
        empty = sorted(n for n in needed if not values.get(n, "").strip())
        if empty:
            raise ApiError(
                CONTENT_VARIABLES_INVALID, 400,
                f"The ContentVariables Parameter is invalid: no value for {empty}.",
            )  # fmt: skip
        return render(content.body, values)

    def dispatch(self, method: str, path: str, account_sid: str, raw: bytes) -> Reply:
        """Answer a Content API request of `account_sid`."""
        if path == "/v1/Content":
            if method != "POST":
                raise ApiError(20004, 405)
            return Reply(201, self._resource(self._create(account_sid, raw)))
        match = _ITEM_RE.match(path)
        if match is None:
            raise ApiError(20404, 404, f"The requested resource {path} was not found")
        if method != ("POST" if match["submit"] else "GET"):
            raise ApiError(20004, 405)
        with self._lock:
            content = self._items.get(match["sid"])
        if content is None or content.account_sid != account_sid:
            raise ApiError(20404, 404, f"The requested resource {path} was not found")
        if match["submit"]:
            return Reply(201, self._submit(content, raw))
        return Reply(200, self._approval(content) if match["approval"] else self._resource(content))

    def _submit(self, content: _Content, raw: bytes) -> dict[str, Any]:
        """Submit `content` to WhatsApp (``{"name", "category"}``); approved at once here."""
        try:
            spec = json.loads(raw or b"{}")
            name, category = str(spec["name"]), str(spec["category"]).upper()
        except (ValueError, KeyError, TypeError) as exc:
            raise ApiError(20001, 400, "An approval request needs a name and a category") from exc
        if not re.fullmatch(r"[a-z0-9_]{1,512}", name):
            raise ApiError(20001, 400, "The name may hold only lowercase letters, digits and _")
        if category not in ("UTILITY", "MARKETING", "AUTHENTICATION"):
            raise ApiError(20001, 400, "The category must be UTILITY, MARKETING or AUTHENTICATION")
        self.set_approval(content.sid, "approved")
        return {
            "name": name,
            "category": category,
            "content_type": "twilio/text",
            "status": "approved",
            "rejection_reason": "",
            "allow_category_change": True,
        }

    def _create(self, account_sid: str, raw: bytes) -> _Content:
        try:
            spec = json.loads(raw or b"{}")
            body = spec["types"]["twilio/text"]["body"]
            language = str(spec.get("language") or "")
        except (ValueError, KeyError, TypeError) as exc:
            message = f"Invalid content: {exc!r} (need types.twilio/text.body)"
            raise ApiError(20001, 400, message) from exc
        if not isinstance(body, str) or not body or not language:
            raise ApiError(20001, 400, "Invalid content: a text body and a language are needed")
        sid = self.add(account_sid, body, language=language,
                       friendly_name=str(spec.get("friendly_name") or ""),
                       variables=spec.get("variables") or {}, status="unsubmitted")  # fmt: skip
        with self._lock:
            return self._items[sid]

    @staticmethod
    def _resource(content: _Content) -> dict[str, Any]:
        url = f"https://content.twilio.com/v1/Content/{content.sid}"
        return {
            "sid": content.sid,
            "account_sid": content.account_sid,
            "friendly_name": content.friendly_name,
            "language": content.language,
            "variables": content.variables,
            "types": {"twilio/text": {"body": content.body}},
            "url": url,
            "links": {"approval_fetch": f"{url}/ApprovalRequests",
                      "approval_create": f"{url}/ApprovalRequests/whatsapp"},
            "date_created": content.created,
            "date_updated": content.created,
        }  # fmt: skip

    @staticmethod
    def _approval(content: _Content) -> dict[str, Any]:
        return {
            "sid": content.sid,
            "account_sid": content.account_sid,
            "whatsapp": {
                "type": "whatsapp",
                "name": content.friendly_name,
                "category": "UTILITY",
                "content_type": "twilio/text",
                "status": content.status,
                "rejection_reason": content.rejection_reason,
            },
            "url": f"https://content.twilio.com/v1/Content/{content.sid}/ApprovalRequests",
        }
