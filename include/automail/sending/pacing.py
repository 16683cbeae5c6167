"""Per-domain pacing (H2): Japanese mobile carriers by default, any domain by setting.

Carriers throttle bulk senders: docomo accepts at most 100 recipients per SMTP session,
and every carrier answers a burst with 421/4xx. So, per recipient domain:
- `per_session`: recipients on one SMTP connection; the lane reconnects before more;
- `per_minute`: mails per minute of the send schedule; one run claims at most
  per_minute x the run interval for the domain, the rest wait for the next run;
- backoff: a 4xx reply about a recipient of a paced domain makes that domain wait
  `domain_backoff_seconds` (doubling while it keeps refusing, up to an hour): the rest
  of its mails are given back unattempted (no retry used up) and the claim skips the
  domain until then. The wait is stored (`domain_backoffs`), so every worker sees it.

Defaults below (docomo's 100 per session is its published rule; the per-minute figure
is a conservative choice of ours, the carriers publish none); the setting
`domain_pacing` ({"domain": {"per_session": N, "per_minute": M}}) overrides or adds
domains, a null value switching that limit off. Other domains keep the plain per-mail
retry schedule (a greylisting 451 is about one mail, not a whole provider).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from automail import settings
from automail.models import DomainBackoff

CARRIER_DOMAINS = (
    "docomo.ne.jp",
    "ezweb.ne.jp",
    "au.com",
    "biz.ezweb.ne.jp",
    "softbank.ne.jp",
    "i.softbank.jp",
    "disney.ne.jp",
    "ymobile.ne.jp",
    "uqmobile.jp",
    "rakumail.jp",
)
CARRIER_PER_SESSION = 100
CARRIER_PER_MINUTE = 300
MAX_BACKOFF = timedelta(hours=1)


@dataclass(frozen=True)
class DomainPace:
    per_session: int | None = None
    per_minute: int | None = None


def pacing_table(session: Session) -> dict[str, DomainPace]:
    table = {d: DomainPace(CARRIER_PER_SESSION, CARRIER_PER_MINUTE) for d in CARRIER_DOMAINS}
    for domain, limits in settings.get(session, "domain_pacing").items():
        table[domain.lower()] = DomainPace(limits.get("per_session"), limits.get("per_minute"))
    return table


def active_backoffs(session: Session, now: datetime) -> dict[str, datetime]:
    rows = session.execute(
        select(DomainBackoff.domain, DomainBackoff.until).where(DomainBackoff.until > now)
    )
    return {domain: until for domain, until in rows}


def record_backoff(
    session: Session, domain: str, now: datetime, base: int, reason: str
) -> datetime:
    """Make `domain` wait; a domain already waiting waits twice as long (up to MAX)."""
    row = session.get(DomainBackoff, domain)
    wait = timedelta(seconds=base)
    if row is not None and row.until > now - wait:  # refused again soon after: double
        wait = min(MAX_BACKOFF, max(wait, 2 * (row.until - row.since)))
    until = now + wait
    if row is None:
        session.add(DomainBackoff(domain=domain, since=now, until=until, reason=reason[:1000]))
    else:
        row.since, row.until, row.reason = now, until, reason[:1000]
    session.flush()
    return until
