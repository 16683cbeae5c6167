"""Importing one file (or one SQL pull): bookkeeping, chunks, counts, rejects.

An import is recorded in `import_files` as `running` before its first chunk and only
marked `done` after its last chunk and its rejects file are written, so a killed
import is never mistaken for a finished one; rerunning it (same checksum) takes over
the `running` record and redoes the file, which the upserts make harmless: every row
ends up in the store exactly once. A file whose checksum is already `done` for the
same kind and shop imports nothing.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pandas as pd
from sqlalchemy import Engine, delete, insert, select, text, update

from automail.imports import store
from automail.imports.mapping import KEY_FALLBACK, KEY_FIELD, Mapping, load_mapping
from automail.imports.pipeline import ahead
from automail.imports.reading import Chunk, CsvRecords, FileError, scan
from automail.imports.validate import check
from automail.models import ImportFile, ImportReject, Order, Shipment, Shop

log = logging.getLogger(__name__)
CHUNK_ROWS = 50_000
MAX_VALUE = 1000  # characters of a refused value kept in the rejects table and file
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # spreadsheet formula triggers


@dataclass
class ImportResult:
    source: str
    kind: str
    status: str  # done | skipped (already imported) | failed
    file_id: int | None = None
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    rejects_path: str | None = None
    error: str | None = None

    @property
    def changed(self) -> int:
        return self.inserted + self.updated

    def summary(self) -> str:
        if self.status == "failed":
            return f"{self.source}: FAILED, nothing imported: {self.error}"
        if self.status == "skipped":
            return f"{self.source}: already imported (import #{self.file_id}), nothing to do"
        text = (
            f"{self.source}: read {self.read}, inserted {self.inserted}, updated {self.updated}, "
            f"unchanged {self.unchanged}, rejected {self.rejected}"
        )
        return text + (f" (rejects: {self.rejects_path})" if self.rejects_path else "")

    def as_dict(self) -> dict:
        return asdict(self)


class Location:
    """A local path or any `airflow.sdk.ObjectStoragePath` URL (s3://…, file://…)."""

    def __init__(self, where: str | Path | Any) -> None:
        if isinstance(where, str) and "://" in where:
            from airflow.sdk import ObjectStoragePath

            where = ObjectStoragePath(where)
        self.path = Path(where) if isinstance(where, str) else where

    def __str__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def open_binary(self) -> IO[bytes]:
        return self.path.open("rb")

    def stat(self) -> tuple[int, datetime]:
        st = self.path.stat()
        return int(st.st_size), datetime.fromtimestamp(st.st_mtime, UTC)

    def sibling(self, name: str) -> Location:
        return Location(self.path.parent / name)


def shop_ids(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {code: sid for code, sid in conn.execute(select(Shop.code, Shop.id))}


def shop_id_of(engine: Engine, code: str | None) -> int | None:
    if code is None:
        return None
    shops = shop_ids(engine)
    if code not in shops:
        raise LookupError(f"shop: no shop with code {code!r} (known: {', '.join(sorted(shops))})")
    return shops[code]


def import_file(
    engine: Engine,
    where: str | Path | Location,
    kind: str,
    shop: str | None = None,
    mapping: Mapping | str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> ImportResult:
    """Import one CSV file of `kind` for `shop` (rows may name their own shop)."""
    loc = where if isinstance(where, Location) else Location(where)
    mapping = mapping if isinstance(mapping, Mapping) else load_mapping(mapping, kind)
    if mapping.kind != kind:
        raise ValueError(f"mapping {mapping.name}: is for {mapping.kind}, not {kind}")
    default_shop = shop_id_of(engine, shop)
    if default_shop is None and not mapping.has("shop"):
        raise ValueError(f"--shop: required, mapping {mapping.name} has no shop column")
    size, mtime = loc.stat()
    try:
        facts = scan(loc.open_binary, mapping.encoding, loc.name)
    except FileError as exc:
        return _failed(engine, str(loc), kind, default_shop, mapping, str(exc), size, mtime)
    with engine.begin() as conn:
        done = conn.execute(
            select(ImportFile.id).where(
                ImportFile.kind == kind,
                ImportFile.checksum == facts.checksum,
                ImportFile.status == "done",
                ImportFile.shop_id.is_(None)
                if default_shop is None
                else ImportFile.shop_id == default_shop,
            )
        ).first()
    if done:
        _remember_skip(engine, str(loc), kind, default_shop, mapping, facts.checksum, size, mtime)
        return ImportResult(str(loc), kind, "skipped", file_id=done[0])
    records = CsvRecords(loc.open_binary, facts)
    try:
        header = records.header
        mapping = mapping.for_header(header)
        positions = _positions(header, mapping, loc.name)
    except FileError as exc:
        records.close()
        return _failed(engine, str(loc), kind, default_shop, mapping, str(exc), size, mtime)
    file_id = _begin(engine, str(loc), kind, default_shop, mapping, facts.checksum, size, mtime)
    try:
        result = _run(
            engine, file_id, str(loc), mapping, default_shop, records.chunks(positions, chunk_rows)
        )
    finally:
        records.close()
    result.rejects_path = _write_rejects_file(engine, file_id, loc) if result.rejected else None
    _finish(engine, file_id, result)
    return result


def _positions(header: list[str], mapping: Mapping, name: str) -> list[int]:
    if not header or header == [""]:
        raise FileError(f"{name}: no header line")
    missing = [c for c in mapping.columns if c not in header]
    if missing:
        shown = ", ".join(repr(h) for h in header[:30]) + (" …" if len(header) > 30 else "")
        raise FileError(
            f"{name}: column(s) {', '.join(repr(c) for c in missing)} named by mapping "
            f"{mapping.name} are not in the header ({len(header)} columns: {shown}); "
            "wrong file, mapping or delimiter?"
        )
    for col in mapping.columns:
        where = [i + 1 for i, h in enumerate(header) if h == col]
        if len(where) > 1:
            raise FileError(
                f"{name}: column {col!r} appears {len(where)} times in the header "
                f"(columns {', '.join(map(str, where))}); which one to read is ambiguous"
            )
    return [header.index(c) for c in mapping.columns]


def _run(
    engine: Engine,
    file_id: int,
    source: str,
    mapping: Mapping,
    default_shop: int | None,
    chunks: Iterable[Chunk],
) -> ImportResult:
    result = ImportResult(source, mapping.kind, "done", file_id=file_id)
    fields = list(mapping.columns.values())
    header_of = mapping.field_columns
    with engine.connect() as conn:
        store.open_staging(conn)
        shops = {code: sid for code, sid in conn.execute(select(Shop.code, Shop.id))}
        conn.commit()

        def checked() -> Iterator[tuple[Chunk, pd.DataFrame, store.Staged | None, list]]:
            for chunk in chunks:
                frame = chunk.frame.rename(columns=dict(enumerate(fields)))
                done = check(frame, mapping, shops, default_shop)
                rejects = [tuple(r) for r in done.rejects.itertuples(index=False)]
                rejects += [(line, "", value, reason) for line, value, reason in chunk.bad_shape]
                good = done.good
                yield chunk, good, None if good.empty else store.prepare(good, dialect), rejects

        dialect = conn.dialect.name
        # closing(): an error in a chunk stops the read-ahead thread now, not at GC
        with closing(ahead(checked())) as items:
            for chunk, good, staged, rejects in items:
                if dialect == "postgresql":
                    # A chunk's commit need not wait for its WAL flush: a crash may lose the
                    # last chunks' commits, but the file is then still `running` and its rerun
                    # redoes them (upserts). `done` is committed synchronously by _finish, and
                    # WAL is flushed in order, so `done` on disk means every chunk is too.
                    conn.execute(text("SET LOCAL synchronous_commit TO off"))
                    # The store's indexes are in memory: at the default page cost (4, a
                    # disk seek) the planner joined a chunk's 50,000 keys by scanning all
                    # of orders, a cost growing with the store (0.8 s a chunk at 1M
                    # orders, against 0.2 s for the index probes it now chooses).
                    conn.execute(text("SET LOCAL random_page_cost TO 1.1"))
                counts = _write_chunk(conn, good, staged, mapping, header_of)
                rejects += counts.rejects
                _store_rejects(conn, file_id, rejects)
                result.read += chunk.read
                result.inserted += counts.inserted
                result.updated += counts.updated
                result.unchanged += counts.unchanged
                result.rejected += len({r[0] for r in rejects})
                conn.execute(
                    update(ImportFile)
                    .where(ImportFile.id == file_id)
                    .values(
                        rows_read=result.read,
                        inserted=result.inserted,
                        updated=result.updated,
                        unchanged=result.unchanged,
                        rejected=result.rejected,
                    )
                )
                conn.commit()  # a chunk is durable on its own; the file is `done` only at the end
                log.info("%s", result.summary())
        store.close_staging(conn)
        conn.commit()
    return result


def _write_chunk(
    conn: Any,
    good: pd.DataFrame,
    staged: store.Staged | None,
    mapping: Mapping,
    header_of: dict[str, str],
) -> store.ChunkCounts:
    counts = store.ChunkCounts()
    if staged is None:
        return counts
    store.stage(conn, staged)
    key_field = KEY_FIELD[mapping.kind]
    key_col = header_of.get(key_field) or header_of.get(KEY_FALLBACK.get(mapping.kind, ""), "")
    orders: dict[tuple, int] | None = None
    if mapping.kind == "orders":
        # An order an earlier chunk of this file took is in the store by now, so with no
        # staged number there (a fresh import) no look-up of the numbers seen is needed.
        orders = store.existing_lines(conn, Order.__table__, "order_number")
    for line, key, first in store.take_duplicates(conn, look=orders is None or bool(orders)):
        counts.rejects.append(
            (line, key_col, key, f"duplicate {key_field} in this file: first at line {first}")
        )
    dup_lines = {r[0] for r in counts.rejects}
    if dup_lines:
        good = good[~good["line"].isin(dup_lines)]
    # Counting works on staged lines: those whose key the store already had (fetched, few
    # on a fresh import) and those an upsert changed (fetched only when some existed).
    changed_lines: set[int] = set()
    if mapping.kind == "shipments":
        for line, number in store.orphan_shipments(conn):
            counts.rejects.append(
                (line, header_of["order_number"], number, "no order with this number in the shop")
            )
        orphans = {r[0] for r in counts.rejects} - dup_lines
        good = good[~good["line"].isin(orphans)]
        existing = store.existing_lines(conn, Shipment.__table__, "key")
        changed = store.upsert_shipments(conn, mapping, "key", existing)
        changed_lines |= {existing[k] for k in changed}
    elif mapping.kind == "customers":
        had, changed = store.upsert_customers(conn, mapping)
        existing = _lines_of(good, "key", had)
        changed_lines |= {existing[k] for k in changed}
    else:
        had_customers, cust_changed = store.upsert_customers(conn, mapping)
        assert orders is not None
        existing = {key: line for key, line in orders.items() if line not in dup_lines}
        shipped = mapping.has("shipped_at")
        ships: dict[tuple, int] = {}
        if shipped and existing:  # a new order's shipment is part of its insert
            ships = store.existing_lines(conn, Shipment.__table__, "order_number")
        changed = store.upsert_orders(conn, mapping, existing, bool(had_customers))
        changed_lines |= {existing[k] for k in changed}
        changed_lines |= store.replace_changed_lines(conn, mapping, bool(existing))
        if shipped:
            ship_changed = store.upsert_shipments(conn, mapping, "order_number", ships)
            changed_lines |= {ships[k] for k in ship_changed}
            if existing:  # a first shipment for an order already stored updates it
                with_date = set(good["line"][good["shipped_at"].notna()])
                changed_lines |= (with_date & set(existing.values())) - set(ships.values())
        if cust_changed:
            cust = _key_index(good, "customer_key")
            changed_lines |= set(good["line"][cust.isin(list(cust_changed))])
        if not mapping.has("purchase_count") and had_customers:
            # only a customer with orders from before this chunk can need renumbering
            store.renumber_purchases(conn)
    existed = set(existing.values())
    changed_lines -= set(good["line"]) - existed  # an inserted line is not also updated
    counts.inserted = len(good) - len(existed)
    counts.updated = len(changed_lines)
    counts.unchanged = len(good) - counts.inserted - counts.updated
    return counts


def _lines_of(good: pd.DataFrame, column: str, keys: set) -> dict[tuple, int]:
    """(shop id, key) -> line of `keys`, for the few rows whose key already existed."""
    if not keys:
        return {}
    pairs = zip(good["shop_id"].astype(int), good[column], good["line"], strict=True)
    return {(shop, key): int(line) for shop, key, line in pairs if (shop, key) in keys}


def _key_index(frame: pd.DataFrame, column: str) -> pd.MultiIndex:
    return pd.MultiIndex.from_arrays([frame["shop_id"].astype(int), frame[column]])


def _store_rejects(conn: Any, file_id: int, rejects: list[tuple]) -> None:
    if rejects:
        conn.execute(
            insert(ImportReject),
            [
                {
                    "import_file_id": file_id,
                    "line": int(line),
                    "column": column or None,
                    "value": _clip(value),
                    "reason": reason,
                }
                for line, column, value, reason in sorted(rejects, key=lambda r: r[0])
            ],
        )


CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clip(value: object) -> str | None:
    """The refused value as stored and shown: control characters made visible (\\x00;
    PostgreSQL text cannot hold NUL), at most MAX_VALUE characters."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value)
    if len(text) > MAX_VALUE:
        text = f"{text[:MAX_VALUE]}… ({len(text)} characters)"
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def rejects_of(engine: Engine, file_id: int) -> Iterator[tuple[int, str, str, str]]:
    with engine.connect() as conn:
        rows = conn.execution_options(yield_per=5000).execute(
            select(ImportReject.line, ImportReject.column, ImportReject.value, ImportReject.reason)
            .where(ImportReject.import_file_id == file_id)
            .order_by(ImportReject.line, ImportReject.id)
        )
        for row in rows:
            yield row[0], row[1] or "", row[2] or "", row[3]


def spreadsheet_safe(value: str) -> str:
    """A value a spreadsheet will show as text, never run as a formula."""
    return "'" + value if value.startswith(FORMULA_START) else value


def write_rejects_csv(engine: Engine, file_id: int, source: str, out: IO[str]) -> None:
    """file, line, column, value, reason: streamed, however many rows were refused."""
    writer = csv.writer(out)
    writer.writerow(["file", "line", "column", "value", "reason"])
    for line, column, value, reason in rejects_of(engine, file_id):
        writer.writerow([source, line, column, spreadsheet_safe(value), reason])


def rejects_csv(engine: Engine, file_id: int, source: str) -> str:
    buf = io.StringIO()
    write_rejects_csv(engine, file_id, source, buf)
    return buf.getvalue()


def _write_rejects_file(engine: Engine, file_id: int, loc: Location) -> str | None:
    target = loc.sibling(f"{loc.name}.rejects.csv")
    try:
        with target.path.open("w", encoding="utf-8-sig", newline="") as fh:
            write_rejects_csv(engine, file_id, loc.name, fh)
    except OSError as exc:  # a read-only drop location: the rejects table still has them
        log.warning("%s: rejects file not written (%s); see `automail import rejects`", loc, exc)
        return None
    return str(target)


def _row(source: str, kind: str, shop: int | None, mapping: Mapping, **kw: Any) -> dict:
    return {
        "source": source,
        "kind": kind,
        "shop_id": shop,
        "mapping": mapping.name,
        "started_at": datetime.now(UTC),
        "rows_read": 0,
        "inserted": 0,
        "updated": 0,
        "unchanged": 0,
        "rejected": 0,
        **kw,
    }


def _begin(
    engine: Engine,
    source: str,
    kind: str,
    shop: int | None,
    mapping: Mapping,
    checksum: str | None,
    size: int | None,
    mtime: datetime | None,
) -> int:
    """The `running` record: a killed earlier try of the same bytes is taken over."""
    with engine.begin() as conn:
        stale = conn.execute(
            select(ImportFile.id).where(
                ImportFile.kind == kind,
                ImportFile.source == source,
                ImportFile.checksum == checksum,
                ImportFile.status == "running",
            )
        ).first()
        if stale and checksum is not None:
            conn.execute(delete(ImportReject).where(ImportReject.import_file_id == stale[0]))
            conn.execute(
                update(ImportFile)
                .where(ImportFile.id == stale[0])
                .values(_row(source, kind, shop, mapping, size=size, modified_at=mtime))
            )
            return int(stale[0])
        row = _row(
            source, kind, shop, mapping, status="running", checksum=checksum, size=size,
            modified_at=mtime,
        )  # fmt: skip
        return conn.execute(insert(ImportFile).values(row).returning(ImportFile.id)).scalar_one()


def _finish(engine: Engine, file_id: int, result: ImportResult) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(ImportFile)
            .where(ImportFile.id == file_id)
            .values(
                status="done",
                finished_at=datetime.now(UTC),
                rejects_path=result.rejects_path,
                rows_read=result.read,
                inserted=result.inserted,
                updated=result.updated,
                unchanged=result.unchanged,
                rejected=result.rejected,
            )
        )


def _failed(
    engine: Engine,
    source: str,
    kind: str,
    shop: int | None,
    mapping: Mapping,
    error: str,
    size: int | None,
    mtime: datetime | None,
) -> ImportResult:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        row = _row(
            source, kind, shop, mapping, status="failed", error=error, size=size,
            modified_at=mtime, finished_at=now,
        )  # fmt: skip
        file_id = conn.execute(insert(ImportFile).values(row).returning(ImportFile.id)).scalar()
    log.error("%s", error)
    return ImportResult(source, kind, "failed", file_id=file_id, error=error)


def _remember_skip(
    engine: Engine,
    source: str,
    kind: str,
    shop: int | None,
    mapping: Mapping,
    checksum: str,
    size: int,
    mtime: datetime,
) -> None:
    """A re-drop under a new name or time: remembered so the next scan skips it unread."""
    with engine.begin() as conn:
        row = _row(
            source, kind, shop, mapping, status="skipped", checksum=checksum, size=size,
            modified_at=mtime, finished_at=datetime.now(UTC),
        )  # fmt: skip
        conn.execute(insert(ImportFile).values(row))


def import_frames(
    engine: Engine,
    source: str,
    mapping: Mapping,
    shop_id: int,
    frames: Iterable[pd.DataFrame],
) -> ImportResult:
    """Import rows that are already tabular (a SQL pull): strings per mapped column."""
    file_id = _begin(engine, source, mapping.kind, shop_id, mapping, None, None, None)
    columns = list(mapping.columns)

    def chunks() -> Iterator[Chunk]:
        line = 0
        for frame in frames:
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                raise FileError(
                    f"{source}: column(s) {', '.join(map(repr, missing))} named by mapping "
                    f"{mapping.name} are not in the result (columns: {', '.join(frame.columns)})"
                )
            part = frame[columns].copy()
            part.columns = list(range(len(columns)))
            part["line"] = range(line + 1, line + len(frame) + 1)
            line += len(frame)
            yield Chunk(part, [], len(frame))

    try:
        result = _run(engine, file_id, source, mapping, shop_id, chunks())
    except FileError as exc:
        with engine.begin() as conn:
            conn.execute(
                update(ImportFile)
                .where(ImportFile.id == file_id)
                .values(status="failed", error=str(exc), finished_at=datetime.now(UTC))
            )
        return ImportResult(source, mapping.kind, "failed", file_id=file_id, error=str(exc))
    _finish(engine, file_id, result)
    return result
