"""How many mails of one recipient domain a send run may claim (H2 pacing).

A domain's allowance per run is its `per_minute` (pacing.py: carrier defaults and the
`domain_pacing` setting; `domain_rate_per_minute` for every other domain, 0 = off) times
the minutes between runs — the send DAG passes its own schedule, runs outside Airflow
use the `send_interval_minutes` setting. A domain in backoff gets nothing this run. Mails
over the allowance stay unsent (not held, not error) and the next run claims them, so
one provider (e.g. docomo.ne.jp) never receives a whole 30,000-mail burst at once.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Container, Mapping

from automail.addresses import domain_of
from automail.sending.pacing import DomainPace


class DomainLimiter:
    def __init__(
        self,
        rate_per_minute: int,
        minutes: float,
        pacing: Mapping[str, DomainPace] | None = None,
        waiting: Container[str] = (),
    ) -> None:
        self.minutes = minutes
        self.default = self._allowance(rate_per_minute or None)
        self.pacing = pacing or {}
        self.waiting = waiting
        self.counts: Counter[str] = Counter()

    def _allowance(self, per_minute: int | None) -> int | None:
        return None if not per_minute else max(1, math.floor(per_minute * self.minutes))

    def allow(self, address: str) -> bool:
        """Count `address` against its domain; False once the domain's allowance is used
        or while the domain is in backoff."""
        domain = domain_of(address)
        if domain in self.waiting:
            return False
        pace = self.pacing.get(domain)
        allowance = self.default if pace is None else self._allowance(pace.per_minute)
        if allowance is None:
            return True
        if self.counts[domain] >= allowance:
            return False
        self.counts[domain] += 1
        return True
