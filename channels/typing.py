"""Show WhatsApp's typing indicator while a slow answer is being prepared."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Self

import structlog
from twilio.rest import Client

log = structlog.get_logger(__name__)


class TypingIndicator:
    """Send the typing indicator for `message_sid` after `after` s, then every `every` s.

    Use as a context manager around the slow work; nothing is sent when the work finishes
    sooner than `after`. Failures are logged and never interrupt the work.
    """

    def __init__(
        self, client: Client | None, message_sid: str, *, after: float, every: float
    ) -> None:
        self._client, self._sid, self._after, self._every = client, message_sid, after, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="typing", daemon=True)
        self.sent = 0

    def __enter__(self) -> Self:
        if self._client is not None and self._after > 0:
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        wait = self._after
        while not self._stop.wait(wait):
            try:
                assert self._client is not None
                self._client.messaging.v2.typing_indicator.create(
                    channel="whatsapp", message_id=self._sid
                )
                self.sent += 1
            except Exception as exc:
                log.warning("typing indicator failed", error=str(exc))
            wait = self._every
