"""The `post_budget_alert` job: tell a tenant's own system that a budget crossed 80% or 100%.

The alert is a JSON POST to the tenant's `budget_alert_url` (read when the job runs, so a URL
changed meanwhile is the one used). The address must be public unless
`BUDGET_ALERT_ALLOW_PRIVATE` is on (tests, a local demo): a tenant admin's URL must not reach
the service's own network. A refused connection or a non-2xx answer raises, and RQ retries.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from uuid import UUID

import httpx
import structlog

from server.jobs.common import connect
from server.logs import bind_correlation_id
from server.settings import get_settings
from store import tenants

log = structlog.get_logger(__name__)

TIMEOUT_SECONDS = 10.0


class AlertRefused(Exception):
    """The alert URL points somewhere the service does not post to."""


def post_budget_alert(tenant_id: str, payload: dict[str, Any], correlation_id: str) -> str:
    """POST `payload` to the tenant's budget alert webhook; return what happened."""
    settings = get_settings()
    bind_correlation_id(correlation_id, job="post_budget_alert", level=payload.get("level"))
    with connect(settings, tenant_id) as conn:
        tenant = tenants.tenant_by_id(conn, UUID(tenant_id))
    if tenant is None or not tenant.budget_alert_url:
        log.info("no budget alert webhook; the log line was the alert")
        return "no webhook"
    url = httpx.URL(tenant.budget_alert_url)
    if not settings.budget_alert_allow_private:
        _check_public(url)
    response = httpx.post(url, json=payload, timeout=TIMEOUT_SECONDS, follow_redirects=False)
    response.raise_for_status()
    log.info("budget alert posted", status=response.status_code)
    return f"posted: {response.status_code}"


def _check_public(url: httpx.URL) -> None:
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise AlertRefused(f"cannot resolve {url.host}: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not address.is_global or address.is_multicast:
            raise AlertRefused(f"{url.host} resolves to a non-public address ({address})")
