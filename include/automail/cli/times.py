"""Times given on the command line: ISO 8601, in the given zone when none is written."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo


def parse_time(flag: str, text: str, zone: tzinfo = UTC) -> datetime:
    """`text` as an aware datetime; a bad value raises ValueError naming the flag."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{flag}: {text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=zone)
