"""Recording hits off the request path: the endpoint appends to memory, a background
thread writes batches (one INSERT per batch) and re-judges the touched mails' hits.

So a hit costs the request a signature check and a list append (bench/tracking.py),
and a flood cannot queue unbounded work: past `max_pending` hits wait in memory, new
ones are dropped and counted (`dropped`). A process killed between flushes loses at
most `interval` seconds of hits — figures, not mail, so that is the trade taken.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from automail.models import Campaign, Mail, StepSequence, StepSequenceStep, TrackingHit
from automail.tracking.machine import Hit, classify
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


class HitRecorder:
    def __init__(
        self,
        session_factory: Callable[[], Session],
        interval: float = 0.2,
        max_pending: int = 200_000,
    ):
        self.session_factory = session_factory
        self.interval = interval
        self.max_pending = max_pending
        self.stats = RecorderStats()
        self._buffer: list[Pending] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._shops: dict[tuple[str, int], int | None] = {}

    # ------------------------------------------------------------ request side
    def record(self, ref: MailRef, link_id: int | None, method: str, ua_class: str) -> bool:
        hit = Pending(ref, link_id, "click" if link_id else "open", method, ua_class, _now())
        with self._lock:
            if len(self._buffer) >= self.max_pending:
                self.stats.dropped += 1
                return False
            self._buffer.append(hit)
        if self._thread is None:
            self._start()
        return True

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._loop, name="automail-hits", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the writer thread after a last flush (app shutdown, test teardown)."""
        self._stop.set()
        self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception:  # the store is down: keep the hits, try again next tick
                log.exception("tracking: writing hits failed; retrying")

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No writes while inside (hits only buffer): a store outage, as tests see it."""
        with self._flush_lock:
            yield

    # ------------------------------------------------------------ writer side
    def flush(self) -> int:
        """Write everything buffered now; returns hits written."""
        with self._flush_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
            if not batch:
                return 0
            try:
                written = self._write(batch)
            except Exception:
                self.stats.errors += 1
                with self._lock:
                    self._buffer[:0] = batch[: self.max_pending]
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

    def _mails(self, session: Session, refs: set[MailRef]) -> dict[MailRef, tuple[int, datetime]]:
        groups: dict[tuple[int | None, str], list[MailRef]] = defaultdict(list)
        for ref in refs:
            groups[(self._shop_of(session, ref.scope, ref.scope_id), ref.kind)].append(ref)
        found: dict[MailRef, tuple[int, datetime]] = {}
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
                        "machine": None,
                    }
                )
            if rows:
                session.execute(TrackingHit.__table__.insert(), rows)
                judge_mails(session, {r["mail_id"] for r in rows})
        return len(rows)


def judge_mails(session: Session, mail_ids: set[int]) -> int:
    """Re-run the machine rules over every hit of these mails; returns hits changed."""
    ids = sorted(mail_ids)
    changes: list[dict] = []
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        sent = dict(session.execute(select(Mail.id, Mail.sent_at).where(Mail.id.in_(part))).all())
        per_mail: dict[int, list[Hit]] = defaultdict(list)
        rows = session.execute(
            select(
                TrackingHit.id,
                TrackingHit.mail_id,
                TrackingHit.kind,
                TrackingHit.link_id,
                TrackingHit.at,
                TrackingHit.method,
                TrackingHit.ua_class,
                TrackingHit.machine,
            ).where(TrackingHit.mail_id.in_(part))
        )
        before: dict[int, str | None] = {}
        for hid, mail_id, kind, link_id, at, method, ua, machine in rows:
            per_mail[mail_id].append(Hit(hid, kind, link_id, at, method, ua))
            before[hid] = machine
        for mail_id, hits in per_mail.items():
            for h in classify(hits, sent.get(mail_id)):
                if h.machine != before[h.id]:
                    changes.append({"hid": h.id, "verdict": h.machine})
    if changes:
        session.connection().execute(
            update(TrackingHit.__table__)
            .where(TrackingHit.__table__.c.id == bindparam("hid"))
            .values(machine=bindparam("verdict")),
            changes,
        )
    return len(changes)


def _now() -> datetime:
    return datetime.now(UTC)
