"""What the Twilio channel reads of the service's settings (`server.settings.Settings`)."""

from __future__ import annotations

from typing import Protocol


class TwilioSettings(Protocol):
    """TWILIO_API_BASE_URL, TWILIO_STATUS_CALLBACKS and where Twilio reaches this service."""

    twilio_api_base_url: str | None
    """Twilio's API somewhere else (the local sandbox), or None for Twilio itself."""
    twilio_status_callbacks: bool

    def public_url(self, path: str) -> str:
        """The URL a provider uses to reach `path` on this service."""
        ...
