"""Meta's WhatsApp Cloud API channel: its webhook, and one tenant's business number behind the
`Channel` protocol (`channels.base`), spoken over the Graph API with `httpx`."""

from __future__ import annotations

from collections.abc import Generator, Mapping
from functools import cached_property
from typing import Any

import httpx
import structlog

from channels.base import (
    BadSignature,
    InvalidRequest,
    Media,
    MediaSource,
    OutboundMessage,
    SendFailed,
    SendOutcome,
    SendResult,
    Template,
    WebhookEvents,
    WebhookKind,
    WebhookReply,
    WebhookRequest,
)
from channels.choices import Choices, Option, interactive
from channels.cloud.errors import OUTSIDE_WINDOW, refused, unreachable
from channels.cloud.inbound import (
    MEDIA_ID,
    MEDIA_SCHEME,
    SIGNATURE_HEADER,
    addressee,
    changes,
    clean,
    is_valid_signature,
    items,
    load,
    parse_message,
    parse_status,
    profiles,
)
from channels.cloud.settings import CloudSettings, graph_base_url
from channels.media import MediaRefused, MediaUnavailable
from store.records import Tenant

log = structlog.get_logger(__name__)

WEBHOOK_PATH = "/webhooks/cloud"
DEFAULT_TEMPLATE_LANGUAGE = "pt_BR"
TIMEOUT = httpx.Timeout(15.0, connect=5.0)
_ACCEPTED = WebhookReply(200)


class BearerAuth(httpx.Auth):
    """`Authorization: Bearer <token>` on every request (the token never in a repr)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(<hidden>)"


class CloudWebhooks:
    """Where Meta posts: one URL for the users' messages and our statuses together."""

    def __init__(self) -> None:
        self.paths: Mapping[str, WebhookKind] = {WEBHOOK_PATH: "inbound"}

    def addressee(self, request: WebhookRequest, kind: WebhookKind) -> str:
        """The tenant's sender: the business number of the post's first change."""
        return addressee(request.body)

    def reply(self, kind: WebhookKind) -> WebhookReply:
        """Meta wants a 200; the body is not read."""
        return _ACCEPTED


def _digits(address: str) -> str:
    return "".join(ch for ch in address if ch.isdigit())


def meta_language(language: str | None) -> str:
    """The language code Meta names a template's translation by: "pt-BR" is `pt_BR`; a bare
    "pt" is Brazilian Portuguese (Meta has no plain `pt`); none given is `pt_BR`."""
    if not language:
        return DEFAULT_TEMPLATE_LANGUAGE
    code = language.replace("-", "_")
    return DEFAULT_TEMPLATE_LANGUAGE if code.lower() == "pt" else code


def _template(template: Template) -> dict[str, Any]:
    """A template send: its name, language (the template's, else the `language` variable,
    else pt_BR) and the body parameters, from the numbered variables in their order."""
    variables = dict(template.variables)
    language = meta_language(template.language or variables.pop("language", None))
    variables.pop("language", None)
    numbered = sorted((int(k), v) for k, v in variables.items() if str(k).isdigit())
    body: dict[str, Any] = {"name": template.id, "language": {"code": language}}
    if numbered:
        parameters = [{"type": "text", "text": str(value)} for _, value in numbered]
        body["components"] = [{"type": "body", "parameters": parameters}]
    return body


SECTION_TITLE_CHARS = 24
"""Meta's limit on a list section's title (a list of ours has one section, titled like its
button, whose label is shorter)."""


def _interactive(choices: Choices) -> dict[str, Any]:
    """Meta's `interactive` object for `choices`: reply buttons, or one section of list rows
    behind the `choices.button` label."""
    body = {"text": choices.body}
    if choices.kind == "buttons":
        buttons = [{"type": "reply", "reply": {"id": o.id, "title": o.title}}
                   for o in choices.options]  # fmt: skip
        return {"type": "button", "body": body, "action": {"buttons": buttons}}
    section = {"title": choices.button[:SECTION_TITLE_CHARS],
               "rows": [_row(o) for o in choices.options]}  # fmt: skip
    return {"type": "list", "body": body,
            "action": {"button": choices.button, "sections": [section]}}  # fmt: skip


def _row(option: Option) -> dict[str, str]:
    """A list row; a row without a description is sent without the field, not with a blank."""
    row = {"id": option.id, "title": option.title}
    return (row | {"description": option.description}) if option.description else row


class CloudChannel:
    """One tenant's number on Meta's Cloud API (the sandbox's when CLOUD_API_BASE_URL is set)."""

    window_closed_code = OUTSIDE_WINDOW

    def __init__(self, settings: CloudSettings, tenant: Tenant) -> None:
        self._settings, self._tenant = settings, tenant
        self._base = graph_base_url(settings)

    @cached_property
    def _client(self) -> httpx.Client:
        """The Graph API client with the tenant's token, built on first use."""
        token = self._tenant.cloud_access_token
        if not token:
            raise SendFailed(
                SendOutcome.FAIL, f"tenant {self._tenant.slug} has no cloud_access_token"
            )
        return httpx.Client(base_url=self._base, auth=BearerAuth(token), timeout=TIMEOUT)

    def _number_id(self) -> str:
        number_id = self._tenant.cloud_phone_number_id
        if not number_id:
            raise SendFailed(
                SendOutcome.FAIL, f"tenant {self._tenant.slug} has no cloud_phone_number_id"
            )
        return number_id

    def _post(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST to the number's messages edge; the JSON answer, or `SendFailed`."""
        try:
            response = self._client.post(f"/{self._number_id()}/messages", json=payload)
        except httpx.HTTPError as exc:
            raise unreachable(exc) from exc
        if not response.is_success:
            raise refused(response)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise SendFailed(SendOutcome.FAIL, f"HTTP {response.status_code} without a JSON object")
        return answer

    def parse(self, request: WebhookRequest, kind: WebhookKind) -> WebhookEvents:
        """Check `X-Hub-Signature-256` with the tenant's app secret over the raw body, then read
        every message and status of every change (the store dedupes on the wamid)."""
        signature = request.headers.get(SIGNATURE_HEADER)
        if not is_valid_signature(self._tenant.cloud_app_secret, request.body, signature):
            raise BadSignature("X-Hub-Signature-256 is missing or wrong.")
        document, cleaned = clean(load(request.body))
        if cleaned:
            log.info("removed NUL characters or lone surrogates from a signed webhook")
        sender = self._tenant.whatsapp_sender
        messages, statuses = [], []
        for change in changes(document):
            self._check_number(change.display_phone_number, change.phone_number_id)
            values = change.value
            names = profiles(values)
            for raw in items(values, "messages"):
                messages.append(parse_message(raw, sender, names))
            for raw in items(values, "statuses"):
                if (update := parse_status(raw)) is not None:
                    statuses.append(update)
        return WebhookEvents(messages=tuple(messages), statuses=tuple(statuses))

    def _check_number(self, display: str, number_id: str) -> None:
        """Refuse a change for another business number: the app secret is the Meta app's and
        may sign several tenants' posts, so it does not prove which tenant a change is for."""
        expected_id = self._tenant.cloud_phone_number_id
        if display != _digits(self._tenant.whatsapp_sender) or (
            expected_id and number_id != expected_id
        ):
            raise InvalidRequest(
                "invalid_message", "The webhook holds a change for another business number."
            )

    def send(self, message: OutboundMessage) -> SendResult:
        """Send the body as text, the template, or the choices as reply buttons or a list (as
        the numbered `body` when they cannot go out as either); `biz_opaque_callback_data`
        carries our outbox id, so Meta's status webhooks for this send name it too."""
        to = _digits(message.to)
        if not to:
            raise SendFailed(SendOutcome.FAIL, f"{message.to[:40]!r} is not a phone number")
        payload: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "biz_opaque_callback_data": f"outbox:{message.message_id}",
        }
        if message.template is not None:
            payload |= {"type": "template", "template": _template(message.template)}
        elif message.choices is not None and interactive(message.choices):
            payload |= {"type": "interactive", "interactive": _interactive(message.choices)}
        else:
            payload |= {"type": "text", "text": {"preview_url": False, "body": message.body}}
        answer = self._post(payload)
        sent = answer.get("messages")
        first = sent[0] if isinstance(sent, list) and sent and isinstance(sent[0], dict) else {}
        wamid = first.get("id")
        if not isinstance(wamid, str) or not wamid:
            # Meta took the request but named no message: retrying could send it twice.
            raise SendFailed(SendOutcome.FAIL, "the Cloud API answered without a message id")
        return SendResult(wamid, "accepted")

    def find_sent(self, message: OutboundMessage) -> SendResult | None:
        """Always None: the Cloud API cannot list sent messages, nor look one up by a key of ours.

        A send a killed worker never recorded is recognised another way: it went out with
        `biz_opaque_callback_data: outbox:<id>`, Meta echoes that in the message's status
        webhooks, and the webhook records the `wamid` on that outbox row (`StatusUpdate.outbox_id`,
        `store.outbox.adopt_send`), so the retried send job finds the row sent and sends
        nothing. That holds when Meta's first status (`sent`, normally within seconds) arrives
        before the dead worker's job is requeued (`WORKER_DEAD_AFTER_SECONDS`); if the retry
        comes first, the user gets that reply twice. Twilio's channel looks the send up instead.
        """
        return None

    def send_typing(self, provider_message_id: str) -> None:
        """Mark the user's message read and show the typing indicator (about 25 s, or until we
        reply); raise `SendFailed` on failure."""
        self._post({
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": provider_message_id,
            "typing_indicator": {"type": "text"},
        })  # fmt: skip

    def media_source(self, media: Media) -> MediaSource:
        """Ask the Graph API for the attachment's short-lived URL; it is downloaded with the
        same bearer token (only that URL's origin sees it). Raises `MediaUnavailable` when the
        Graph API cannot answer now, `MediaRefused` when it never will (an expired media id)."""
        media_id = media.url.removeprefix(MEDIA_SCHEME)
        if not media.url.startswith(MEDIA_SCHEME) or not MEDIA_ID.fullmatch(media_id):
            raise MediaRefused("bad_url", f"not a Cloud API media id: {media.url[:80]!r}")
        try:
            params = {"phone_number_id": self._number_id()}
            response = self._client.get(f"/{media_id}", params=params)
        except SendFailed as exc:
            raise MediaRefused("http_error", exc.reason) from exc
        except httpx.HTTPError as exc:
            raise MediaUnavailable(f"Graph API: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise MediaUnavailable(
                f"Graph API answered {response.status_code} for media {media_id}"
            )
        if not response.is_success:
            raise MediaRefused("http_error", refused(response).reason)
        try:
            url = response.json().get("url")
        except (ValueError, AttributeError):
            url = None
        if not isinstance(url, str) or not url:
            raise MediaRefused("bad_url", f"the Graph API gave no URL for media {media_id}")
        assert self._tenant.cloud_access_token  # _client checked it
        return MediaSource(url, BearerAuth(self._tenant.cloud_access_token))
