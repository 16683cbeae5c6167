"""Signed open/click tokens: which mail, which link, and nothing else.

A token is `t1.<ref>.<link_id>.<hmac>`: ref names the mail by what its idempotency key
is made of — `c<campaign>-<customer>` or `s<step>-<customer>[-<start>]` — and link 0 is
the open pixel. The HMAC is the unsubscribe links' signer (automail.campaigns.unsubscribe
.sign, same key); the `t1.` prefix keeps the two kinds of token from standing in for
each other. Anything that does not verify is `BadToken`, answered 404 and never counted.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

from automail.campaigns.unsubscribe import secret_key, sign
from automail.states import CAMPAIGN, STEP

VERSION = "t1"
OPEN = 0  # link id of the open pixel
SCOPES = {"c": "campaign", "s": "step"}
LETTERS = {v: k for k, v in SCOPES.items()}
_TOKEN = re.compile(
    r"^t1\.([cs])([1-9]\d{0,9})-([1-9]\d{0,18})(?:-([1-9]\d{0,18}))?\.(0|[1-9]\d{0,9})\."
    r"([A-Za-z0-9_-]{43})$"
)


class BadToken(ValueError):
    """Malformed, forged or altered: the caller answers 404 and records nothing."""


@dataclass(frozen=True)
class MailRef:
    scope: str  # campaign | step
    scope_id: int  # campaign id | step id
    customer_id: int
    start: int | None = None  # a restarted step sequence's start (hit/order id)

    @property
    def text(self) -> str:
        tail = f"-{self.start}" if self.start else ""
        return f"{LETTERS[self.scope]}{self.scope_id}-{self.customer_id}{tail}"

    @property
    def kind(self) -> str:
        return CAMPAIGN if self.scope == "campaign" else STEP

    @property
    def source_key(self) -> str:
        """The mail's idempotency key (lifecycle.source_key / steps.runner.source_key)."""
        if self.scope == "campaign":
            return f"campaign:{self.scope_id}:customer:{self.customer_id}"
        key = f"step:{self.scope_id}:customer:{self.customer_id}"
        return f"{key}:start:{self.start}" if self.start else key


def make_token(ref: MailRef, link_id: int, key: bytes | None = None) -> str:
    payload = f"{VERSION}.{ref.text}.{int(link_id)}"
    return f"{payload}.{sign(payload, key or secret_key())}"


def verify_token(token: str, key: bytes | None = None) -> tuple[MailRef, int]:
    """(mail ref, link id) of a genuine token; BadToken for anything else."""
    m = _TOKEN.match(token or "")
    if m is None:
        raise BadToken(f"token: {str(token)[:80]!r} is not a tracking token")
    letter, scope_id, customer, start, link, mac = m.groups()
    payload = token[: -len(mac) - 1]
    if not hmac.compare_digest(sign(payload, key or secret_key()), mac):
        raise BadToken("token: signature does not match (forged or altered link)")
    ref = MailRef(SCOPES[letter], int(scope_id), int(customer), int(start) if start else None)
    return ref, int(link)


_KEY = re.compile(r"^(campaign|step):(\d+):customer:(\d+)(?::start:(\d+))?$")


def ref_from_source_key(source_key: str) -> MailRef:
    """The inverse of MailRef.source_key (ValueError for keys that are not tracked)."""
    m = _KEY.match(source_key)
    if m is None or (m.group(1) == "campaign" and m.group(4)):
        raise ValueError(f"source_key: {source_key!r} is not a campaign or step mail key")
    start = int(m.group(4)) if m.group(4) else None
    return MailRef(m.group(1), int(m.group(2)), int(m.group(3)), start)
