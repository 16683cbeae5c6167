"""CSV export of any search result (all pages), through pandas.

UTF-8 with a BOM so Excel (what Japanese shop staff open CSVs with) reads the kana
right; text cells that start like a formula get a leading apostrophe (CSV injection).
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from automail.management.search import MailFilter, local_minute, where_clauses
from automail.models import Mail, Shop

COLUMNS = [
    "id",
    "created_at",
    "shop",
    "kind",
    "to_address",
    "status",
    "sent_at",
    "attempt_count",
    "last_error",
    "subject",
]
CHUNK = 5000
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _defuse(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def export_csv(session: Session, f: MailFilter, out: str | Path | IO[str]) -> int:
    """Write every mail matching `f` (ignoring its paging) as CSV; returns the row count."""
    query = (
        select(
            Mail.id,
            Mail.created_at,
            Shop.code,
            Mail.kind,
            Mail.to_address,
            Mail.status,
            Mail.sent_at,
            Mail.attempt_count,
            Mail.last_error,
            Mail.subject,
        )
        .join(Shop, Shop.id == Mail.shop_id)
        .where(*where_clauses(session, f))
        .order_by(Mail.created_at.desc(), Mail.id.desc())
        .execution_options(yield_per=CHUNK)
    )
    own = isinstance(out, str | Path)
    handle: IO[str] = (
        open(out, "w", encoding="utf-8-sig", newline="")  # noqa: SIM115 (closed below if own)
        if isinstance(out, str | Path)
        else out
    )
    total = 0
    try:
        result = session.execute(query)
        first = True
        for part in result.partitions(CHUNK):
            # Times as shop-local minutes before pandas sees them (None would become NaT).
            records = [
                (r[0], local_minute(r[1], f.tz), *r[2:6], local_minute(r[6], f.tz), *r[7:])
                for r in part
            ]
            frame = pd.DataFrame(records, columns=COLUMNS)
            for col in ("to_address", "last_error", "subject", "shop"):
                frame[col] = frame[col].map(_defuse)
            frame.to_csv(handle, header=first, index=False, lineterminator="\n")
            first = False
            total += len(frame)
        if first:  # no rows: still a header, so the file opens as the expected table
            pd.DataFrame(columns=COLUMNS).to_csv(handle, index=False, lineterminator="\n")
    finally:
        if own:
            handle.close()
    return total
