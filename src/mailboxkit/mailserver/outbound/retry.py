"""When to try a temporarily failed delivery again: exponential backoff with jitter. Pure.

The n-th retry waits ``first_delay * 2**(n-1)`` seconds, at most ``max_delay``, each delay moved
by up to ±``jitter`` of itself at random so that a burst of failures does not come back as a
burst. Nothing is tried after the message's ``expires_at`` (its time in the queue, 5 days by
default, as RFC 5321 §4.5.4.1 suggests at least 4-5 days): the last attempt is made at that
moment, and a failure then bounces with status 4.4.7 (RFC 3463, delivery time expired).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    first_delay: float = 60.0
    max_delay: float = 3600.0
    jitter: float = 0.2

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Seconds to wait after the ``attempts``-th attempt failed (attempts >= 1)."""
        exponent = min(max(attempts - 1, 0), 32)
        base = min(self.max_delay, self.first_delay * 2**exponent)
        return float(base * (1 + self.jitter * (2 * rng.random() - 1)))

    def next_attempt(
        self, now: datetime, attempts: int, expires_at: datetime, rng: random.Random
    ) -> datetime | None:
        """When to try next, or None to give up (the message has expired)."""
        if now >= expires_at:
            return None
        return min(now + timedelta(seconds=self.delay(attempts, rng)), expires_at)
