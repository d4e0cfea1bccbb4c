"""Token buckets: how transports slow a sender down instead of dropping its data."""

from __future__ import annotations

from typing import Any


class TokenBucket:
    """*rate* tokens a second, at most *burst* saved up."""

    def __init__(self, rate: float, burst: float, clock: Any) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._tokens = float(burst)
        self._when = clock.seconds()

    def take(self, amount: float) -> float:
        """Spend *amount* tokens (going into debt if need be); the seconds to
        wait until the debt is paid, 0 when there was enough."""
        now = self.clock.seconds()
        self._tokens = min(self.burst, self._tokens + (now - self._when) * self.rate) - amount
        self._when = now
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate
