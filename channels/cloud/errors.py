"""Meta's Cloud API error codes, in the channel's terms: what the send job does after each refusal.

A refusal comes back as `{"error": {"code": ..., "message": ..., "error_data": {"details": ...}}}`
with an HTTP status; Meta asks that handling be built on `code` (and `details`), not on the HTTP
status or the title inside `message`. The codes below are the ones whose meaning changes what we
do; anything else is permanent (`FAIL`), except that an HTTP 429 or 5xx is always worth a retry.
The meanings are from Meta's "WhatsApp error codes" reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from channels.base import SendFailed, SendOutcome

OUTSIDE_WINDOW = 131047
"""Re-engagement message: more than 24 hours since the user last wrote; only a template goes."""

MARKETING_OPT_OUT = 131050
"""The user stopped marketing messages from this business."""

RETRYABLE: Mapping[int, str] = {
    2: "API Service: temporary downtime or overload",
    4: "API Too Many Calls: the app reached its API call rate limit",
    80007: "Rate limit issues: the WhatsApp Business Account reached its rate limit",
    130429: "Rate limit hit: the number's Cloud API throughput (messages per second) is reached",
    131000: "Something went wrong: an unknown error; Meta says to try again",
    131016: "Service unavailable: a service is temporarily down",
    131048: "Spam rate limit hit: too many earlier messages from the number were blocked or "
    "flagged; a later attempt may pass once the number's quality recovers",
    131056: "(Business Account, Consumer Account) pair rate limit hit: too many messages to this "
    "one user in a short time",
}
"""Codes that say "not now": retried with the send job's backoff. (133016, the register and
deregister rate limit, is about registering the number, never about a send, so it is not here.)"""

PERMANENT: Mapping[int, str] = {
    0: "AuthException: the access token could not be authenticated",
    10: "Permission denied: the app lacks a permission for this number",
    100: "Invalid parameter: a field is missing, misspelled or has a bad value",
    190: "Access token has expired: the tenant must set a new cloud_access_token",
    131008: "Required parameter is missing",
    131009: "Parameter value is not valid",
    131026: "Message undeliverable: not a WhatsApp user, old client or terms not accepted",
    131049: "Meta chose not to deliver (per-user marketing limit); retrying soon will not help",
    131051: "Unsupported message type",
    132000: "The template's parameter count does not match its placeholders",
    132001: "The template does not exist in that language, or is not approved",
}
"""Codes that mean the same request will fail again: failed now (documented for the reader;
any code missing from every table is treated the same way)."""


def classify_error(status: int | None, code: int | None) -> SendOutcome:
    """Decide the fate of a failed send from the HTTP status and Meta's error code."""
    if code == OUTSIDE_WINDOW:
        return SendOutcome.TEMPLATE
    if code == MARKETING_OPT_OUT:
        return SendOutcome.OPTED_OUT
    if code in RETRYABLE or status == 429 or (status is not None and status >= 500):
        return SendOutcome.RETRY
    if status is None and code is None:  # the request never got an answer
        return SendOutcome.RETRY
    return SendOutcome.FAIL


def error_fields(response: httpx.Response) -> tuple[int | None, str]:
    """Meta's error code and a one-line description from an error response (any body)."""
    try:
        error: Any = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if not isinstance(error, dict):
        return None, f"HTTP {response.status_code} without a Graph API error body"
    raw_code = error.get("code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    message = str(error.get("message") or "no message")[:300]
    data = error.get("error_data")
    details = data.get("details") if isinstance(data, dict) else None
    text = f"{message}: {str(details)[:300]}" if details else message
    return code, f"Cloud API error {code} (HTTP {response.status_code}): {text}"


def refused(response: httpx.Response) -> SendFailed:
    """The channel's `SendFailed` for a response that is not a success."""
    code, reason = error_fields(response)
    return SendFailed(classify_error(response.status_code, code), reason, code)


def unreachable(exc: httpx.HTTPError) -> SendFailed:
    """The channel's `SendFailed` for a request that got no answer (a retry may get one)."""
    return SendFailed(classify_error(None, None), f"{type(exc).__name__}: {exc}")
