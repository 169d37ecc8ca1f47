"""Row types read from and written to PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class Tenant:
    """A business that runs an assistant on its own WhatsApp sender."""

    id: UUID
    slug: str
    name: str
    whatsapp_sender: str
    twilio_account_sid: str | None
    """None for a tenant on another provider (`channel`)."""
    twilio_auth_token: str | None = field(repr=False)
    default_locale: str
    timezone: str
    persona: str
    typing_indicator: bool
    closed_window_template_sid: str | None
    closed_window_template_variables: dict[str, Any]
    default_plan_id: UUID | None
    auto_enroll: bool
    trace_privacy: str
    system_prompt: str | None
    handoff_message: str | None = None
    handoff_return_message: str | None = None
    handoff_auto_return_seconds: int = 1800
    channel: str = "twilio"
    """The provider the tenant's WhatsApp sender is on (a name in `channels.registry.PROVIDERS`)."""
    data_request_message: str | None = None
    """What a user asking for their data is told (None: the channel's default notice)."""
    pii_policy: str = "keep"
    """What memory writes do with personal data: keep, mask or refuse (`store.pii`)."""
    budget_exhausted: str = "notice"
    """What a turn does once a budget is spent: notice, cheaper_model or general_only."""
    budget_cheaper_model: str | None = None
    """The model a `cheaper_model` tenant's turns use once a budget is spent."""
    budget_alert_url: str | None = None
    """Where budget alerts (80% and 100%) are POSTed as JSON, besides the log line."""
    cloud_phone_number_id: str | None = None
    """The tenant's number on Meta's WhatsApp Cloud API (`channel = "cloud"`): its Graph API id."""
    cloud_business_account_id: str | None = None
    """The WhatsApp Business Account the number belongs to (its templates live there)."""
    cloud_access_token: str | None = field(default=None, repr=False)
    """The Graph API token the tenant's messages are sent with."""
    cloud_app_secret: str | None = field(default=None, repr=False)
    """The Meta app's secret: it signs the webhooks (`X-Hub-Signature-256`)."""


@dataclass(frozen=True)
class User:
    """A WhatsApp user of one tenant, identified by the WhatsApp id Twilio gives."""

    id: UUID
    tenant_id: UUID
    wa_id: str
    address: str
    profile_name: str | None
    locale: str | None
    opted_out_at: datetime | None
    enabled: bool
    timezone: str | None


@dataclass(frozen=True)
class Conversation:
    """The open conversation between a user and a tenant's assistant."""

    id: UUID
    tenant_id: UUID
    user_id: UUID
    state: str
    thread_id: str
    last_inbound_at: datetime | None
    handoff_at: datetime | None = None


@dataclass(frozen=True)
class Message:
    """One WhatsApp message, inbound or outbound."""

    id: int
    tenant_id: UUID
    conversation_id: UUID
    direction: str
    provider_message_id: str | None
    idempotency_key: str | None
    kind: str
    body: str
    from_address: str
    to_address: str
    media: list[dict[str, Any]]
    status: str
    error: str | None
    error_code: int | None
    purpose: str
    template_sid: str | None
    attempts: int
    correlation_id: str
    created_at: datetime
    enqueued_at: datetime | None
    processed_at: datetime | None
    transcription_status: str | None = None
    """A voice note's transcript: null (none needed), pending, done, failed or skipped."""
    transcript: str | None = None
    transcript_language: str | None = None
    transcript_confidence: float | None = None
    transcript_unsure: bool | None = None
    transcription_error: str | None = None
    audio_seconds: float | None = None
    template_variables: dict[str, Any] = field(default_factory=dict)
    """The named variables this outbound message fills its template with outside the 24-hour
    window (e.g. a reminder's `text` and `when`); see `server.jobs.templating`."""
    choices: dict[str, Any] | None = None
    """The buttons or list an outbound message offers (`channels.choices.Choices.to_json`);
    its `body` is the same reply as numbered text."""
    choice: str | None = None
    """The id of the option an inbound message pressed (a button or list row of ours)."""

    @property
    def awaits_transcript(self) -> bool:
        """Whether this is a voice note still waiting for the `transcribe_audio` job."""
        return self.transcription_status == "pending"

    @property
    def heard(self) -> str:
        """The voice note's transcript when there is one to answer, else ''."""
        if self.transcription_status != "done":
            return ""
        return (self.transcript or "").strip()

    @property
    def text(self) -> str:
        """What the user said: the typed body, else the voice note's transcript, else ''."""
        return self.body.strip() or self.heard
