"""Login throttling: slow, then refuse, password guessing.

Failures are counted per (account, source address) and per source address,
over a sliding ``lockout`` window. Each failure beyond the first adds a delay
before the next answer from that address (doubling, capped at a few seconds);
at the threshold the pair or the address is locked and every attempt from it
gets <temporary-auth-failure/> (RFC 6120 §6.5.11) until the window passes.
The account's owner logging in from another address is not affected, and a
success clears the pair's count. Counting by the name a client gives, known
user or not, keeps this from telling which accounts exist.

Memory is bounded: entries older than the window are dropped as they are met,
and at most ``max_entries`` keys are kept (the oldest go first).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

MAX_DELAY = 4.0


class LoginThrottle:
    def __init__(self, clock: Any, per_account: int, per_address: int, window: float,
                 max_entries: int = 100_000) -> None:
        self.clock = clock
        self.per_account = per_account
        self.per_address = per_address
        self.window = window
        self.max_entries = max_entries
        #: key -> (failures, time of the first failure in the window)
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def _count(self, key: str) -> int:
        entry = self._failures.get(key)
        if entry is None:
            return 0
        if self.clock.seconds() - entry[1] > self.window:
            del self._failures[key]
            return 0
        return entry[0]

    def _add(self, key: str) -> None:
        now = self.clock.seconds()
        count = self._count(key)
        first = self._failures[key][1] if count else now
        self._failures[key] = (count + 1, first)
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_entries:
            self._failures.popitem(last=False)

    @staticmethod
    def _keys(account: str, address: str) -> tuple[str, str]:
        return f"{account}\0{address}", f"\0{address}"

    def locked(self, account: str, address: str) -> bool:
        """True when attempts on *account* from *address* are refused now."""
        pair, addr = self._keys(account, address)
        return self._count(pair) >= self.per_account or self._count(addr) >= self.per_address

    def delay(self, account: str, address: str) -> float:
        """Seconds to wait before answering the next attempt."""
        pair, addr = self._keys(account, address)
        failures = max(self._count(pair), self._count(addr) * self.per_account // self.per_address)
        return 0.0 if failures <= 1 else min(MAX_DELAY, 0.25 * 2 ** (failures - 2))

    def locked_now(self) -> tuple[int, int]:
        """(accounts locked from an address, addresses locked), now."""
        now, accounts, addresses = self.clock.seconds(), 0, 0
        for key, (count, first) in self._failures.items():
            if now - first > self.window:
                continue
            if key.startswith("\0"):
                addresses += count >= self.per_address
            else:
                accounts += count >= self.per_account
        return accounts, addresses

    def failed(self, account: str, address: str) -> None:
        for key in self._keys(account, address):
            self._add(key)

    def succeeded(self, account: str, address: str) -> None:
        self._failures.pop(self._keys(account, address)[0], None)
