"""Per-shop mail kind switches (A1) and delivery mode (B6).

Switching a kind on stamps `enabled_at`; the next creation run looks back from it
(A3). Switching off and on again starts a new lookback from the new time.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from automail.models import Shop, ShopMailKind
from automail.states import DELIVERY_MODES, TRANSACTIONAL_KINDS


def shop_by_code(session: Session, code: str) -> Shop:
    shop = session.scalar(select(Shop).where(Shop.code == code))
    if shop is None:
        known = ", ".join(session.scalars(select(Shop.code).order_by(Shop.code))) or "none"
        raise LookupError(f"shop: no shop with code {code!r} (known: {known})")
    return shop


def set_kind(
    session: Session,
    shop: Shop,
    kind: str,
    enabled: bool,
    mode: str | None = None,
    now: datetime | None = None,
) -> ShopMailKind:
    if kind not in TRANSACTIONAL_KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(TRANSACTIONAL_KINDS)}")
    if mode is not None and mode not in DELIVERY_MODES:
        raise ValueError(f"mode: {mode!r} is not one of {', '.join(DELIVERY_MODES)}")
    row = session.scalar(
        select(ShopMailKind).where(ShopMailKind.shop_id == shop.id, ShopMailKind.kind == kind)
    )
    if row is None:
        row = ShopMailKind(shop_id=shop.id, kind=kind, enabled=False, mode="auto")
        session.add(row)
    if enabled and not row.enabled:
        # A fresh switch-on: the next run covers the lookback window again.
        row.enabled_at = now or datetime.now(UTC)
        row.lookback_done_at = None
        row.covered_until = None
    row.enabled = enabled
    if mode is not None:
        row.mode = mode
    session.flush()
    return row


def enabled_kinds(session: Session) -> list[tuple[Shop, ShopMailKind]]:
    rows = session.execute(
        select(Shop, ShopMailKind)
        .join(ShopMailKind, ShopMailKind.shop_id == Shop.id)
        .where(ShopMailKind.enabled.is_(True))
        .order_by(Shop.id, ShopMailKind.kind)
    )
    return [(shop, smk) for shop, smk in rows]
