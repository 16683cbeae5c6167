"""Customer address changes and address health by hand (SPEC E3, seed 002).

Seed 002: updating a lead's e-mail address turns its validity flag from invalid back to
valid, whatever screen or API did it. `change_email` is that one path: a new address
starts clean (valid, not cleaned, no reason, no failures). `reset_address` clears the
flags of an unchanged address (an operator who knows the mailbox works again).
Both leave a StaffAction row: who, when, which customers, old and new values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from automail.addresses import check_address
from automail.models import Customer, Shop, StaffAction

HEALTHY = {
    "address_valid": True,
    "address_cleaned": False,
    "address_reason": None,
    "consecutive_failures": 0,
}


@dataclass(frozen=True)
class AddressHealth:
    customer_id: int
    shop_id: int
    name: str
    email: str
    valid: bool
    cleaned: bool
    reason: str | None
    consecutive_failures: int

    @classmethod
    def of(cls, c: Customer) -> AddressHealth:
        return cls(
            c.id,
            c.shop_id,
            c.name,
            c.email,
            bool(c.address_valid),
            bool(c.address_cleaned),
            c.address_reason,
            c.consecutive_failures or 0,
        )


def _customer(session: Session, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise LookupError(f"customer_id {customer_id!r}: no such customer")
    return customer


def change_email(
    session: Session,
    customer_id: int,
    new_email: str,
    actor: str,
    now: datetime | None = None,
) -> Customer:
    """Give the customer a new address; a changed address is valid again (no commit).

    Raises ValueError naming the field and value for an empty address, or one the shop's
    address check (B9) refuses; LookupError for an unknown customer.
    """
    if not isinstance(new_email, str) or not new_email.strip():
        raise ValueError(f"email: an address is required (got {new_email!r})")
    new_email = new_email.strip()
    customer = _customer(session, customer_id)
    shop = session.get(Shop, customer.shop_id)
    if shop is None or shop.address_check:
        reason = check_address(new_email)
        if reason:
            raise ValueError(f"email: {reason}")
    old = customer.email
    if new_email == old:
        return customer  # nothing edited: the flags stay (use reset_address to clear them)
    before = AddressHealth.of(customer)
    customer.email = new_email
    for key, value in HEALTHY.items():
        setattr(customer, key, value)
    _audit(session, actor, "change_email", [before], now, {"old": old, "new": new_email})
    session.flush()
    return customer


def customers_with_address(session: Session, address: str) -> list[Customer]:
    """Every customer (any shop) with this address, case-insensitively."""
    addr = address.strip().lower()
    if not addr:
        raise ValueError(f"address: an address is required (got {address!r})")
    return list(
        session.scalars(
            select(Customer)
            .where(func.lower(Customer.email) == addr)
            .order_by(Customer.shop_id, Customer.id)
        )
    )


def address_health(session: Session, address: str) -> list[AddressHealth]:
    return [AddressHealth.of(c) for c in customers_with_address(session, address)]


def reset_address(
    session: Session, address: str, actor: str, now: datetime | None = None
) -> list[AddressHealth]:
    """Mark the address valid and not cleaned again for every customer holding it.

    Returns the customers' health *before* the reset; raises LookupError when no customer
    has the address. No commit.
    """
    customers = customers_with_address(session, address)
    if not customers:
        raise LookupError(f"address {address!r}: no customer has this address")
    before = [AddressHealth.of(c) for c in customers]
    for customer in customers:
        for key, value in HEALTHY.items():
            setattr(customer, key, value)
    _audit(session, actor, "address_reset", before, now, {"address": address.strip()})
    session.flush()
    return before


def _audit(
    session: Session,
    actor: str,
    action: str,
    before: list[AddressHealth],
    now: datetime | None,
    extra: dict,
) -> None:
    detail = {
        **extra,
        "customers": [
            {
                "customer_id": h.customer_id,
                "valid": h.valid,
                "cleaned": h.cleaned,
                "reason": h.reason,
                "consecutive_failures": h.consecutive_failures,
            }
            for h in before
        ],
    }
    session.add(
        StaffAction(
            at=now or datetime.now(UTC),
            actor=actor,
            action=action,
            count=len(before),
            detail=detail,
        )
    )
