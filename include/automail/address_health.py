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
