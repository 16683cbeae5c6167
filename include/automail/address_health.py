"""Address health after each finished mail (SPEC E1, E3).

Shared by the sender (immediate SMTP results) and bounce ingestion (later DSNs):
- success resets the customer's consecutive failure count;
- a hard failure (no such user/domain, bad syntax) marks the address cleaned, with
  the reason, so newsletters skip it;
- `invalid_after_failures` consecutive failures (hard or soft) mark it invalid.
A result only counts while the customer still has that address: editing the
address (which makes it valid again) must not inherit the old address's failures.
The updates run as Core statements on the session's connection: Customer objects
already loaded in that session are not refreshed (callers re-read after commit).
"""

from __future__ import annotations

from sqlalchemy import bindparam, case, update
from sqlalchemy.orm import Session

from automail import settings
from automail.models import Customer

OUTCOMES = ("success", "hard", "soft")

# Built once: these run for every finished mail and every bounce, and building a statement
# costs far more than executing a prebuilt one.
_SAME = (Customer.id == bindparam("h_id")) & (Customer.email == bindparam("h_email"))
_RESET = (
    update(Customer).where(_SAME, Customer.consecutive_failures != 0).values(consecutive_failures=0)
)
# One statement per result: the failure count and the invalid rule together. SET
# expressions read the row as it was, hence `consecutive_failures + 1` in the conditions.
_COUNT = Customer.consecutive_failures + 1
_REACHED = bindparam("h_threshold") <= _COUNT
_FAILED = (
    update(Customer)
    .where(_SAME)
    .values(
        consecutive_failures=_COUNT,
        address_cleaned=Customer.address_cleaned | bindparam("h_hard"),
        address_valid=case((_REACHED, False), else_=Customer.address_valid),
        address_reason=case(
            (_REACHED & Customer.address_valid.is_(True), bindparam("h_invalid")),
            (bindparam("h_hard"), bindparam("h_reason")),
            else_=Customer.address_reason,
        ),
    )
)
# Raise the count to at least N (never lower it), then the same invalid rule.
_RAISED = case(
    (Customer.consecutive_failures < bindparam("h_at_least"), bindparam("h_at_least")),
    else_=Customer.consecutive_failures,
)
_RAISED_REACHED = bindparam("h_threshold") <= _RAISED
_RAISE_COUNT = (
    update(Customer)
    .where(_SAME)
    .values(
        consecutive_failures=_RAISED,
        address_valid=case((_RAISED_REACHED, False), else_=Customer.address_valid),
        address_reason=case(
            (_RAISED_REACHED & Customer.address_valid.is_(True), bindparam("h_invalid")),
            else_=Customer.address_reason,
        ),
    )
)


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
    conn = session.connection()  # prebuilt Core statements: run once per finished mail
    params = {"h_id": customer_id, "h_email": email}
    if outcome == "success":
        conn.execute(_RESET, params)  # touches only rows that need it: most change nothing
        return
    if threshold is None:
        threshold = settings.get(session, "invalid_after_failures")
    hard = outcome == "hard"
    params |= {
        "h_hard": hard,
        "h_reason": (reason or "permanent failure") if hard else None,
        "h_threshold": threshold,
        "h_invalid": f"{threshold} consecutive failures; last: {reason or outcome}",
    }
    conn.execute(_FAILED, params)


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
    params = {
        "h_id": customer_id,
        "h_email": email,
        "h_at_least": at_least,
        "h_threshold": threshold,
        "h_invalid": f"{threshold} consecutive failures; last: {reason or 'bounce'}",
    }
    session.connection().execute(_RAISE_COUNT, params)
