"""Show WhatsApp's typing indicator while a slow answer is being prepared."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Self

import structlog

from channels.base import Channel

log = structlog.get_logger(__name__)


class TypingIndicator:
    """Show typing in reply to `provider_message_id` after `after` s, then every `every` s.

    Use as a context manager around the slow work; nothing is sent when the work finishes
    sooner than `after`. Failures are logged and never interrupt the work.
    """

    def __init__(
        self, channel: Channel | None, provider_message_id: str, *, after: float, every: float
    ) -> None:
        self._channel, self._message_id = channel, provider_message_id
        self._after, self._every = after, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="typing", daemon=True)
        self.sent = 0

    def __enter__(self) -> Self:
        if self._channel is not None and self._after > 0:
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
                assert self._channel is not None
                self._channel.send_typing(self._message_id)
                self.sent += 1
            except Exception as exc:
                log.warning("typing indicator failed", error=str(exc))
            wait = self._every
