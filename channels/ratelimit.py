"""A per-sender send rate shared by every worker, kept in Redis."""

from __future__ import annotations

import time

from redis import Redis

_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], 2000) end
return count
"""


class SenderRateLimiter:
    """Allow at most `per_second` sends per sender per second, across processes."""

    def __init__(self, redis: Redis, per_second: int, *, prefix: str = "conversa:rate") -> None:
        if per_second < 1:
            raise ValueError("per_second must be at least 1")
        self._redis, self._limit, self._prefix = redis, per_second, prefix
        self._incr = redis.register_script(_SCRIPT)

    def try_acquire(self, sender: str, now: float | None = None) -> float:
        """Take a slot for `sender` now; return 0, or how many seconds to wait and ask again."""
        now = time.time() if now is None else now
        second = int(now)
        count = int(self._incr(keys=[f"{self._prefix}:{sender}:{second}"]))
        return 0.0 if count <= self._limit else (second + 1) - now

    def acquire(self, sender: str, timeout: float = 30.0) -> None:
        """Wait for a slot for `sender`; raise TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (wait := self.try_acquire(sender)) > 0:
            if time.monotonic() + wait > deadline:
                raise TimeoutError(f"no send slot for {sender} within {timeout:.0f} s")
            time.sleep(wait)
