"""Creating transactional mails from orders and shipments (A1–A3, A5, B6, F1).

A run for the data interval [start, end) is three steps, so the DAG can spread the
middle one over workers:
  plan    -> one Job per (shop, switched-on kind) with its window (see windows.py);
  run_job -> for one partition of a job's events (id % partitions), stream them,
             render each mail (reviewers see exactly what will go out) and bulk-insert
             skipping existing keys; every chunk commits on its own;
  finish  -> advance each job's coverage once every partition is done.
A mail whose template is missing or broken is still created, as `held` with the
reason, so nothing is lost and an operator can fix the template and re-render.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from automail import settings
from automail.creation.bulk_insert import insert_ignoring_duplicates
from automail.creation.sources import SourceRow, stream_sources
from automail.creation.switches import enabled_kinds
from automail.creation.windows import follow_up_delay, mark_covered, window_for
from automail.db import take_write_lock
from automail.models import Shop, ShopMailKind
from automail.rendering import Renderer
from automail.states import FOLLOW_UP, HELD, TRANSACTIONAL_KINDS, UNSENT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One (shop, kind) slice of a run; plain values so it can travel through XCom."""

    shop_id: int
    shop_code: str
    kind: str
    mode: str
    lower: str  # ISO 8601 source-time bounds
    upper: str

    @property
    def key(self) -> str:
        return f"{self.shop_code}/{self.kind}"


@dataclass
class CreationReport:
    created: dict[str, int] = field(default_factory=dict)  # "shop/kind" -> new mails
    held: dict[str, int] = field(default_factory=dict)  # of which held (render failed)

    def add(self, key: str, created: int, held: int) -> None:
        self.created[key] = self.created.get(key, 0) + created
        self.held[key] = self.held.get(key, 0) + held

    def merge(self, other: CreationReport) -> None:
        for key, n in other.created.items():
            self.add(key, n, other.held.get(key, 0))

    @property
    def total(self) -> int:
        return sum(self.created.values())


def _check_interval(start: datetime | None, end: datetime) -> None:
    if start is None:  # a run without a data interval (windows.run_interval)
        if end.tzinfo is None:
            raise ValueError(f"end must be timezone-aware, got {end!r}")
        return
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError(f"start/end must be timezone-aware, got {start!r} / {end!r}")
    if not start < end:
        raise ValueError(f"start {start.isoformat()} must be before end {end.isoformat()}")


def plan(
    session: Session,
    start: datetime | None,
    end: datetime,
    kinds: tuple[str, ...] = TRANSACTIONAL_KINDS,
) -> list[Job]:
    """One Job per switched-on kind; `start=None`: a run without a data interval."""
    _check_interval(start, end)
    jobs = []
    for shop, smk in enabled_kinds(session):
        if smk.kind in kinds:
            w = window_for(session, smk, start, end)
            jobs.append(
                Job(
                    shop.id, shop.code, smk.kind, smk.mode, w.lower.isoformat(), w.upper.isoformat()
                )
            )
    return jobs


def _mail_row(
    shop: Shop,
    job: Job,
    src: SourceRow,
    renderer: Renderer,
    due_at: datetime | None,
    now: datetime,
    run_id: str,
) -> tuple:
    """A row in bulk_insert.COLUMNS order."""
    status, error = UNSENT, None
    subject, text, html, template_id, device, rendered_at = "", None, None, None, "pc", None
    try:
        r = renderer.render(
            job.kind, shop, src.customer, order=src.order, lines=src.lines, shipment=src.shipment
        )
        subject, text, html, template_id, device, rendered_at = (
            r.subject,
            r.body_text,
            r.body_html,
            r.template_id,
            r.device,
            now,
        )
    except Exception as exc:  # any template problem holds this one mail, never the run
        status, error = HELD, f"render failed: {exc}"
    return (
        shop.id, job.kind, src.source_key, job.mode, status, src.customer.id, src.order.id,
        src.shipment.id if src.shipment else None, template_id, device, src.customer.email,
        shop.from_address, shop.from_name, shop.reply_to, shop.bcc, shop.return_path,
        subject, text, html, due_at, rendered_at, now, now, run_id, 0, error,
    )  # fmt: skip


def run_job(
    session: Session,
    job: Job,
    run_id: str,
    now: datetime | None = None,
    partition: int = 0,
    partitions: int = 1,
    renderer: Renderer | None = None,
) -> CreationReport:
    now = now or datetime.now(UTC)
    shop = session.get(Shop, job.shop_id)
    if shop is None:
        raise LookupError(f"shop_id: no shop {job.shop_id}")
    renderer = renderer or Renderer(session)
    chunk = settings.get(session, "creation_chunk_size")
    delay = follow_up_delay(session) if job.kind == FOLLOW_UP else timedelta(0)
    session.commit()  # end the read transaction: each chunk below starts its own
    created = held = 0
    for sources in stream_sources(
        session,
        shop.id,
        job.kind,
        datetime.fromisoformat(job.lower),
        datetime.fromisoformat(job.upper),
        chunk,
        partition=partition,
        partitions=partitions,
    ):
        rows = [
            _mail_row(
                shop,
                job,
                src,
                renderer,
                src.shipment.confirmed_at + delay
                if src.shipment and job.kind == FOLLOW_UP
                else None,
                now,
                run_id,
            )
            for src in sources
        ]
        created += insert_ignoring_duplicates(session, rows)
        held += sum(1 for r in rows if r[4] == HELD)
        session.commit()  # each chunk is durable on its own: a crash loses no chunk
    log.info(
        "%s window [%s, %s) partition %d/%d: %d created (%d held)",
        job.key,
        job.lower,
        job.upper,
        partition,
        partitions,
        created,
        held,
    )
    report = CreationReport()
    report.add(job.key, created, held)
    return report


def finish(session: Session, jobs: list[Job], end: datetime, now: datetime | None = None) -> None:
    """Advance coverage for every job of the run (all partitions done)."""
    now = now or datetime.now(UTC)
    take_write_lock(session)
    for job in jobs:
        smk = session.scalar(
            select(ShopMailKind).where(
                ShopMailKind.shop_id == job.shop_id, ShopMailKind.kind == job.kind
            )
        )
        if smk is not None:
            mark_covered(smk, end, now)
    session.commit()


def create_transactional(
    session: Session,
    start: datetime,
    end: datetime,
    run_id: str = "manual",
    now: datetime | None = None,
    kinds: tuple[str, ...] = TRANSACTIONAL_KINDS,
) -> CreationReport:
    """Plan, run every job in this process, finish: the whole run for [start, end)."""
    now = now or datetime.now(UTC)
    jobs = plan(session, start, end, kinds)
    report = CreationReport()
    renderer = Renderer(session)
    for job in jobs:
        report.merge(run_job(session, job, run_id, now, renderer=renderer))
    finish(session, jobs, end, now)
    return report


def job_from_dict(data: dict) -> Job:
    return Job(**data)


def job_to_dict(job: Job) -> dict:
    return asdict(job)
