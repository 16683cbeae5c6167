"""Result types of the bounce parser (kept apart so the format modules can build them)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BounceRecipient:
    recipient: str | None  # final/original recipient, lowercased; None when not found
    outcome: str  # "hard" | "soft" | "none"
    status: str | None  # RFC 3463 enhanced status code, e.g. "5.1.1"
    smtp_code: int | None  # SMTP reply code, e.g. 550
    reason: str  # short machine reason: "userunknown", "mailboxfull", "vacation", ...
    diagnostic: str  # one line of human-readable diagnostic, at most 500 chars


@dataclass(frozen=True)
class ParsedBounce:
    kind: str  # "dsn" | "nonstandard" | "autoreply" | "feedback" | "unknown"
    recipients: tuple[BounceRecipient, ...] = ()
    original_message_id: str | None = None  # Message-ID of the mail we sent, no brackets
    original_headers: dict[str, str] = field(default_factory=dict)

    @property
    def is_bounce(self) -> bool:
        """True when any recipient failed (hard or soft); auto-replies and reports never do."""
        return any(r.outcome in ("hard", "soft") for r in self.recipients)
