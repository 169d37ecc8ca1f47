"""Twilio's error codes, in the channel's terms: what the send job does after each refusal."""

from __future__ import annotations

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException

from channels.base import SendFailed, SendOutcome

RATE_LIMITED = 63018
OUTSIDE_WINDOW = 63016
UNSUBSCRIBED = 21610

FAILURES = (TwilioException, requests.RequestException)
"""What the `twilio` client raises: Twilio's refusals, and the network's."""


def classify_error(status: int | None, code: int | None) -> SendOutcome:
    """Decide the fate of a failed send from Twilio's HTTP status and error code."""
    if code == OUTSIDE_WINDOW:
        return SendOutcome.TEMPLATE
    if code == UNSUBSCRIBED:
        return SendOutcome.OPTED_OUT
    if code == RATE_LIMITED or status == 429 or (status is not None and status >= 500):
        return SendOutcome.RETRY
    if status is None and code is None:  # the request never got an answer
        return SendOutcome.RETRY
    return SendOutcome.FAIL


def describe(exc: Exception) -> str:
    """One line that says what went wrong, with Twilio's code and message when it answered."""
    if isinstance(exc, TwilioRestException):
        return f"Twilio error {exc.code} (HTTP {exc.status}): {exc.msg}"
    return f"{type(exc).__name__}: {exc}"


def send_failed(exc: Exception) -> SendFailed:
    """The channel's `SendFailed` for an exception the `twilio` client raised."""
    if isinstance(exc, TwilioRestException):
        return SendFailed(classify_error(exc.status, exc.code), describe(exc), exc.code)
    return SendFailed(classify_error(None, None), describe(exc))
