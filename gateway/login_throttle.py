"""Failed logins cost the attacker more than us: a budget of failures per source address.

Each address has a token bucket of ``burst`` failed logins that refills one failure every
``refill_ms``. While an address's budget is spent, its logins are refused LOGIN_THROTTLED
before anything else is looked at (no key lookup, no signature check). A successful login
takes nothing. The table is bounded (``addresses_max``): when it is full the address seen
least recently is forgotten (an attacker who floods it with addresses only resets entries
that it could reset from those addresses anyway). Time is the caller's clock in ns.
"""
from __future__ import annotations

import collections

__all__ = ["LoginThrottle"]

NS_PER_MS = 1_000_000


class LoginThrottle:
    """Per-address failed-login budgets. ``allowed(address, now_ns)`` before a login is
    checked, ``failed(address, now_ns)`` after a refusal."""

    __slots__ = ("burst", "refill_ns", "addresses_max", "_spent")

    def __init__(self, burst: int, refill_ms: int, addresses_max: int) -> None:
        if burst <= 0 or refill_ms <= 0 or addresses_max <= 0:
            raise ValueError("burst, refill_ms and addresses_max must be positive")
        self.burst, self.refill_ns, self.addresses_max = burst, refill_ms * NS_PER_MS, addresses_max
        #: address -> the time at which its budget is whole again (LRU order, oldest first)
        self._spent: collections.OrderedDict[str, int] = collections.OrderedDict()

    def _failures(self, address: str, now_ns: int) -> int:
        """Failures still counted against ``address`` at ``now_ns`` (rounded up)."""
        whole_at = self._spent.get(address)
        if whole_at is None or whole_at <= now_ns:
            return 0
        return -(-(whole_at - now_ns) // self.refill_ns)

    def allowed(self, address: str, now_ns: int) -> bool:
        """True unless ``address`` has used up its failures."""
        return self._failures(address, now_ns) < self.burst

    def failed(self, address: str, now_ns: int) -> None:
        """Count one failed login of ``address``."""
        whole_at = max(self._spent.pop(address, now_ns), now_ns) + self.refill_ns
        self._spent[address] = whole_at
        while len(self._spent) > self.addresses_max:
            self._spent.popitem(last=False)

    def __len__(self) -> int:
        return len(self._spent)
