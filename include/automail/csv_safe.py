"""The one CSV writer for every export (mail search export, newsletter audience).

Cells a spreadsheet would run as a formula are neutralised per OWASP's CSV-injection
rules: a text cell whose first character - also after leading whitespace, which Excel
skips - is = + - @ TAB CR (or a full-width ＝ ＋ － ＠, which Japanese IMEs type and
Excel treats alike) gets a leading apostrophe, so it opens as text. Numbers and dates
pass as they are. Files are UTF-8 with a BOM: what Japanese Excel needs to read kana.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

BOM = "\ufeff"
FORMULA_START = frozenset("=+-@\t\r\n\uff1d\uff0b\uff0d\uff20")


def neutralise(value: Any) -> Any:
    """The cell as written: formula-like text prefixed with `'`, anything else as is."""
    if not isinstance(value, str) or not value:
        return value
    i = 0
    while i < len(value) and value[i].isspace() and value[i] not in "\t\r\n":
        i += 1  # spreadsheets skip leading spaces (also U+3000) before a formula
    if value[i : i + 1] in FORMULA_START:
        return "'" + value
    return value


def write_rows(
    out: IO[str], columns: Sequence[str], rows: Iterable[Sequence[Any]], *, header: bool = True
) -> int:
    """Write `rows` (None → empty cell) to an open text handle; returns the row count."""
    # CRLF rows (RFC 4180): the writer then quotes every cell holding CR or LF, so a
    # stray CR can never split a row.
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow([neutralise(c) for c in columns])
    n = 0
    for row in rows:
        writer.writerow(["" if v is None else neutralise(v) for v in row])
        n += 1
    return n


def open_csv(path: str | Path) -> IO[str]:
    """A new CSV file, UTF-8 with BOM (the codec writes the BOM on the first write)."""
    return open(path, "w", encoding="utf-8-sig", newline="")  # noqa: SIM115


def to_text(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, bom: bool = True) -> str:
    buf = io.StringIO()
    if bom:
        buf.write(BOM)
    write_rows(buf, columns, rows)
    return buf.getvalue()
