"""A DKIM test key and its DNS record, and a queue helper, for the deliverability tests."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.orm import Session

from automail.models import Mail, Shop

SELECTOR = "am2026"


@dataclass(frozen=True)
class DkimTestKey:
    pem: str
    txt: bytes  # the DNS TXT record a receiver would find

    def conn_json(self, domain: str, selector: str = SELECTOR) -> str:
        """The AIRFLOW_CONN_<ID> value: login = selector, host = d=, password = PEM."""
        conn = {"conn_type": "generic", "login": selector, "host": domain, "password": self.pem}
        return json.dumps(conn)

    def dnsfunc(self, domain: str, selector: str = SELECTOR):  # noqa: ANN201
        expected = f"{selector}._domainkey.{domain}.".encode()

        def lookup(name: bytes, timeout: int = 5) -> bytes | None:
            return self.txt if name == expected else None

        return lookup


@cache
def dkim_key(bits: int = 2048) -> DkimTestKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DkimTestKey(pem.decode(), b"v=DKIM1; k=rsa; p=" + base64.b64encode(der))


def queue(session: Session, shop: Shop, texts: list[tuple[str, str]], tag: str = "d") -> list[int]:
    """One unsent mail per (subject, body) from the shop's sender settings."""
    mails = [
        Mail(
            shop_id=shop.id,
            kind="order_confirmation",
            source_key=f"{tag}:{i}",
            to_address=f"{tag}{i}@example.jp",
            from_address=shop.from_address,
            from_name=shop.from_name,
            reply_to=shop.reply_to,
            bcc=shop.bcc,
            subject=subject,
            body_text=body,
        )
        for i, (subject, body) in enumerate(texts)
    ]
    session.add_all(mails)
    session.flush()
    return [m.id for m in mails]
