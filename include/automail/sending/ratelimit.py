"""Per-recipient-domain limit (setting `domain_rate_per_minute`, 0 = off).

A send run happens every `RUN_INTERVAL_MINUTES`, so one run may take at most
rate × interval mails for one domain; the rest stay unsent (not held, not error)
and are claimed by the next run. This keeps one provider (e.g. docomo.ne.jp) from
receiving a whole 30,000-mail burst at once.
"""

from __future__ import annotations

from collections import Counter

from automail.addresses import domain_of

RUN_INTERVAL_MINUTES = 5  # the automail_send DAG's schedule


class DomainLimiter:
    def __init__(self, rate_per_minute: int, minutes: int = RUN_INTERVAL_MINUTES) -> None:
        self.allowance = rate_per_minute * minutes if rate_per_minute > 0 else 0
        self.counts: Counter[str] = Counter()

    @property
    def enabled(self) -> bool:
        return self.allowance > 0

    def allow(self, address: str) -> bool:
        """Count `address` against its domain; False once the domain's allowance is used."""
        if not self.enabled:
            return True
        domain = domain_of(address)
        if self.counts[domain] >= self.allowance:
            return False
        self.counts[domain] += 1
        return True
