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

from typing import Any

from sqlalchemy import Update, bindparam, case, update
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


def _failure_update(count):  # noqa: ANN001, ANN202 (SQL expression in, UPDATE out)
    """The count becomes `count`; at the threshold the address turns invalid (its reason
    set once); a hard result cleans it. One builder for a send result and a bounce."""
    reached = bindparam("h_threshold") <= count
    return (
        update(Customer)
        .where(_SAME)
        .values(
            consecutive_failures=count,
            address_cleaned=Customer.address_cleaned | bindparam("h_hard"),
            address_valid=case((reached, False), else_=Customer.address_valid),
            address_reason=case(
                (reached & Customer.address_valid.is_(True), bindparam("h_invalid")),
                (bindparam("h_hard"), bindparam("h_reason")),
                else_=Customer.address_reason,
            ),
        )
    )


_FAILED = _failure_update(_COUNT)


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
# Bounce ingestion defers its writes to the end of a chunk of messages, so these build a
# (statement, parameters) pair instead of executing; `execute_in_order` runs them.

# A bounced mail's failure: the count becomes the larger of count + 1 and the bounced
# mails in a row (`at_least`), then the invalid rule. The sender resets the count when the
# server *accepts* a mail (B10), so with delayed bounces only, accept/bounce/accept/bounce
# would never reach the threshold; the run of bounced mails among the newest sent mails
# to the address is the real number of failures in a row.
_BOUNCED = _failure_update(
    case((bindparam("h_at_least") > _COUNT, bindparam("h_at_least")), else_=_COUNT)
)
# A hard bounce for a mail whose soft bounce was already counted: clean, count nothing.
_CLEANED = (
    update(Customer).where(_SAME).values(address_cleaned=True, address_reason=bindparam("h_reason"))
)

Write = tuple[Update, dict]


def bounce_failure(
    customer_id: int | None, email: str, outcome: str, at_least: int, reason: str, threshold: int
) -> Write | None:
    """A hard/soft bounce of a sent mail, `at_least` bounced mails in a row (no I/O)."""
    if outcome not in ("hard", "soft"):
        raise ValueError(f"outcome {outcome!r}: expected hard or soft")
    if customer_id is None:
        return None
    hard = outcome == "hard"
    return _BOUNCED, {
        "h_id": customer_id,
        "h_email": email,
        "h_at_least": at_least,
        "h_hard": hard,
        "h_reason": reason if hard else None,
        "h_threshold": threshold,
        "h_invalid": f"{threshold} consecutive failures; last: {reason}",
    }


def hard_after_soft(customer_id: int | None, email: str, reason: str) -> Write | None:
    """A hard bounce for a mail already counted as a soft bounce: clean it (no I/O)."""
    if customer_id is None:
        return None
    return _CLEANED, {"h_id": customer_id, "h_email": email, "h_reason": reason}


def execute_in_order(session: Session, writes: list[Write]) -> None:
    """Run `writes` in their order (their effects on one customer depend on it): one round
    trip on PostgreSQL (psycopg2's own client-side quoting, as automail.sending.batch),
    one statement after the other on SQLite (in-process: nothing to save)."""
    if not writes:
        return
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        for stmt, params in writes:
            conn.execute(stmt, params)
        return
    compiled: dict[int, Any] = {}
    parts = []
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None  # a live connection inside the transaction
    with dbapi.cursor() as cur:  # type: ignore[attr-defined]  # psycopg2 cursors are contexts
        for stmt, params in writes:
            c = compiled.get(id(stmt))
            if c is None:
                c = compiled[id(stmt)] = stmt.compile(dialect=conn.dialect)
            parts.append(cur.mogrify(c.string, c.construct_params(params)))
        cur.execute(b";".join(parts))
