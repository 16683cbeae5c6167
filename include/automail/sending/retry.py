"""Retry policy (SPEC A8, E2): which failures are retried, when, and how they count.

- 4xx replies, refused connections and timeouts are temporary (`temp_fail`): the mail
  is retried at most `max_retries` (4) more times, waiting `retry_backoff_seconds[n-1]`
  before retry n (the last value repeats), then it is an error for good.
- 5xx replies are permanent (`perm_fail`): error at once.
- Whether a failure also condemns the *address* (hard) or not (soft, e.g. a 5.7.1
  policy block) is decided by the bounce classifier when it is installed
  (`automail.bounces.classify_smtp`), else by the code family alone.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

try:  # the bounce-ingestion package owns the detailed reply classification
    from automail.bounces import classify_smtp as _classify_smtp
except ImportError:  # pragma: no cover - fallback while that package is absent
    _classify_smtp = None  # type: ignore[assignment]

ENHANCED_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d]|\.\d)")


def find_enhanced(text: str) -> str | None:
    """The RFC 3463 `X.Y.Z` code in a reply text, if any."""
    m = ENHANCED_RE.search(text or "")
    return ".".join(m.groups()) if m else None


def attempts_allowed(max_retries: int) -> int:
    return 1 + max_retries


def backoff(attempt_no: int, schedule: list[int] | int) -> timedelta:
    """Wait before the retry that follows failed attempt number `attempt_no` (1-based)."""
    if isinstance(schedule, int):
        return timedelta(seconds=schedule)
    if not schedule:
        return timedelta(0)
    return timedelta(seconds=schedule[min(attempt_no - 1, len(schedule) - 1)])


def next_attempt(
    attempt_no: int, max_retries: int, schedule: list[int] | int, now: datetime
) -> datetime | None:
    """When to try again after temporary failure number `attempt_no`; None = give up."""
    if attempt_no >= attempts_allowed(max_retries):
        return None
    return now + backoff(attempt_no, schedule)


def address_verdict(code: int | None, enhanced: str | None, text: str) -> tuple[str, str]:
    """(hard|soft, reason) for a failed reply: does it say the address is bad?"""
    if _classify_smtp is not None:
        return _classify_smtp(code, enhanced, text)
    if enhanced in ("5.1.1", "5.1.2", "5.1.3", "5.1.10") or (code in (550, 553) and not enhanced):
        return "hard", "userunknown" if enhanced != "5.1.2" else "hostunknown"
    return "soft", "undefined"
