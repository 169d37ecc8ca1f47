"""Inbound media of :mod:`channels.sandbox.twilio`: files served at Twilio-shaped media URLs.

A media URL (``/2010-04-01/Accounts/{sid}/Messages/{MM}/Media/{ME}``) answers only with the
account's credentials, as Twilio's does once media auth is enforced. Besides plain files, tests
serve redirects (Twilio redirects to its CDN) and endless streams (to exercise download limits).
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from channels.sandbox._wire import API_VERSION, ApiError, RawReply

MEDIA_PATH = re.compile(
    rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/Messages/(?P<message>[^/]+)/Media/(?P<sid>ME[0-9a-f]+)$"
)


@dataclass(frozen=True)
class Media:
    """A file the sandbox serves at a media URL (or a redirect, or an endless stream)."""

    account_sid: str
    content_type: str
    body: bytes = b""
    location: str | None = None
    trickle: tuple[bytes, float] | None = None


class MediaStore:
    """Stored media by SID, and every request made for it (thread-safe)."""

    def __init__(self) -> None:
        """Start with no media."""
        self._lock = threading.Lock()
        self._media: dict[str, Media] = {}
        self._fetches: list[dict[str, Any]] = []

    def add(self, media: Media) -> str:
        """Store ``media`` and return the path of its new URL."""
        sid, message = "ME" + secrets.token_hex(16), "MM" + secrets.token_hex(16)
        with self._lock:
            self._media[sid] = media
        return f"/{API_VERSION}/Accounts/{media.account_sid}/Messages/{message}/Media/{sid}"

    @property
    def fetches(self) -> list[dict[str, Any]]:
        """Return every request for a media URL: ``sid``, ``account_sid``, ``authorized``."""
        with self._lock:
            return [dict(f) for f in self._fetches]

    def serve(self, account: str, sid: str, authenticate: Callable[[], object]) -> RawReply:
        """Answer a media URL's GET, recording it; ``authenticate`` raises for bad credentials."""
        record = {"sid": sid, "account_sid": account, "authorized": False}
        with self._lock:
            self._fetches.append(record)
            media = self._media.get(sid)
        authenticate()
        record["authorized"] = True
        if media is None or media.account_sid != account:
            raise ApiError(20404, 404, f"No media {sid}")
        if media.location is not None:
            return RawReply(int(media.body), {"Location": media.location})
        headers = {"Content-Type": media.content_type}
        return RawReply(200, headers, media.body, trickle=media.trickle)

    def clear(self) -> None:
        """Forget every file and fetch."""
        with self._lock:
            self._media.clear()
            self._fetches.clear()
