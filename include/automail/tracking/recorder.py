"""Recording hits off the request path: the endpoint appends to memory, a background
thread writes batches (one INSERT per batch) with each hit's own machine verdict, then
applies the rules that need context (bursts, clicks before the first open) to the
touched mails' nearby hits only (automail.tracking.machine).

So a hit costs the request a signature check and a list append (bench/tracking.py),
and a flood cannot queue unbounded work: past `max_pending` hits wait in memory, new
ones are dropped and counted (`dropped`). A process killed between flushes loses at
most `interval` seconds of hits — figures, not mail, so that is the trade taken.
On the api-server this recorder runs in a writer process of its own, fed by each worker
(automail.tracking.writer_process); in-process (a thread) where the caller gives the
sessions, as tests do.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import bindparam, case, func, select, update
from sqlalchemy.orm import Session

from automail.models import Campaign, Mail, StepSequence, StepSequenceStep, TrackingHit
from automail.tracking.machine import RULES, Hit, Rules, burst_ids, hit_verdict
from automail.tracking.pending import PendingHits
from automail.tracking.tokens import MailRef

log = logging.getLogger(__name__)


@dataclass
class Pending:
    ref: MailRef
    link_id: int | None
    kind: str
    method: str
    ua_class: str
    at: datetime


@dataclass
class RecorderStats:
    written: int = 0
    dropped: int = 0  # over max_pending (flood)
    unknown_mail: int = 0  # genuine token, but its mail is gone
    errors: int = 0
    by_machine: dict[str, int] = field(default_factory=dict)


class HitRecorder(PendingHits[Pending]):
    stats: RecorderStats
    drain_failed = "tracking: writing hits failed; retrying"

    def __init__(
        self,
        session_factory: Callable[[], Session],
        interval: float = 0.2,
        max_pending: int = 200_000,
        on_first_write: Callable[[], None] | None = None,
    ):
        super().__init__(interval, max_pending, on_first_write)
        self.session_factory = session_factory
        self.stats = RecorderStats()
        self._shops: dict[tuple[str, int], int | None] = {}

    # ------------------------------------------------------------ request side
    def record(
        self,
        ref: MailRef,
        link_id: int | None,
        method: str,
        ua_class: str,
        at: datetime | None = None,  # when it was answered, if not now (writer_process)
    ) -> bool:
        kind = "click" if link_id else "open"
        return self._append(Pending(ref, link_id, kind, method, ua_class, at or _now()))

    def close(self) -> None:
        """Stop the writer thread after a last flush (app shutdown, test teardown)."""
        self._stop.set()
        self.flush()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No writes while inside (hits only buffer): a store outage, as tests see it."""
        with self._drain_lock:
            yield

    # ------------------------------------------------------------ writer side
    def drain(self) -> int:
        return self.flush()

    def flush(self) -> int:
        """Write everything buffered now; returns hits written."""
        return self._hand_over(self._store)

    def _store(self, batch: list[Pending]) -> int:
        try:
            written = self._write(batch)
        except Exception:
            self.stats.errors += 1
            raise
        self.stats.written += written
        return written

    def _shop_of(self, session: Session, scope: str, scope_id: int) -> int | None:
        key = (scope, scope_id)
        if key not in self._shops:
            if scope == "campaign":
                shop = session.scalar(select(Campaign.shop_id).where(Campaign.id == scope_id))
            else:
                shop = session.scalar(
                    select(StepSequence.shop_id)
                    .join(StepSequenceStep, StepSequenceStep.sequence_id == StepSequence.id)
                    .where(StepSequenceStep.id == scope_id)
                )
            self._shops[key] = shop
        return self._shops[key]

    def _mails(
        self, session: Session, refs: set[MailRef]
    ) -> dict[MailRef, tuple[int, datetime | None]]:
        groups: dict[tuple[int | None, str], list[MailRef]] = defaultdict(list)
        for ref in refs:
            groups[(self._shop_of(session, ref.scope, ref.scope_id), ref.kind)].append(ref)
        found: dict[MailRef, tuple[int, datetime | None]] = {}
        for (shop_id, kind), members in groups.items():
            if shop_id is None:
                continue
            by_key = {r.source_key: r for r in members}
            keys = list(by_key)
            for start in range(0, len(keys), 500):
                rows = session.execute(
                    select(Mail.id, Mail.source_key, Mail.sent_at).where(
                        Mail.shop_id == shop_id,
                        Mail.kind == kind,
                        Mail.source_key.in_(keys[start : start + 500]),
                    )
                )
                for mail_id, key, sent_at in rows:
                    found[by_key[key]] = (mail_id, sent_at)
        return found

    def _write(self, batch: list[Pending]) -> int:
        with self.session_factory() as session, session.begin():
            mails = self._mails(session, {p.ref for p in batch})
            rows = []
            for p in batch:
                mail = mails.get(p.ref)
                if mail is None:
                    self.stats.unknown_mail += 1
                    continue
                hit = Hit(0, p.kind, p.link_id, p.at, p.method, p.ua_class)
                rows.append(
                    {
                        "mail_id": mail[0],
                        "scope": p.ref.scope,
                        "scope_id": p.ref.scope_id,
                        "customer_id": p.ref.customer_id,
                        "link_id": p.link_id,
                        "kind": p.kind,
                        "at": p.at,
                        "method": p.method,
                        "ua_class": p.ua_class,
                        "machine": hit_verdict(hit, mail[1]),
                    }
                )
            if rows:
                insert_hits(session, rows)
                judge_in_context(session, rows)
        return len(rows)


HIT_COLUMNS = (
    "mail_id", "scope", "scope_id", "customer_id", "link_id",
    "kind", "at", "method", "ua_class", "machine",
)  # fmt: skip


def insert_hits(session: Session, rows: list[dict]) -> None:
    """One INSERT for the batch. On PostgreSQL over psycopg2 through its execute_values:
    a third of SQLAlchemy's per-row CPU (bench: ~50 → ~18 µs a hit), CPU the writer
    process takes from the same cores as the api-server's workers. Same rows, same
    transaction."""
    conn = session.connection()
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2":
        from psycopg2.extras import execute_values

        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            execute_values(
                cursor,
                f"INSERT INTO tracking_hits ({', '.join(HIT_COLUMNS)}) VALUES %s",
                [tuple(r[c] for c in HIT_COLUMNS) for r in rows],
                page_size=1000,
            )
        finally:
            cursor.close()
        return
    session.execute(TrackingHit.__table__.insert(), rows)


def judge_in_context(session: Session, rows: list[dict], rules: Rules = RULES) -> int:
    """The rules that need the mail's other hits, for the mails of newly written hits:
    bursts around the new clicks, and people's clicks that came before the mail's first
    person's open. Reads only those hits (index on mail_id, at); returns hits changed."""
    hits = TrackingHit.__table__.c
    changes: list[dict] = []
    first_click: dict[int, datetime] = {}
    for r in rows:
        if r["kind"] == "click":
            first_click[r["mail_id"]] = min(r["at"], first_click.get(r["mail_id"], r["at"]))
    ids = sorted(first_click)
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        since = min(first_click[m] for m in part) - rules.burst_window
        per_mail: dict[int, list[Hit]] = defaultdict(list)
        for hid, mail_id, link_id, at, machine in session.execute(
            select(hits.id, hits.mail_id, hits.link_id, hits.at, hits.machine)
            .where(hits.mail_id.in_(part), hits.kind == "click", hits.at >= since)
            .order_by(hits.mail_id, hits.at, hits.id)
        ):
            if at >= first_click[mail_id] - rules.burst_window:
                per_mail[mail_id].append(Hit(hid, "click", link_id, at, "GET", "", machine))
        for clicks in per_mail.values():
            burst = burst_ids(clicks, rules)
            changes += [
                {"hid": h.id, "verdict": "link_burst"}
                for h in clicks
                if h.id in burst and h.machine is None
            ]
    if changes:
        session.connection().execute(
            update(TrackingHit.__table__)
            .where(hits.id == bindparam("hid"))
            .values(machine=bindparam("verdict")),
            changes,
        )
    # A person's click dated before the mail's first person's open. Each touched mail's
    # first open and first click come from one scan of its index range; only mails with
    # such clicks get an UPDATE, bounded by the first open. Single-table statements: the
    # plan cannot go quadratic on a table without statistics yet, and a per-click
    # subquery (the first version) rescanned the mail's hits for every click — a token
    # hammered 20,000 times took one flush 97 s.
    mail_ids = sorted({r["mail_id"] for r in rows})
    human = hits.machine.is_(None)
    late: list[dict] = []
    for start in range(0, len(mail_ids), 500):
        firsts = session.execute(
            select(
                hits.mail_id,
                func.min(case((hits.kind == "open", hits.at))),
                func.min(case((hits.kind == "click", hits.at))),
            )
            .where(hits.mail_id.in_(mail_ids[start : start + 500]), human)
            .group_by(hits.mail_id)
        )
        late += [
            {"mail": mail_id, "first_open": opened}
            for mail_id, opened, clicked in firsts
            if opened is not None and clicked is not None and clicked < opened
        ]
    moved = 0
    if late:
        result = session.connection().execute(
            update(TrackingHit.__table__)
            .where(
                hits.mail_id == bindparam("mail"),
                hits.kind == "click",
                human,
                hits.at < bindparam("first_open"),
            )
            .values(machine="click_before_open"),
            late,
        )
        moved = max(result.rowcount, 0)
    return len(changes) + moved


def _now() -> datetime:
    return datetime.now(UTC)
