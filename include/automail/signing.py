"""The one signing key and HMAC of Automail (unsubscribe links, bounce return paths).

The key comes from env `AUTOMAIL_SECRET_KEY` or the Airflow Variable
`automail_secret_key`. There is no built-in fallback key: without one, nothing that
must be signed is produced (newsletters are refused, sending stops).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
from typing import Any

ENV_KEY = "AUTOMAIL_SECRET_KEY"
VARIABLE_KEY = "automail_secret_key"
# Keys that were ever printed in this repository (scripts/env.sh shipped the first one).
PUBLISHED_KEYS = frozenset({"demo-only-secret-change-me"})


class MissingSecretKey(RuntimeError):
    def __init__(self, problem: str | None = None) -> None:
        super().__init__(
            problem
            or f"no signing key: set env {ENV_KEY} or the Airflow Variable {VARIABLE_KEY!r} "
            "(unsubscribe links and bounce return paths are signed with it; nothing that "
            "needs one is sent without it)"
        )


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
    if key.strip() in PUBLISHED_KEYS:
        raise MissingSecretKey(
            f"{ENV_KEY} is a published demo value: anyone could sign unsubscribe links and "
            "bounce return paths with it; `source scripts/env.sh` makes a random key per "
            "checkout in var/secret_key, or set your own long random key"
        )
    return key.encode()


@functools.lru_cache(maxsize=64)
def _keyed(key: bytes) -> hmac.HMAC:
    # Keyed once and copied per payload: half the cost of a fresh HMAC, which matters
    # at a signature per tracked mail and two per sent mail (bounce links).
    return hmac.new(key, digestmod=_sha256)


def _sha256(data: bytes = b"") -> Any:
    """hashlib's sha256 as a constructor, so `hmac` copies hashlib state (cheap) rather
    than an OpenSSL HMAC context."""
    return hashlib.sha256(data)


def mac(key: bytes, payload: str) -> bytes:
    """HMAC-SHA256 of `payload`: every token Automail signs goes through here."""
    signer = _keyed(key).copy()
    signer.update(payload.encode())
    return signer.digest()


def sign(payload: str, key: bytes) -> str:
    """HMAC-SHA256 of payload, URL-safe base64: the signer of public links (unsubscribe,
    open and click tokens)."""
    return base64.urlsafe_b64encode(mac(key, payload)).rstrip(b"=").decode()


def derived_key(key: bytes, purpose: str) -> bytes:
    """A sub-key for one purpose (e.g. one shop's bounce links), so tokens of one kind
    can never be replayed as another."""
    return mac(key, f"automail-key.{purpose}")
