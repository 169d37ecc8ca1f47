"""The Twilio WhatsApp channel: Twilio's webhooks, and one tenant's Twilio account behind the
`Channel` protocol (`channels.base`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from functools import cached_property
from typing import Any

import httpx
import structlog
from twilio.rest import Client
from twilio.twiml.messaging_response import MessagingResponse

from channels.base import (
    BadSignature,
    Media,
    MediaSource,
    OutboundMessage,
    SendFailed,
    SendOutcome,
    SendResult,
    WebhookEvents,
    WebhookKind,
    WebhookReply,
    WebhookRequest,
)
from channels.choices import Choices, interactive
from channels.twilio import content
from channels.twilio.client import twilio_for
from channels.twilio.errors import FAILURES, OUTSIDE_WINDOW, describe, send_failed
from channels.twilio.inbound import (
    is_valid_signature,
    parse_form,
    parse_inbound,
    parse_status,
    required,
)
from channels.twilio.settings import TwilioSettings
from store.records import Tenant

log = structlog.get_logger(__name__)

INBOUND_PATH = "/webhooks/inbound"
STATUS_PATH = "/webhooks/status"
_ACCEPTED = WebhookReply(200, str(MessagingResponse()), "text/xml")
"""Twilio's inbound webhook wants TwiML back: an empty response sends no reply of its own."""
_RECORDED = WebhookReply(204)
_LOST_SEND_WINDOW = timedelta(minutes=1)
_LOST_SEND_LIMIT = 50


class TwilioWebhooks:
    """Where Twilio posts: inbound messages to the tenant's sender (`To`), statuses of the
    tenant's sends (`From`)."""

    def __init__(self) -> None:
        self.paths: Mapping[str, WebhookKind] = {INBOUND_PATH: "inbound", STATUS_PATH: "status"}

    def addressee(self, request: WebhookRequest, kind: WebhookKind) -> str:
        """The tenant's sender: the form's `To` for a message, `From` for a status."""
        form = parse_form(request.headers.get("content-type"), request.body)
        return required(form.fields, "To" if kind == "inbound" else "From")

    def reply(self, kind: WebhookKind) -> WebhookReply:
        """Empty TwiML for a message; no content for a status."""
        return _ACCEPTED if kind == "inbound" else _RECORDED


def _content_options(sid: str, variables: Mapping[str, str]) -> dict[str, str]:
    """A message create's fields for content `sid` filled with `variables`."""
    return {
        "content_sid": sid,
        "content_variables": json.dumps(dict(variables), ensure_ascii=False),
    }


class TwilioChannel:
    """One tenant's Twilio account (the sandbox's when TWILIO_API_BASE_URL is set)."""

    window_closed_code = OUTSIDE_WINDOW

    def __init__(self, settings: TwilioSettings, tenant: Tenant) -> None:
        if tenant.twilio_account_sid is None or tenant.twilio_auth_token is None:
            raise ValueError(f"tenant {tenant.slug} has no Twilio account ({tenant.channel})")
        self._settings, self._tenant = settings, tenant
        self._account_sid, self._auth_token = tenant.twilio_account_sid, tenant.twilio_auth_token

    @cached_property
    def client(self) -> Client:
        """The tenant's Twilio REST client, built on first use (a webhook never needs it)."""
        return twilio_for(self._settings, self._tenant)

    def parse(self, request: WebhookRequest, kind: WebhookKind) -> WebhookEvents:
        """Check `X-Twilio-Signature` with the tenant's auth token, then read the form."""
        form = parse_form(request.headers.get("content-type"), request.body)
        signature = request.headers.get("x-twilio-signature")
        if not is_valid_signature(self._auth_token, request.url, form.sent, signature):
            raise BadSignature("X-Twilio-Signature is missing or wrong.")
        if form.cleaned:
            log.info("removed NUL characters from a signed form")
        if kind == "inbound":
            return WebhookEvents(messages=(parse_inbound(form.fields),))
        return WebhookEvents(statuses=(parse_status(form.fields),))

    def send(self, message: OutboundMessage) -> SendResult:
        """Create the message at Twilio: the body, the template's ContentSid and variables, or
        the choices as quick-reply buttons or a list picker (as the numbered `body` when they
        cannot go out as either)."""
        options: dict[str, Any] = {"to": message.to, "from_": message.sender}
        if self._settings.twilio_status_callbacks:
            options["status_callback"] = self._settings.public_url(STATUS_PATH)
        if message.template is not None:
            options |= _content_options(message.template.id, message.template.variables)
        elif message.choices is not None and interactive(message.choices):
            return self._send_choices(options, message.choices)
        else:
            options["body"] = message.body
        return self._create(options)

    def _send_choices(self, options: dict[str, Any], choices: Choices) -> SendResult:
        """Send `choices` through the account's content resource of their shape."""
        account = self._account_sid
        shape, variables = content.variables(choices)
        try:
            sid = content.content_sid(self.client, account, shape)
        except FAILURES as exc:
            raise send_failed(exc) from exc
        try:
            return self._create(options | _content_options(sid, variables))
        except SendFailed as failed:
            if failed.code != content.CONTENT_SID_INVALID:
                raise
            content.forget(account, shape)  # deleted at Twilio: the retry creates it again
            raise SendFailed(SendOutcome.RETRY, failed.reason, failed.code) from failed

    def _create(self, options: dict[str, Any]) -> SendResult:
        """Create one message at Twilio, its refusal as `SendFailed`."""
        try:
            sent = self.client.messages.create(**options)
        except FAILURES as exc:
            raise send_failed(exc) from exc
        return SendResult(str(sent.sid), str(sent.status or "queued"))

    def find_sent(self, message: OutboundMessage) -> SendResult | None:
        """Twilio keeps no key of ours, so match by recipient, sender, time and body: an
        interrupted template send carries the template's text, is not recognised, and goes out
        again. A send with choices shows the content's body (or, sent as text, `body`)."""
        try:
            sent = self.client.messages.list(
                to=message.to,
                from_=message.sender,
                date_sent_after=message.created_at - _LOST_SEND_WINDOW,
                limit=_LOST_SEND_LIMIT,
            )
        except FAILURES as exc:
            raise SendFailed(SendOutcome.RETRY, describe(exc)) from exc
        bodies = {message.body} | ({message.choices.body} if message.choices else set())
        earlier = next((s for s in sent if s.body in bodies), None)
        if earlier is None:
            return None
        return SendResult(str(earlier.sid), str(earlier.status or "queued"))

    def send_typing(self, provider_message_id: str) -> None:
        """Twilio's WhatsApp typing indicator (it also marks the user's message read)."""
        self.client.messaging.v2.typing_indicator.create(
            channel="whatsapp", message_id=provider_message_id
        )

    def media_source(self, media: Media) -> MediaSource:
        """Twilio serves media at its URL to the account's SID and auth token (HTTP Basic)."""
        auth = httpx.BasicAuth(self._account_sid, self._auth_token)
        return MediaSource(media.url, auth)
