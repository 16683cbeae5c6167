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
    return None if obj is None else getattr(obj, name, None)


def _lines(src: Sources) -> Sequence[Any]:
    if src.lines is not None:
        return src.lines
    lines = _col(src.order, "lines")  # ORM Order only; a Row has no relationship
    return lines if isinstance(lines, Sequence) else ()


def items(src: Sources) -> list[Item]:
    out = []
    for line in _lines(src):
        qty = line.quantity or 0
        price = line.unit_price or 0
        out.append(Item(line.name, line.sku, qty, f"{price:,}円", f"{price * qty:,}円"))
    return out


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
    "sign_pc": lambda s: _col(s.shop, "signature_pc"),
    "sign_mobile": lambda s: _col(s.shop, "signature_mobile"),
    "signature": _signature,
    "shop_email": lambda s: _col(s.shop, "reply_to"),
    "coupon_url": lambda s: _col(s.shop, "coupon_url"),
    "order_number": lambda s: _col(s.order, "order_number"),
    "ordered_at": lambda s: jst_date(_col(s.order, "ordered_at")),
    "items": items,
    "items_text": items_text,
    "subtotal": lambda s: yen(_col(s.order, "subtotal")),
    "shipping_fee": lambda s: yen(_col(s.order, "shipping_fee")),
    "tax": lambda s: yen(_col(s.order, "tax")),
    "total": lambda s: yen(_col(s.order, "total")),
    "payment_method": lambda s: _col(s.order, "payment_method"),
    "ship_to_name": lambda s: _col(s.order, "ship_to_name"),
    "ship_to_address": lambda s: _col(s.order, "ship_to_address"),
    "carrier_name": _carrier_name,
    "tracking_number": lambda s: _col(s.shipment, "tracking_number"),
    "shipped_at": lambda s: jst_date(_col(s.shipment, "confirmed_at")),
    "customer_name": lambda s: _col(s.customer, "name"),
    "customer_email": lambda s: _col(s.customer, "email"),
    "customer_prefecture": lambda s: _col(s.customer, "prefecture"),
    # Only the caller knows these (newsletter links, notice texts): given via `extra`.
    "unsubscribe_url": _none,
    "notice_subject": _none,
    "notice_body": _none,
}


def build_context(fields: Sequence[str], src: Sources, preview: bool) -> dict[str, Any]:
    """Values of `fields`; for the sent mail an empty value is '' (A6), for preview None."""
    ctx: dict[str, Any] = {}
    extra = src.extra
    for name in fields:
        if extra is not None and name in extra:
            value = extra[name]
        else:
            value = GETTERS.get(name, _none)(src)
        ctx[name] = "" if value is None and not preview else value
    return ctx
