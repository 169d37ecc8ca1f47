"""The channel seam: what the service needs of a WhatsApp provider, in the service's own words.

A provider (Twilio today) implements two things. Its `Webhooks` read what it posts to us before
we know which tenant it is for; its `Channel`, built per tenant with that tenant's credentials,
verifies and parses those posts, sends, shows typing, finds an earlier send and says how to
download media. Everything else (jobs, webhook routes, the store) speaks only of the records
below; provider ids (Twilio's `MessageSid`...) travel as opaque `provider_message_id` strings.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import httpx

from channels.choices import Choices

MessageKind = Literal["text", "media", "location", "button", "unsupported"]
WebhookKind = Literal["inbound", "status"]
"""What a webhook path receives: the users' messages, or delivery statuses of ours."""

STATUSES = frozenset(
    {"accepted", "scheduled", "queued", "sending", "sent", "delivered", "read", "undelivered",
     "failed", "canceled"}
)  # fmt: skip
"""The delivery statuses a provider may report (`message_status_rank` in 0002 orders them)."""


@dataclass(frozen=True)
class WebhookRequest:
    """A provider's HTTP post, as its signature covers it."""

    url: str
    """The public URL the provider posted to, query included (what it signed)."""
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: bytes


@dataclass(frozen=True)
class Media:
    """An attachment the provider hosts; fetched later through `Channel.media_source`."""

    url: str
    content_type: str


@dataclass(frozen=True)
class InboundMessage:
    """A user's WhatsApp message, whichever provider delivered it."""

    provider_message_id: str
    """Unique per tenant: a message delivered twice is stored once."""
    sender: str
    """The user's address, `whatsapp:+<number>`; replies go to it."""
    recipient: str
    """The tenant's WhatsApp sender the message was sent to."""
    wa_id: str
    """The user's WhatsApp id: who the user is, whatever number they write from."""
    kind: MessageKind
    body: str
    profile_name: str | None
    media: tuple[Media, ...] = ()
    payload: Mapping[str, Any] = field(default_factory=dict, repr=False)
    """What the provider sent, kept with the message (verified, PostgreSQL-safe: no NUL)."""
    choice: str | None = None
    """For a pressed button or list row (`kind` "button"): the id of the option we sent
    (`channels.choices.Option.id`); `body` is its title."""


@dataclass(frozen=True)
class StatusUpdate:
    """A delivery status the provider reports for one of our messages."""

    provider_message_id: str
    status: str
    """One of `STATUSES`."""
    error_code: int | None
    outbox_id: int | None = None
    """Our outbox id, when the provider echoes the one we sent with the message (Meta's
    `biz_opaque_callback_data`): it names a send a killed worker never recorded."""


@dataclass(frozen=True)
class WebhookEvents:
    """What one verified webhook post holds (a provider may batch several of each)."""

    messages: tuple[InboundMessage, ...] = ()
    statuses: tuple[StatusUpdate, ...] = ()


@dataclass(frozen=True)
class WebhookReply:
    """What the provider expects back once a post is accepted."""

    status_code: int
    body: str = ""
    media_type: str | None = None


@dataclass(frozen=True)
class Template:
    """An approved template by the provider's id for it, and its filled placeholders."""

    id: str
    variables: Mapping[str, str]
    language: str | None = None
    """The language the tenant registered it in ("pt-BR", "en"), when it says."""


@dataclass(frozen=True)
class OutboundMessage:
    """One outbox row to send: exactly one of `body` or `template` is what the user reads."""

    message_id: int
    """Our outbox id: the key `Channel.find_sent` looks an earlier send up by."""
    to: str
    sender: str
    body: str
    created_at: datetime
    template: Template | None = None
    choices: Choices | None = None
    """Buttons or a list to send with `choices.body` instead of `body` (which holds the same
    reply as numbered text); never set with `template`. A provider that cannot send them
    sends `body`."""


@dataclass(frozen=True)
class SendResult:
    """The provider accepted a message: its id (status callbacks name it) and first status."""

    provider_message_id: str
    status: str


class SendOutcome(enum.Enum):
    """What the send job does after a provider refused a message."""

    RETRY = "retry"
    """Transient (network, 5xx, rate limits): retry with backoff."""

    TEMPLATE = "template"
    """Outside the 24-hour window: send the tenant's approved template instead."""

    OPTED_OUT = "opted_out"
    """The user blocked or unsubscribed from the sender: fail, and record the opt-out."""

    FAIL = "fail"
    """Permanent (bad number, not a WhatsApp user, any unknown error): fail now, no retry."""


class InvalidRequest(ValueError):
    """A post the provider would never send; `code` is the API error code, the text says why."""

    def __init__(self, code: Literal["invalid_form", "invalid_message", "invalid_status"],
                 reason: str) -> None:  # fmt: skip
        super().__init__(reason)
        self.code = code


class NothingForUs(Exception):
    """A well-formed post that holds nothing the service reads (a provider's other
    notifications: Meta's template or account updates). It is acknowledged, unverified and
    unstored, so the provider does not retry it for days."""


class BadSignature(Exception):
    """The post's signature is missing or does not match the tenant's secret."""


class SendFailed(Exception):
    """The provider refused a send (or could not be asked); `outcome` says what to do next."""

    def __init__(self, outcome: SendOutcome, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.outcome, self.reason, self.code = outcome, reason, code


@dataclass(frozen=True)
class MediaSource:
    """Where to download an attachment, and the credentials only that URL's origin may see."""

    url: str
    auth: httpx.Auth | None


class Webhooks(Protocol):
    """A provider's webhooks before the tenant is known (no network, no secrets)."""

    paths: Mapping[str, WebhookKind]
    """The URL paths the provider posts to, each with what it receives there."""

    def addressee(self, request: WebhookRequest, kind: WebhookKind) -> str:
        """Return the tenant's WhatsApp sender the (unverified) post is for, the key that finds
        the tenant whose secret verifies it; raise `InvalidRequest` when there is none, or
        `NothingForUs` when the post is well formed but holds nothing we read."""
        ...

    def reply(self, kind: WebhookKind) -> WebhookReply:
        """What to answer once a post of `kind` is accepted (a replay included)."""
        ...


class Channel(Protocol):
    """One tenant's WhatsApp channel through one provider."""

    window_closed_code: int
    """The provider's error code for a free-form message outside the 24-hour window; a message
    that cannot go out for that reason (no template either) is failed with it."""

    def parse(self, request: WebhookRequest, kind: WebhookKind) -> WebhookEvents:
        """Verify the post's signature with the tenant's secret before reading anything else
        (raise `BadSignature`), then return what it holds (raise `InvalidRequest` when it is
        not what the provider sends). Pure: no network, no storage."""
        ...

    def send(self, message: OutboundMessage) -> SendResult:
        """Send one message, with its status callbacks directed to us; raise `SendFailed`
        with the outcome the provider's error means. Never retries by itself. With
        `message.choices`, send its body with the options as buttons or a list."""
        ...

    def find_sent(self, message: OutboundMessage) -> SendResult | None:
        """Return the provider's record of an earlier send of this outbox message that a dead
        worker made but never recorded, or None; raise `SendFailed` (RETRY) when the provider
        cannot be asked. A false None sends the message twice; a false match never sends it."""
        ...

    def send_typing(self, provider_message_id: str) -> None:
        """Show the typing indicator in reply to the user's message; raise on failure."""
        ...

    def media_source(self, media: Media) -> MediaSource:
        """Return where to download `media` and with which credentials."""
        ...
