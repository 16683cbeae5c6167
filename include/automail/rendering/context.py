"""The values behind each field, read from shop/customer/order/shipment rows.

Rows may be ORM instances or SQLAlchemy Row objects from a select of the columns:
only attributes named like the model columns are read, never relationships (except
`order.lines` when no lines are given and the order is an ORM Order). Each compiled
template knows which fields it uses, and only those are computed per mail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from automail.rendering.formatting import jst_date, yen
from automail.rendering.tags import CARRIER_NAMES


class Item(NamedTuple):
    """One order line as templates see it (`{{ item.name }}` ...)."""

    name: str
    sku: str
    quantity: int
    unit_price: str  # '1,080円'
    line_total: str  # '2,160円'


class Sources:
    """The rows one mail is rendered from."""

    __slots__ = ("customer", "device", "extra", "lines", "order", "shipment", "shop")

    def __init__(
        self,
        shop: Any,
        customer: Any,
        order: Any = None,
        lines: Sequence[Any] | None = None,
        shipment: Any = None,
        extra: Mapping[str, object] | None = None,
        device: str = "pc",
    ) -> None:
        self.shop = shop
        self.customer = customer
        self.order = order
        self.lines = lines
        self.shipment = shipment
        self.extra = extra
        self.device = device


def _col(obj: Any, name: str) -> Any:
    return getattr(obj, name, None)  # None (no row) has no such attribute either


def _lines(src: Sources) -> Sequence[Any]:
    if src.lines is not None:
        return src.lines
    lines = _col(src.order, "lines")  # ORM Order only; a Row has no relationship
    return lines if isinstance(lines, Sequence) else ()


# Catalogues repeat: one formatted Item per distinct (name, sku, quantity, price).
_ITEM_CACHE: dict[tuple[Any, Any, Any, Any], Item] = {}
_ITEM_CACHE_MAX = 50_000


def _item(name: Any, sku: Any, qty: Any, price: Any) -> Item:
    key = (name, sku, qty, price)
    hit = _ITEM_CACHE.get(key)
    if hit is None:
        q, p = qty or 0, price or 0
        hit = Item(name, sku, q, f"{p:,}円", f"{p * q:,}円")
        if len(_ITEM_CACHE) >= _ITEM_CACHE_MAX:
            _ITEM_CACHE.clear()
        _ITEM_CACHE[key] = hit
    return hit


def items(src: Sources) -> list[Item]:
    return [_item(ln.name, ln.sku, ln.quantity, ln.unit_price) for ln in _lines(src)]


def items_text(src: Sources) -> str | None:
    rows = items(src)
    if not rows:
        return None
    return "\n".join(
        f"{i.name} ({i.sku})\n  {i.unit_price} × {i.quantity} = {i.line_total}" for i in rows
    )


def _shop_name(src: Sources) -> Any:
    # Seed 003: [TENPO_NAME] is the From name; the shop's own name when none is set.
    return _col(src.shop, "from_name") or _col(src.shop, "name")


def _carrier_name(src: Sources) -> Any:
    code = _col(src.shipment, "carrier")
    return CARRIER_NAMES.get(code, code) if code else None


def _signature(src: Sources) -> Any:
    return _col(src.shop, "signature_mobile" if src.device == "mobile" else "signature_pc")


def _none(_src: Sources) -> None:
    return None


GETTERS: dict[str, Callable[[Sources], Any]] = {
    "shop_name": _shop_name,
    "sign_pc": lambda s: getattr(s.shop, "signature_pc", None),
    "sign_mobile": lambda s: getattr(s.shop, "signature_mobile", None),
    "signature": _signature,
    "shop_email": lambda s: getattr(s.shop, "contact_address", None),
    "coupon_url": lambda s: getattr(s.shop, "coupon_url", None),
    "order_number": lambda s: getattr(s.order, "order_number", None),
    "ordered_at": lambda s: jst_date(getattr(s.order, "ordered_at", None)),
    "items": items,
    "items_text": items_text,
    "subtotal": lambda s: yen(getattr(s.order, "subtotal", None)),
    "shipping_fee": lambda s: yen(getattr(s.order, "shipping_fee", None)),
    "tax": lambda s: yen(getattr(s.order, "tax", None)),
    "total": lambda s: yen(getattr(s.order, "total", None)),
    "payment_method": lambda s: getattr(s.order, "payment_method", None),
    "ship_to_name": lambda s: getattr(s.order, "ship_to_name", None),
    "ship_to_address": lambda s: getattr(s.order, "ship_to_address", None),
    "carrier_name": _carrier_name,
    "tracking_number": lambda s: getattr(s.shipment, "tracking_number", None),
    "shipped_at": lambda s: jst_date(getattr(s.shipment, "confirmed_at", None)),
    "customer_name": lambda s: getattr(s.customer, "name", None),
    "customer_email": lambda s: getattr(s.customer, "email", None),
    "customer_prefecture": lambda s: getattr(s.customer, "prefecture", None),
    # Only the caller knows these (newsletter links, notice texts): given via `extra`.
    "unsubscribe_url": _none,
    "notice_subject": _none,
    "notice_body": _none,
}


def build_context(fields: Sequence[str], src: Sources, preview: bool) -> dict[str, Any]:
    """Values of `fields`; for the sent mail an empty value is '' (A6), for preview None."""
    getters = GETTERS
    ctx = {name: getters.get(name, _none)(src) for name in fields}
    if src.extra:
        ctx.update((k, v) for k, v in src.extra.items() if k in ctx)
    if not preview:
        for name, value in ctx.items():
            if value is None:
                ctx[name] = ""
    return ctx
