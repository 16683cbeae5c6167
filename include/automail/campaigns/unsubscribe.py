"""Signed unsubscribe links (C10, RFC 8058 one-click).

A token is `v1.<shop_id>.<customer_id>.<hmac>`; the HMAC-SHA256 (key from env
`AUTOMAIL_SECRET_KEY` or the Airflow Variable `automail_secret_key`) covers the
version, shop and customer, so a token cannot be guessed or edited to reach another
customer. There is no built-in fallback key: without one, newsletters are refused.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
from datetime import UTC, datetime
from urllib.parse import quote

from sqlalchemy.orm import Session

from automail import settings
from automail.models import Customer

ENV_KEY = "AUTOMAIL_SECRET_KEY"
VARIABLE_KEY = "automail_secret_key"
URL_PATH = "/automail-public/unsubscribe"
VERSION = "v1"


class MissingSecretKey(RuntimeError):
    def __init__(self) -> None:
        super().__init__(
            f"no unsubscribe signing key: set env {ENV_KEY} or the Airflow Variable "
            f"{VARIABLE_KEY!r} (newsletters cannot carry a safe unsubscribe link without it)"
        )


class BadToken(ValueError):
    """A malformed (400) or forged/tampered (403) unsubscribe token."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


def secret_key() -> bytes:
    key = os.environ.get(ENV_KEY)
    if not key and ("AIRFLOW_HOME" in os.environ or "AIRFLOW__CORE__DAGS_FOLDER" in os.environ):
        try:
            from airflow.sdk import Variable

            key = Variable.get(VARIABLE_KEY, default=None)
        except Exception:  # no Airflow context / metadata DB: treated as "no key"
            key = None
    if not key or len(key) < 12:  # a real key is long and random; 12 catches typos
        raise MissingSecretKey()
    return key.encode()


@functools.lru_cache(maxsize=8)
def _keyed(key: bytes) -> hmac.HMAC:
    # The stdlib HMAC over hashlib objects, keyed once and copied per payload: half the
    # cost of a fresh OpenSSL HMAC, which matters at one signature per tracked mail.
    return hmac.new(key, digestmod=lambda data=b"": hashlib.sha256(data))


def sign(payload: str, key: bytes) -> str:
    """HMAC-SHA256 of payload, URL-safe base64: the one signer of public links."""
    mac = _keyed(key).copy()
    mac.update(payload.encode())
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


def make_token(shop_id: int, customer_id: int, key: bytes | None = None) -> str:
    payload = f"{VERSION}.{int(shop_id)}.{int(customer_id)}"
    return f"{payload}.{sign(payload, key or secret_key())}"


def verify_token(token: str, key: bytes | None = None) -> tuple[int, int]:
    """(shop_id, customer_id) of a genuine token; BadToken otherwise."""
    parts = (token or "").split(".")
    if len(parts) != 4 or parts[0] != VERSION or not parts[1].isdigit() or not parts[2].isdigit():
        raise BadToken(f"token: {token[:80]!r} is not an unsubscribe token", 400)
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
