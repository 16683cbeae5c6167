"""Which relay a shop sends through (H1, seed 003 設定1-2/1-3) and its sender rules.

A shop names an Airflow connection of type smtp (`shops.smtp_conn_id`, default
`automail_smtp`); its settings (host, TLS, AUTH ID and password, our extras) live in
that connection, never in the store. A shop on a marketplace relay follows the
marketplace's rules: Rakuten's relay converts the shop's *registered* addresses and
refuses the mask addresses `…@shop.rakuten.co.jp`, so From, Reply-To, BCC and the
signatures must never contain one (seed 003: "マスクアドレスを利用した場合、メール送信が
正しく行われません"). The check runs when the setting is made, naming the field.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from automail.models import DEFAULT_RELAY, Shop

# Airflow connection ids: letters, digits, _ . - (what `airflow connections add` accepts).
CONN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
MASK_DOMAINS = {"rakuten": ("shop.rakuten.co.jp",)}
MARKETPLACES = ("rakuten",)
_SENDER_FIELDS = ("from_address", "reply_to", "cc", "bcc", "signature_pc", "signature_mobile")


class RelaySettingError(ValueError):
    """A shop's relay setting is refused; the message names the field and the value."""


def mask_addresses(shop: Shop) -> list[str]:
    """Problems with the shop's sender fields under its marketplace's relay rules."""
    domains = MASK_DOMAINS.get(shop.marketplace or "", ())
    problems = []
    for name in _SENDER_FIELDS:
        value = getattr(shop, name) or ""
        for domain in domains:
            found = re.findall(rf"[^\s,<>\"']+@{re.escape(domain)}", value, re.IGNORECASE)
            problems += [
                f"shop {shop.code}: {name} {addr!r} is a {shop.marketplace} mask address; use "
                f"the address registered in the marketplace (RMS), not …@{domain}"
                for addr in found
            ]
    return problems


def set_shop_relay(
    session: Session, code: str, conn_id: str | None, marketplace: str | None
) -> Shop:
    """Set (or, with None, reset to the default) a shop's relay and marketplace."""
    shop = session.scalar(select(Shop).where(Shop.code == code))
    if shop is None:
        raise RelaySettingError(f"shop {code!r}: no such shop")
    if conn_id is not None and not CONN_ID_PATTERN.match(conn_id):
        raise RelaySettingError(
            f"shop {code}: relay {conn_id!r} is not an Airflow connection id "
            "(letters, digits, _ . -; at most 250)"
        )
    if marketplace is not None and marketplace not in MARKETPLACES:
        raise RelaySettingError(
            f"shop {code}: marketplace {marketplace!r} unknown (known: {', '.join(MARKETPLACES)})"
        )
    before = (shop.smtp_conn_id, shop.marketplace)
    shop.smtp_conn_id = None if conn_id in (None, DEFAULT_RELAY) else conn_id
    shop.marketplace = marketplace
    problems = mask_addresses(shop)
    if problems:
        shop.smtp_conn_id, shop.marketplace = before
        raise RelaySettingError("; ".join(problems))
    session.flush()
    return shop


def pool_name(conn_id: str) -> str:
    return f"automail_smtp_{conn_id}" if conn_id != DEFAULT_RELAY else DEFAULT_RELAY
