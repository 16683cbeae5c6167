"""Signed unsubscribe links (C10, RFC 8058 one-click).

A token is `v1.<shop_id>.<customer_id>.<hmac>`; the HMAC-SHA256 (automail.signing:
key from env `AUTOMAIL_SECRET_KEY` or the Airflow Variable `automail_secret_key`) covers
the version, shop and customer, so a token cannot be guessed or edited to reach another
customer. There is no built-in fallback key: without one, newsletters are refused.
"""

from __future__ import annotations

import hmac
import re
from datetime import UTC, datetime
from urllib.parse import quote

from sqlalchemy.orm import Session

from automail import settings
from automail.models import Customer
from automail.signing import ENV_KEY as ENV_KEY  # re-exported: the key's names live there
from automail.signing import VARIABLE_KEY as VARIABLE_KEY
from automail.signing import MissingSecretKey as MissingSecretKey
from automail.signing import secret_key, sign

URL_PATH = "/automail-public/unsubscribe"
VERSION = "v1"
TOKEN_SHAPE = re.compile(
    rf"{VERSION}\.[0-9]{{1,18}}\.[0-9]{{1,18}}\.[A-Za-z0-9_-]{{1,64}}", re.ASCII
)


class BadToken(ValueError):
    """A malformed (400) or forged/tampered (403) unsubscribe token."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


def make_token(shop_id: int, customer_id: int, key: bytes | None = None) -> str:
    payload = f"{VERSION}.{int(shop_id)}.{int(customer_id)}"
    return f"{payload}.{sign(payload, key or secret_key())}"


def verify_token(token: str, key: bytes | None = None) -> tuple[int, int]:
    """(shop_id, customer_id) of a genuine token; BadToken otherwise."""
    token = token or ""
    if not TOKEN_SHAPE.fullmatch(token):  # ASCII only: compare_digest refuses other text
        raise BadToken(f"token: {token[:80]!r} is not an unsubscribe token", 400)
    parts = token.split(".")
    expected = sign(".".join(parts[:3]), key or secret_key())
    if not hmac.compare_digest(expected, parts[3]):
        raise BadToken("token: signature does not match (forged or altered link)", 403)
    return int(parts[1]), int(parts[2])


def unsubscribe_url(
    session: Session, shop_id: int, customer_id: int, key: bytes | None = None
) -> str:
    base = str(settings.get(session, "public_base_url")).rstrip("/")
    return f"{base}{URL_PATH}?t={quote(make_token(shop_id, customer_id, key))}"


def list_unsubscribe_headers(url: str, mailto: str | None) -> dict[str, str]:
    """RFC 2369 + RFC 8058 headers: the https link first, a mailto fallback second."""
    value = f"<{url}>"
    if mailto:
        value += f", <mailto:{mailto}?subject=unsubscribe>"
    return {"List-Unsubscribe": value, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def apply_unsubscribe(session: Session, token: str, now: datetime | None = None) -> Customer:
    """Turn marketing permission off for the token's customer (idempotent)."""
    shop_id, customer_id = verify_token(token)
    customer = session.get(Customer, customer_id)
    if customer is None or customer.shop_id != shop_id:
        raise BadToken("token: no such customer for this shop", 404)
    customer.marketing_opt_in = False
    if customer.unsubscribed_at is None:
        customer.unsubscribed_at = now or datetime.now(UTC)
    session.flush()
    return customer
