"""What ties a returned message to the mail it returns, in a form nobody can forge.

Every sent mail carries a per-mail token: the first 100 bits of
HMAC-SHA256(shop key, "mail.<id>"), lowercase base32 (20 characters; case-proof, as
some relays lowercase local parts). The shop key is derived from the one signing key
(automail.signing), so a token is valid for one mail of one shop only and cannot be
replayed for another mail id. The token goes into

- the envelope sender (VERP) when the shop has a return path:
  `bounces@shop.jp` → `bounces+<id>-<token>@shop.jp`; the bounce mailbox must accept
  `+` subaddresses (Postfix `recipient_delimiter = +`; most hosted mailboxes do);
- the Message-ID: `<automail.<id>-<token>.<shop>[.r<n>]@<from domain>>`.

Mail ids are sequential and the rest of a Message-ID is predictable, so the id alone
(X-Automail-Id, an unsigned Message-ID, a `+automail-<id>` return path, or just a
recipient address) proves nothing: bounce ingestion links such a bounce to its mail
for the record but never lets it change a mail or an address (automail.bounces.ingest).
"""

from __future__ import annotations

import base64
import hmac
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from automail.mime import message_id_for
from automail.signing import derived_key, mac, secret_key

if TYPE_CHECKING:
    from automail.models import Mail

TOKEN_CHARS = 20  # base32 characters: 100 bits
# `+<id>-<token>@` (signed) or the older unsigned `+automail-<id>@`; the token group is
# loose on purpose, so that a wrong or cut token is reported as a bad signature.
_VERP_RE = re.compile(r"\+(?:automail-(\d{1,19})|(\d{1,19})-([A-Za-z0-9]{1,64}))@", re.I)
_MESSAGE_ID_RE = re.compile(r"^<?\s*automail\.(\d{1,19})(?:-([A-Za-z0-9]{1,64}))?[.@]", re.I)


@dataclass(frozen=True)
class Claim:
    """A returned message's claim to be about mail `mail_id`; `token` None: unsigned."""

    mail_id: int
    token: str | None
    via: str  # "verp" | "message-id"


def verp_claims(text: str) -> list[Claim]:
    """The return-path claims in one header value (To, Delivered-To, ...)."""
    out = []
    for legacy_id, mail_id, token in _VERP_RE.findall(text or ""):
        out.append(Claim(int(legacy_id or mail_id), token or None, "verp"))
    return out


def message_id_claim(message_id: str | None) -> Claim | None:
    m = _MESSAGE_ID_RE.match((message_id or "").strip())
    return Claim(int(m.group(1)), m.group(2), "message-id") if m else None


@dataclass
class MailSigner:
    """Signs and checks per-mail tokens. The signing key is read on first use (once per
    signer): a sender builds one per batch, bounce ingestion one per run."""

    key: bytes | None = None
    _shop_keys: dict[int, bytes] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls) -> MailSigner:
        """A signer whose key is read now: MissingSecretKey before anything is sent."""
        return cls(secret_key())

    def _shop_key(self, shop_id: int) -> bytes:
        key = self._shop_keys.get(shop_id)
        if key is None:
            if self.key is None:
                self.key = secret_key()
            key = self._shop_keys[shop_id] = derived_key(self.key, f"bounce-link.shop.{shop_id}")
        return key

    def token(self, shop_id: int, mail_id: int) -> str:
        digest = mac(self._shop_key(int(shop_id)), f"mail.{int(mail_id)}")
        return base64.b32encode(digest).decode()[:TOKEN_CHARS].lower()

    def valid(self, shop_id: int, mail_id: int, token: str | None) -> bool:
        if not token:
            return False
        return hmac.compare_digest(self.token(shop_id, mail_id), token.lower())

    def return_path(self, base: str, shop_id: int, mail_id: int) -> str:
        """`bounces@shop.jp` → `bounces+<id>-<token>@shop.jp` (the SMTP MAIL FROM)."""
        local, sep, domain = base.strip().rpartition("@")
        if not sep or not local or not domain:
            raise ValueError(f"return_path {base!r}: not an address")
        return f"{local}+{int(mail_id)}-{self.token(shop_id, mail_id)}@{domain}"

    def envelope_sender(self, mail: Mail) -> str:
        """MAIL FROM of `mail`: its shop's return path made per-mail and signed; a mail
        without a return path goes from its From address (bounces then link by the
        signed Message-ID)."""
        if mail.return_path and mail.return_path.strip():
            return self.return_path(mail.return_path, mail.shop_id, mail.id)
        return mail.from_address

    def message_id(self, mail: Mail, shop_code: str | None, resend: int = 0) -> str:
        token = self.token(mail.shop_id, mail.id)
        return message_id_for(mail.id, mail.from_address, shop_code, resend, token=token)


__all__ = ["Claim", "MailSigner", "message_id_claim", "verp_claims"]
