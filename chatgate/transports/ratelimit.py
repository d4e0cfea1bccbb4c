"""Token buckets: how transports slow a sender down instead of dropping its data;
and :class:`Backlog`, how they notice a client that stops reading."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet import interfaces
from zope.interface import implementer


@implementer(interfaces.IPushProducer)
class Backlog:
    """What was written to a connection since its transport's buffer filled
    (RFC 6120 §13.12): registered as the transport's producer, Twisted says
    when the buffer is full and when it drained. What is written in the
    reactor turn the buffer filled is one burst and not counted (nothing was
    sent yet: a login in a large domain gets its roster and everyone's
    presence at once); past *limit* bytes more, the client does not read."""

    __slots__ = ("limit", "clock", "_size", "_burst")

    def __init__(self, limit: int, clock: Any) -> None:
        self.limit = limit
        self.clock = clock
        self._size: int | None = None
        self._burst = False

    def over(self, written: int) -> bool:
        """Count *written* bytes; True once more than the limit waits."""
        if self._size is None or self._burst:
            return False
        self._size += written
        return self._size > self.limit

    @property
    def waiting(self) -> int:
        """Bytes written since the transport's buffer filled (0 while it is not full)."""
        return self._size or 0

    def pauseProducing(self) -> None:
        if self._size is None:
            self._size = 0
            self._burst = True
            self.clock.callLater(0, self._burst_over)

    def _burst_over(self) -> None:
        self._burst = False

    def resumeProducing(self) -> None:
        self._size = None

    def stopProducing(self) -> None:
        self._size = None


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

    def try_take(self, amount: float = 1) -> bool:
        """Spend *amount* tokens if there are that many; never goes into debt."""
        now = self.clock.seconds()
        self._tokens = min(self.burst, self._tokens + (now - self._when) * self.rate)
        self._when = now
        if self._tokens < amount:
            return False
        self._tokens -= amount
        return True


class PerAddress:
    """One token bucket per source address: how often each may start something.

    At most *max_addresses* are remembered (the least recently seen go first),
    so a scan from many addresses costs bounded memory.
    """

    def __init__(self, rate: float, burst: float, clock: Any, max_addresses: int = 100_000) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.max_addresses = max_addresses
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, address: str) -> bool:
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = TokenBucket(self.rate, self.burst, self.clock)
            if len(self._buckets) > self.max_addresses:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(address)
        return bucket.try_take()
