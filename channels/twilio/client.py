"""Build the official Twilio REST client, optionally pointed at another API base.

The ``twilio`` package hard-codes ``https://*.twilio.com`` hosts in every resource.
:class:`RedirectingHttpClient` rewrites those URLs at the HTTP layer so the unchanged
client can talk to a local stand-in such as :class:`channels.sandbox.twilio.TwilioSandbox`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from channels.twilio.settings import TwilioSettings
from store.records import Tenant

__all__ = ["RedirectingHttpClient", "make_twilio_client", "twilio_for"]


def _is_twilio_host(hostname: str | None) -> bool:
    """Return whether ``hostname`` belongs to Twilio's public API domain."""
    if not hostname:
        return False
    hostname = hostname.lower().rstrip(".")
    return hostname == "twilio.com" or hostname.endswith(".twilio.com")


class RedirectingHttpClient(TwilioHttpClient):
    """Send requests meant for ``*.twilio.com`` to ``api_base_url`` instead."""

    def __init__(self, api_base_url: str, **kwargs: Any) -> None:
        """Create the client; ``kwargs`` are passed on to :class:`TwilioHttpClient`."""
        parts = urlsplit(api_base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"api_base_url must be an absolute http(s) URL, got {api_base_url!r}")
        super().__init__(**kwargs)
        self.api_base_url = api_base_url.rstrip("/")
        self._base = parts
        if self.session is not None:
            # TwilioHttpClient only configures the https:// adapter (pool size, retries);
            # use the same one for plain-http bases such as a local sandbox.
            self.session.mount("http://", self.session.get_adapter("https://"))

    def rewrite_url(self, url: str) -> str:
        """Return ``url`` moved onto the API base if it targets Twilio, else unchanged."""
        parts = urlsplit(url)
        if not _is_twilio_host(parts.hostname):
            return url
        path = self._base.path.rstrip("/") + (parts.path or "/")
        return urlunsplit((self._base.scheme, self._base.netloc, path, parts.query, ""))

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """Rewrite Twilio URLs to the API base, then perform the request."""
        return super().request(
            method,
            self.rewrite_url(url),
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )


def make_twilio_client(
    account_sid: str,
    auth_token: str,
    *,
    api_base_url: str | None = None,
    timeout: float = 10.0,
) -> Client:
    """Create a Twilio REST client, redirected to ``api_base_url`` when one is given."""
    http_client: TwilioHttpClient
    if api_base_url is None:
        http_client = TwilioHttpClient(timeout=timeout)
    else:
        http_client = RedirectingHttpClient(api_base_url, timeout=timeout)
    return Client(account_sid, auth_token, http_client=http_client)


def twilio_for(settings: TwilioSettings, tenant: Tenant) -> Client:
    """Return the Twilio client of `tenant` (the sandbox when TWILIO_API_BASE_URL is set);
    raise `ValueError` for a tenant with no Twilio account (one on another provider)."""
    if tenant.twilio_account_sid is None or tenant.twilio_auth_token is None:
        raise ValueError(f"tenant {tenant.slug} has no Twilio account (channel {tenant.channel})")
    return make_twilio_client(
        tenant.twilio_account_sid,
        tenant.twilio_auth_token,
        api_base_url=settings.twilio_api_base_url,
    )
