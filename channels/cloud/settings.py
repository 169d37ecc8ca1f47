"""What the Cloud API channel reads of the service's settings (`server.settings.Settings`)."""

from __future__ import annotations

from typing import Protocol

GRAPH_API_BASE_URL = "https://graph.facebook.com/v21.0"
"""Meta's Graph API, with the version the channel was written against."""


class CloudSettings(Protocol):
    """CLOUD_API_BASE_URL and where Meta reaches this service."""

    cloud_api_base_url: str | None
    """Meta's Graph API somewhere else (the local Cloud API sandbox), or None for Meta itself."""

    def public_url(self, path: str) -> str:
        """The URL a provider uses to reach `path` on this service."""
        ...


def graph_base_url(settings: CloudSettings) -> str:
    """The Graph API base the channel calls, without a trailing slash."""
    return (settings.cloud_api_base_url or GRAPH_API_BASE_URL).rstrip("/")
