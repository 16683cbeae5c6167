"""A shop's deliverability settings (seed 002): DKIM key, charset, Reply-To / Cc / BCC.

Each setter checks its value when it is made and raises DeliverabilitySettingError
naming the shop, the field and the value; nothing is changed then.
- DKIM: the name of an Airflow connection holding selector, domain and key
  (sending/dkim_sign.py); the key itself never enters the store. The connection is read
  once here so a typo or a bad PEM is found now, not at the next send.
- Charset: UTF-8 or ISO-2022-JP (automail.charset). Switching a shop to ISO-2022-JP is
  refused while its templates (its own and the common defaults), signatures or sender
  name hold characters outside JIS X 0208; the error lists them per template.
- Reply-To, Cc, BCC: comma lists of at most 1,000 characters, every address checked
  (addresses.validate_address_list) and no marketplace mask address (relays.py).
"""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from automail.addresses import split_address_list, validate_address_list
from automail.charset import UTF8, check_charset, describe, unencodable
from automail.models import Shop, Template
from automail.relays import CONN_ID_PATTERN, mask_addresses
from automail.sending.dkim_sign import DkimKeyError, DkimSigner


class DeliverabilitySettingError(ValueError):
    """A refused setting; the message names the shop, the field and the value."""


def _shop(session: Session, code: str) -> Shop:
    shop = session.scalar(select(Shop).where(Shop.code == code))
    if shop is None:
        raise DeliverabilitySettingError(f"shop {code!r}: no such shop")
    return shop


def set_shop_dkim(session: Session, code: str, conn_id: str | None, check: bool = True) -> Shop:
    """Sign the shop's mail with the key of Airflow connection `conn_id` (None: unsigned)."""
    shop = _shop(session, code)
    if conn_id is not None:
        if not CONN_ID_PATTERN.match(conn_id):
            raise DeliverabilitySettingError(
                f"shop {code}: dkim connection {conn_id!r} is not an Airflow connection id "
                "(letters, digits, _ . -; at most 250)"
            )
        if check:
            try:
                DkimSigner.resolve(conn_id)
            except DkimKeyError as exc:
                raise DeliverabilitySettingError(f"shop {code}: {exc}") from None
    shop.dkim_conn_id = conn_id
    session.flush()
    return shop


def charset_problems(session: Session, shop: Shop, charset: str) -> list[str]:
    """What of the shop's text `charset` cannot carry: one line per template/field."""
    if charset == UTF8:
        return []
    problems = []
    for field in ("from_name", "signature_pc", "signature_mobile"):
        if chars := unencodable(getattr(shop, field), charset):
            problems.append(f"shop {shop.code} {field}: {describe(chars)}")
    templates = session.scalars(
        select(Template)
        .where(or_(Template.shop_id == shop.id, Template.shop_id.is_(None)))
        .order_by(Template.id)
    )
    for t in templates:
        for field in ("subject", "body_text", "body_html"):
            if chars := unencodable(getattr(t, field), charset):
                problems.append(f"template {t.id} ({t.name}) {field}: {describe(chars)}")
    return problems


def set_shop_charset(session: Session, code: str, charset: str) -> Shop:
    shop = _shop(session, code)
    try:
        charset = check_charset(charset)
    except ValueError as exc:
        raise DeliverabilitySettingError(f"shop {code}: {exc}") from None
    if problems := charset_problems(session, shop, charset):
        raise DeliverabilitySettingError(
            f"shop {code}: charset {charset} cannot carry these characters (use UTF-8, or "
            "edit them):\n  " + "\n  ".join(problems)
        )
    shop.charset = charset
    session.flush()
    return shop


def set_shop_lists(
    session: Session,
    code: str,
    *,
    reply_to: str | None = None,
    cc: str | None = None,
    bcc: str | None = None,
) -> Shop:
    """Set the given lists ("" clears Cc/BCC; Reply-To needs at least one address)."""
    shop = _shop(session, code)
    changes = {
        k: v.strip() for k, v in (("reply_to", reply_to), ("cc", cc), ("bcc", bcc)) if v is not None
    }
    for field, value in changes.items():
        try:
            validate_address_list(field, value)
        except ValueError as exc:
            raise DeliverabilitySettingError(f"shop {code}: {exc}") from None
    if "reply_to" in changes and not split_address_list(changes["reply_to"]):
        raise DeliverabilitySettingError(f"shop {code}: reply_to: an address is required")
    before = {field: getattr(shop, field) for field in changes}
    for field, value in changes.items():
        setattr(shop, field, value or None)
    if problems := mask_addresses(shop):
        for field, value in before.items():
            setattr(shop, field, value)
        raise DeliverabilitySettingError("; ".join(problems))
    session.flush()
    return shop
