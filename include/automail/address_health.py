"""Address health after each finished mail (SPEC E1, E3).

Shared by the sender (immediate SMTP results) and bounce ingestion (later DSNs):
- success resets the customer's consecutive failure count;
- a hard failure (no such user/domain, bad syntax) marks the address cleaned, with
  the reason, so newsletters skip it;
- `invalid_after_failures` consecutive failures (hard or soft) mark it invalid.
A result only counts while the customer still has that address: editing the
address (which makes it valid again) must not inherit the old address's failures.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from automail import settings
from automail.models import Customer

OUTCOMES = ("success", "hard", "soft")


def record_result(
    session: Session,
    customer_id: int | None,
    email: str,
    outcome: str,
    reason: str | None = None,
    threshold: int | None = None,
) -> None:
    """Apply one mail's final result to the customer's address flags (no commit)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome {outcome!r}: expected one of {', '.join(OUTCOMES)}")
    if customer_id is None:
        return
    same = (Customer.id == customer_id) & (Customer.email == email)
    if outcome == "success":
        # Only touch rows that need it: most successes change nothing.
        session.execute(
            update(Customer)
            .where(same, Customer.consecutive_failures != 0)
            .values(consecutive_failures=0)
        )
        return
    if threshold is None:
        threshold = settings.get(session, "invalid_after_failures")
    values: dict = {"consecutive_failures": Customer.consecutive_failures + 1}
    if outcome == "hard":
        values.update(address_cleaned=True, address_reason=reason or "permanent failure")
    session.execute(update(Customer).where(same).values(**values))
    session.execute(
        update(Customer)
        .where(same, Customer.consecutive_failures >= threshold, Customer.address_valid.is_(True))
        .values(
            address_valid=False,
            address_reason=f"{threshold} consecutive failures; last: {reason or outcome}",
        )
    )


# -- delayed bounces (automail.bounces.ingest) ------------------------------------------


def mark_cleaned(session: Session, customer_id: int | None, email: str, reason: str) -> None:
    """A hard bounce for a mail whose soft bounce was already counted: clean, count nothing."""
    if customer_id is None:
        return
    session.execute(
        update(Customer)
        .where(Customer.id == customer_id, Customer.email == email)
        .values(address_cleaned=True, address_reason=reason)
    )


def raise_failure_count(
    session: Session,
    customer_id: int | None,
    email: str,
    at_least: int,
    reason: str | None = None,
    threshold: int | None = None,
) -> None:
    """Make the failure count at least `at_least`, then apply the invalid rule (no commit).

    The sender resets the count when the server *accepts* a mail (B10), so with delayed
    bounces only, accept/bounce/accept/bounce would never reach the threshold. Bounce
    ingestion therefore passes the run of bounced mails among the newest sent mails to
    the address, which is the real number of failures in a row.
    """
    if customer_id is None or at_least <= 0:
        return
    if threshold is None:
        threshold = settings.get(session, "invalid_after_failures")
    same = (Customer.id == customer_id) & (Customer.email == email)
    session.execute(
        update(Customer)
        .where(same, Customer.consecutive_failures < at_least)
        .values(consecutive_failures=at_least)
    )
    session.execute(
        update(Customer)
        .where(same, Customer.consecutive_failures >= threshold, Customer.address_valid.is_(True))
        .values(
            address_valid=False,
            address_reason=f"{threshold} consecutive failures; last: {reason or 'bounce'}",
        )
    )
