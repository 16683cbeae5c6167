"""DKIM signing per shop domain (seed 002, RFC 6376), with dkimpy.

A shop names an Airflow connection (`shops.dkim_conn_id`, `automail shops set-dkim`):
login = selector (s=), host = signing domain (d=), password = the RSA private key in
PEM. The key lives in Airflow (env variable, secrets backend or metadata DB), never in
the store; it is read like the relays' connections (smtp.airflow_connection). A
connection that is missing or holds no usable key is a DkimKeyError naming the
connection: that shop's mails end in error, never go out unsigned.

Speed: dkimpy canonicalises, hashes and writes the DKIM-Signature header; its RSA step
is pure Python (14.4 ms CPU per 2048-bit signature, bench/dkim_sign.py). The signature
is made by OpenSSL instead (`cryptography`): 1.25 ms CPU per mail in all, against
0.09 ms for building the message. dkimpy's `gen_header` signs an ed25519
key as `pk.sign(digest).signature`, so `_OpenSslDkim` runs that branch with an RSA
signer object (PKCS#1 v1.5 over the SHA-256 digest dkimpy computed). Same bytes as
dkimpy's own RSA (PKCS#1 v1.5 is deterministic; tests/test_deliverability.py compares them);
dkimpy is pinned (==1.1.8) because this relies on that branch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from automail.sending.smtp import airflow_connection

# Signed when present; a listed header that is absent is signed as empty, so adding
# one later (e.g. a second From, a Cc) breaks the signature.
SIGNED_HEADERS = (
    "From", "To", "Subject", "Date", "Message-ID", "Reply-To", "Cc", "MIME-Version",
    "Content-Type", "List-Unsubscribe", "List-Unsubscribe-Post",
)  # fmt: skip
MIN_BITS = 1024  # what verifiers (dkimpy's verify among them) accept


class DkimKeyError(ValueError):
    """A DKIM connection that cannot sign; the message names the connection."""


@dataclass(frozen=True)
class _RsaSignature:
    signature: bytes


@dataclass(frozen=True)
class _OpenSslRsa:
    """What dkimpy's gen_header calls for the signature: `.sign(digest).signature`."""

    key: rsa.RSAPrivateKey

    def sign(self, digest: bytes) -> _RsaSignature:
        pre = utils.Prehashed(hashes.SHA256())
        return _RsaSignature(self.key.sign(digest, padding.PKCS1v15(), pre))


class _OpenSslDkim(dkim.DKIM):
    def __init__(self, message: bytes, signer: _OpenSslRsa) -> None:
        super().__init__(message, signature_algorithm=b"rsa-sha256")
        self.openssl = signer

    def gen_header(  # dkimpy's own (untyped) signature
        self, fields, include_headers, canon_policy, header_name, pk, standardize=False
    ):  # fmt: skip
        # The header's a= tag is already rsa-sha256 (in `fields`); only the branch that
        # makes the signature changes, for this call.
        self.signature_algorithm = b"ed25519-sha256"
        try:
            return super().gen_header(
                fields, include_headers, canon_policy, header_name, self.openssl, standardize
            )
        finally:
            self.signature_algorithm = b"rsa-sha256"


@dataclass(frozen=True)
class DkimSigner:
    conn_id: str
    selector: bytes
    domain: bytes
    key: rsa.RSAPrivateKey = field(repr=False)
    pem: bytes = field(repr=False)  # PKCS#1, as dkimpy's parser wants it

    @classmethod
    def from_connection(cls, conn: Any) -> DkimSigner:
        conn_id = conn.conn_id
        where = f"DKIM connection {conn_id!r}"
        selector, domain, secret = conn.login or "", conn.host or "", conn.password or ""
        if (
            not selector
            or not selector.replace("-", "").replace("_", "").replace(".", "").isalnum()
        ):
            raise DkimKeyError(f"{where}: login (the selector) {selector!r} is missing or invalid")
        if not domain or not domain.isascii() or " " in domain or "." not in domain:
            raise DkimKeyError(f"{where}: host (the signing domain d=) {domain!r} is invalid")
        if not secret.strip():
            raise DkimKeyError(f"{where}: password (the PEM private key) is empty")
        try:
            key = serialization.load_pem_private_key(secret.strip().encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise DkimKeyError(f"{where}: password is not a PEM private key ({exc})") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise DkimKeyError(f"{where}: the key is not an RSA key ({type(key).__name__})")
        if key.key_size < MIN_BITS:
            raise DkimKeyError(f"{where}: the key has {key.key_size} bits; at least {MIN_BITS}")
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        return cls(conn_id, selector.encode(), domain.lower().encode(), key, pem)

    @classmethod
    def resolve(cls, conn_id: str) -> DkimSigner:
        """The connection from the env variable or Airflow; DkimKeyError naming it."""
        try:
            conn = airflow_connection(conn_id, "DKIM")
        except (LookupError, ValueError) as exc:
            raise DkimKeyError(f"DKIM connection {conn_id!r}: {exc}") from None
        return cls.from_connection(conn)

    def sign(self, message: bytes) -> bytes:
        """`message` with its DKIM-Signature header in front (relaxed/simple)."""
        signer = _OpenSslDkim(message, _OpenSslRsa(self.key))
        try:
            header = signer.sign(
                self.selector, self.domain, self.pem,
                include_headers=[h.encode() for h in SIGNED_HEADERS],
            )  # fmt: skip
        except dkim.DKIMException as exc:
            raise DkimKeyError(f"DKIM connection {self.conn_id!r}: cannot sign: {exc}") from None
        return header + message
