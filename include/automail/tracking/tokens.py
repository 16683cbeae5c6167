"""Signed open/click tokens: which mail, which link, and nothing else.

A mail's token is `t1.<ref>.<mac>`: ref names the mail by what its idempotency key is
made of — `c<campaign>-<customer>` or `s<step>-<customer>[-<start>]` — and it is the
whole open-pixel token. A click token appends the link's own part, `<link_id>.<mac>`,
signed over the campaign/step and the link id. So rendering a mail costs one signature
(the link parts are signed once per campaign/step), and altering any character of
either part breaks a signature. Both MACs are the unsubscribe links' signer
(automail.signing.sign, same key); the `t1.` / `t1.link.` payload
prefixes keep the token kinds from standing in for each other. What does not verify is
`BadToken`: answered 404 and never recorded. The endpoint also checks that the link
belongs to the token's campaign/step, so a link part of another campaign is refused.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

from automail.signing import secret_key, sign
from automail.states import CAMPAIGN, STEP

VERSION = "t1"
SCOPES = {"c": "campaign", "s": "step"}
LETTERS = {v: k for k, v in SCOPES.items()}
_MAC = r"([A-Za-z0-9_-]{43})"
_REF = r"t1\.([cs])([1-9]\d{0,9})-([1-9]\d{0,18})(?:-([1-9]\d{0,18}))?"
_OPEN = re.compile(rf"^{_REF}\.{_MAC}$")
_CLICK = re.compile(rf"^{_REF}\.{_MAC}\.([1-9]\d{{0,9}})\.{_MAC}$")


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


def _link_payload(scope: str, scope_id: int, link_id: int) -> str:
    return f"{VERSION}.link.{LETTERS[scope]}{int(scope_id)}.{int(link_id)}"


def mail_token(ref: MailRef, key: bytes | None = None) -> str:
    """The mail's part of every token; alone, the open pixel's token."""
    payload = f"{VERSION}.{ref.text}"
    return f"{payload}.{sign(payload, key or secret_key())}"


def link_part(scope: str, scope_id: int, link_id: int, key: bytes | None = None) -> str:
    return f"{int(link_id)}.{sign(_link_payload(scope, scope_id, link_id), key or secret_key())}"


def click_token(ref: MailRef, link_id: int, key: bytes | None = None) -> str:
    return f"{mail_token(ref, key)}.{link_part(ref.scope, ref.scope_id, link_id, key)}"


def _ref(groups: tuple) -> MailRef:
    letter, scope_id, customer, start = groups
    return MailRef(SCOPES[letter], int(scope_id), int(customer), int(start) if start else None)


def _check(payload: str, mac: str, key: bytes | None) -> None:
    if not hmac.compare_digest(sign(payload, key or secret_key()), mac):
        raise BadToken("token: signature does not match (forged or altered link)")


def verify_open(token: str, key: bytes | None = None) -> MailRef:
    m = _OPEN.match(token or "")
    if m is None:
        raise BadToken(f"token: {str(token)[:80]!r} is not an open token")
    ref = _ref(m.groups()[:4])
    _check(f"{VERSION}.{ref.text}", m.group(5), key)
    return ref


def verify_click(token: str, key: bytes | None = None) -> tuple[MailRef, int]:
    m = _CLICK.match(token or "")
    if m is None:
        raise BadToken(f"token: {str(token)[:80]!r} is not a click token")
    ref, link_id = _ref(m.groups()[:4]), int(m.group(6))
    _check(f"{VERSION}.{ref.text}", m.group(5), key)
    _check(_link_payload(ref.scope, ref.scope_id, link_id), m.group(7), key)
    return ref, link_id


def ref_from_source_key(source_key: str) -> MailRef:
    """The inverse of MailRef.source_key (ValueError for keys that are not tracked)."""
    parts = source_key.split(":")
    ok = (
        len(parts) in (4, 6)
        and parts[0] in LETTERS
        and parts[2] == "customer"
        and parts[1].isdigit()
        and parts[3].isdigit()
        and (len(parts) == 4 or (parts[0] == "step" and parts[4] == "start" and parts[5].isdigit()))
    )
    if not ok:
        raise ValueError(f"source_key: {source_key!r} is not a campaign or step mail key")
    start = int(parts[5]) if len(parts) == 6 else None
    return MailRef(parts[0], int(parts[1]), int(parts[3]), start)
