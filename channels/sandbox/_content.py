"""Content API side of :mod:`channels.sandbox.twilio`: WhatsApp templates and their approval,
and session content with buttons (``twilio/quick-reply``) or a list (``twilio/list-picker``).

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

Quick-reply and list-picker content (``GET /v1/Content`` lists it all, paged as Twilio does)
needs no approval: it is session content, and the sandbox does not model the 24-hour window
(every send is taken to be inside it). A list picker cannot be submitted for approval; a
quick reply can, and only then may it carry more than three buttons. A message with such
content is rendered into its body and its options; what WhatsApp would refuse once the
variables are filled (a title too long, a fourth button in session...) is refused at the
create with 63005, and a variable that is empty or over 255 characters with 21656.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

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
CONTENT_NOT_ACCEPTED = 63005
TEXT, QUICK_REPLY, LIST_PICKER = "twilio/text", "twilio/quick-reply", "twilio/list-picker"
MAX_ACTIONS, MAX_SESSION_BUTTONS, MAX_ITEMS = 10, 3, 10
MAX_VARIABLE_CHARS = 255
_LIMITS = {"body": 1024, "title": 20, "item": 24, "id": 200, "description": 72, "button": 20}
"""WhatsApp's and Twilio's lengths for each text of quick-reply and list-picker content."""
_REQUIRED = {
    TEXT: ("body",),
    QUICK_REPLY: ("body", "actions"),
    LIST_PICKER: ("body", "button", "items"),
}
_ENTRY_FIELDS = {QUICK_REPLY: ("title", "id"), LIST_PICKER: ("item", "id", "description")}
_ENTRIES = {QUICK_REPLY: ("actions", MAX_ACTIONS), LIST_PICKER: ("items", MAX_ITEMS)}
_PAGE_SIZE, _MAX_PAGE_SIZE = 50, 1000


@dataclass
class _Content:
    """One Content resource of one type: its ``body``, and the type's whole object in ``spec``."""

    sid: str
    account_sid: str
    friendly_name: str
    language: str
    body: str
    variables: dict[str, str]
    status: str
    rejection_reason: str
    created: str
    kind: str = TEXT
    spec: dict[str, Any] = field(default_factory=dict)


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
        kind: str = TEXT,
        spec: dict[str, Any] | None = None,
    ) -> str:
        """Store content for `account_sid` and return its HX SID: a template with text `body`
        ({{1}}...), or content of another `kind` whose type object is `spec`."""
        if status not in APPROVAL_STATUSES:
            raise ValueError(f"unknown approval status {status!r}")
        if not body:
            raise ValueError("a template needs a body")
        sid = sid or "HX" + secrets.token_hex(16)
        now = format_datetime(datetime.now(UTC).replace(microsecond=0))
        content = _Content(sid, account_sid, friendly_name or sid, language, body,
                           dict(variables or {}), status, "", now, kind,
                           dict(spec or {"body": body}))  # fmt: skip
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
        values = _variables(variables_json)
        _check_filled(content.body, values)
        return render(content.body, values)

    def render_message(
        self, account_sid: str, sid: str, variables_json: str | None
    ) -> tuple[str, dict[str, Any] | None]:
        """Return what a send of content `sid` delivers: its words, and the options it shows
        (``{"type", "button", "options"}``; None for a text template)."""
        with self._lock:
            content = self._items.get(sid)
        if content is None or content.kind == TEXT or content.account_sid != account_sid:
            return self.render(account_sid, sid, variables_json), None
        values = _variables(variables_json)
        _check_filled(json.dumps(content.spec), values, MAX_VARIABLE_CHARS)
        return _choices(content, values)

    def dispatch(
        self,
        method: str,
        path: str,
        account_sid: str,
        raw: bytes,
        query: dict[str, list[str]] | None = None,
    ) -> Reply:
        """Answer a Content API request of `account_sid`."""
        if path == "/v1/Content":
            if method == "GET":
                return Reply(200, self._page(account_sid, query or {}))
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
        if content.kind == LIST_PICKER:
            raise ApiError(20001, 400, "List-picker content cannot be submitted to WhatsApp: it "
                           "is session content only, sent without approval.")  # fmt: skip
        self.set_approval(content.sid, "approved")
        return {
            "name": name,
            "category": category,
            "content_type": content.kind,
            "status": "approved",
            "rejection_reason": "",
            "allow_category_change": True,
        }

    def _create(self, account_sid: str, raw: bytes) -> _Content:
        try:
            spec = json.loads(raw or b"{}")
            language = str(spec.get("language") or "")
            kind, obj = _one_type(spec["types"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            message = (
                f"Invalid content: {exc} (need one of types {TEXT}, {QUICK_REPLY}, {LIST_PICKER})"
            )
            raise ApiError(20001, 400, message) from exc
        if not language:
            raise ApiError(20001, 400, "Invalid content: a language is needed")
        sid = self.add(account_sid, obj["body"], language=language,
                       friendly_name=str(spec.get("friendly_name") or ""),
                       variables=spec.get("variables") or {}, status="unsubmitted",
                       kind=kind, spec=obj)  # fmt: skip
        with self._lock:
            return self._items[sid]

    def _page(self, account_sid: str, query: dict[str, list[str]]) -> dict[str, Any]:
        """One page of the account's contents, oldest first, in Twilio's paging shape."""
        params = {k: v[-1] for k, v in query.items() if v}
        try:
            size, page = int(params.get("PageSize", _PAGE_SIZE)), int(params.get("Page", 0))
        except ValueError as exc:
            raise ApiError(20001, 400, "Page and PageSize must be integers") from exc
        if not 1 <= size <= _MAX_PAGE_SIZE or page < 0:
            raise ApiError(20001, 400, f"PageSize must be 1-{_MAX_PAGE_SIZE}, Page >= 0")
        with self._lock:
            mine = [c for c in self._items.values() if c.account_sid == account_sid]
        shown = mine[page * size : (page + 1) * size]

        def url(number: int) -> str:
            return "https://content.twilio.com/v1/Content?" + urlencode(
                {"PageSize": size, "Page": number}
            )

        return {
            "contents": [self._resource(c) for c in shown],
            "meta": {
                "page": page,
                "page_size": size,
                "first_page_url": url(0),
                "previous_page_url": url(page - 1) if page else None,
                "url": url(page),
                "next_page_url": url(page + 1) if (page + 1) * size < len(mine) else None,
                "key": "contents",
            },
        }

    @staticmethod
    def _resource(content: _Content) -> dict[str, Any]:
        url = f"https://content.twilio.com/v1/Content/{content.sid}"
        return {
            "sid": content.sid,
            "account_sid": content.account_sid,
            "friendly_name": content.friendly_name,
            "language": content.language,
            "variables": content.variables,
            "types": {content.kind: content.spec},
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
                "content_type": content.kind,
                "status": content.status,
                "rejection_reason": content.rejection_reason,
            },
            "url": f"https://content.twilio.com/v1/Content/{content.sid}/ApprovalRequests",
        }


def _variables(variables_json: str | None) -> dict[str, str]:
    """The ContentVariables of a send, or Twilio's 21656 when they are not a JSON object."""
    try:
        parsed = json.loads(variables_json) if variables_json else {}
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ApiError(CONTENT_VARIABLES_INVALID, 400,
                       "The ContentVariables Parameter is invalid: send a JSON object, "
                       'e.g. {"1": "value"}.')  # fmt: skip
    return {str(k): str(v) for k, v in parsed.items()}


def _check_filled(text: str, values: dict[str, str], longest: int | None = None) -> None:
    """Refuse (21656) a placeholder of `text` left empty, or filled past `longest`."""
    needed = {str(int(n)) for n in PLACEHOLDER.findall(text)}
    empty = sorted(n for n in needed if not values.get(n, "").strip())
    if empty:
        raise ApiError(
            CONTENT_VARIABLES_INVALID, 400,
            f"The ContentVariables Parameter is invalid: no value for {empty}.",
        )  # fmt: skip
    long = sorted(n for n in needed if longest is not None and len(values[n]) > longest)
    if long:
        raise ApiError(
            CONTENT_VARIABLES_INVALID, 400,
            f"The ContentVariables Parameter is invalid: {long} over {longest} characters.",
        )  # fmt: skip


def _one_type(types: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The one content type of a create (the client sends every other one as null), checked
    for what Twilio requires of it."""
    given = {k: v for k, v in types.items() if v is not None}
    if len(given) != 1 or next(iter(given)) not in _REQUIRED:
        raise ValueError(f"exactly one supported type, not {sorted(given)}")
    kind, obj = given.popitem()
    missing = [f for f in _REQUIRED[kind] if not obj.get(f)]
    if missing or not isinstance(obj["body"], str):
        raise ValueError(f"{kind} needs {', '.join(_REQUIRED[kind])}")
    if kind in _ENTRIES:
        key, most = _ENTRIES[kind]
        entries = obj[key]
        if not isinstance(entries, list) or not 1 <= len(entries) <= most:
            raise ValueError(f"{kind} takes 1 to {most} {key}")
        fields = _ENTRY_FIELDS[kind]
        if not all(isinstance(e, dict) and all(isinstance(e.get(f), str) and e[f] for f in fields)
                   for e in entries):  # fmt: skip
            raise ValueError(f"each of {key} needs {', '.join(fields)}")
    return kind, obj


def _choices(content: _Content, values: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """Fill quick-reply or list-picker `content` with `values`; refuse (63005) what WhatsApp
    would not show."""

    def fill(text: str) -> str:
        return render(text, values)

    spec = content.spec
    texts = {"body": fill(spec["body"])}
    if content.kind == QUICK_REPLY:
        options = [{"id": fill(a["id"]), "title": fill(a["title"]), "description": ""}
                   for a in spec["actions"]]  # fmt: skip
        kind, button, title = "buttons", "", "title"
    else:
        options = [{"id": fill(i["id"]), "title": fill(i["item"]),
                    "description": fill(i["description"])} for i in spec["items"]]  # fmt: skip
        kind, button, title = "list", fill(spec["button"]), "item"
        texts["button"] = button
    problems = [f"{name} is over {_LIMITS[name]} characters" for name, text in texts.items()
                if len(text) > _LIMITS[name]]  # fmt: skip
    for n, option in enumerate(options, 1):
        for name, text in ((title, option["title"]), ("id", option["id"]),
                           ("description", option["description"])):  # fmt: skip
            if len(text) > _LIMITS[name]:
                problems.append(f"option {n}'s {name} {text[:30]!r} is over {_LIMITS[name]} "
                                "characters")  # fmt: skip
    if len({o["id"] for o in options}) != len(options):
        problems.append("option ids repeat")
    if kind == "buttons" and len(options) > MAX_SESSION_BUTTONS and content.status != "approved":
        problems.append(f"{len(options)} buttons: in session WhatsApp takes {MAX_SESSION_BUTTONS}"
                        " (more only in an approved template)")  # fmt: skip
    if problems:
        raise ApiError(CONTENT_NOT_ACCEPTED, 400,
                       f"Channel did not accept given content {content.sid}: "
                       + "; ".join(problems) + ".")  # fmt: skip
    return texts["body"], {"type": kind, "button": button, "options": options}
