"""Creating transactional mails from orders and shipments (A1–A3, A5, B6, F1).

One run = one data interval. For each shop and switched-on kind it streams the
events in the window, renders each mail (so reviewers see exactly what will go
out) and bulk-inserts with conflict-do-nothing on the idempotency key. A mail whose
template is missing or broken is still created, as `held` with the reason, so
nothing is lost and an operator can fix the template and re-render.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from automail import settings
from automail.creation.sources import SourceRow, stream_sources
from automail.creation.switches import enabled_kinds
from automail.creation.windows import follow_up_delay, mark_covered, window_for
from automail.db import take_write_lock
from automail.models import Mail, Shop, ShopMailKind
from automail.rendering import Renderer
from automail.states import FOLLOW_UP, HELD, TRANSACTIONAL_KINDS, UNSENT

log = logging.getLogger(__name__)


@dataclass
class CreationReport:
    created: dict[str, int] = field(default_factory=dict)  # "shop/kind" -> new mails
    held: dict[str, int] = field(default_factory=dict)  # of which held (render failed)
    skipped_existing: int = 0

    def add(self, key: str, created: int, held: int) -> None:
        self.created[key] = self.created.get(key, 0) + created
        self.held[key] = self.held.get(key, 0) + held

    @property
    def total(self) -> int:
        return sum(self.created.values())


def _insert_ignoring_duplicates(session: Session, rows: list[dict]) -> int:
    """Insert, skipping rows whose (shop, kind, source_key) exists; returns rows inserted."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(Mail).on_conflict_do_nothing(constraint="uq_mails_source")
    elif dialect == "sqlite":
        stmt = sqlite.insert(Mail).on_conflict_do_nothing()
    else:  # pragma: no cover - only the two supported stores
        stmt = insert(Mail)
    return len(session.execute(stmt.returning(Mail.id), rows).all())


def _mail_row(
    shop: Shop,
    smk: ShopMailKind,
    src: SourceRow,
    renderer: Renderer,
    due_at: datetime | None,
    now: datetime,
    run_id: str,
) -> dict:
    row = {
        "shop_id": shop.id,
        "kind": smk.kind,
        "source_key": src.source_key,
        "mode": smk.mode,
        "customer_id": src.customer.id,
        "order_id": src.order.id,
        "shipment_id": src.shipment.id if src.shipment else None,
        "to_address": src.customer.email,
        "from_address": shop.from_address,
        "from_name": shop.from_name,
        "reply_to": shop.reply_to,
        "bcc": shop.bcc,
        "return_path": shop.return_path,
        "due_at": due_at,
        "created_at": now,
        "updated_at": now,
        "created_by": run_id,
        "status": UNSENT,
        "attempt_count": 0,
        "device": "pc",
        "subject": "",
        "body_text": None,
        "body_html": None,
        "template_id": None,
        "rendered_at": None,
        "last_error": None,
    }
    try:
        rendered = renderer.render(
            smk.kind, shop, src.customer, order=src.order, lines=src.lines, shipment=src.shipment
        )
    except Exception as exc:  # any template problem holds this one mail, never the run
        row.update(status=HELD, last_error=f"render failed: {exc}")
        return row
    row.update(
        subject=rendered.subject,
        body_text=rendered.body_text,
        body_html=rendered.body_html,
        template_id=rendered.template_id,
        device=rendered.device,
        rendered_at=now,
    )
    return row


def create_for_kind(
    session: Session,
    shop: Shop,
    smk: ShopMailKind,
    start: datetime,
    end: datetime,
    run_id: str,
    renderer: Renderer,
    now: datetime,
    commit: Callable[[], None],
) -> tuple[int, int]:
    window = window_for(session, smk, start, end)
    chunk = settings.get(session, "creation_chunk_size")
    delay = follow_up_delay(session) if smk.kind == FOLLOW_UP else timedelta(0)
    commit()  # end the read transaction: each chunk below starts its own (see sources)
    created = held = 0
    for sources in stream_sources(session, shop.id, smk.kind, window.lower, window.upper, chunk):
        rows = []
        for src in sources:
            due = src.shipment.confirmed_at + delay if smk.kind == FOLLOW_UP else None
            rows.append(_mail_row(shop, smk, src, renderer, due, now, run_id))
        created += _insert_ignoring_duplicates(session, rows)
        held += sum(1 for r in rows if r["status"] == HELD)
        commit()  # each chunk is durable on its own: a crash mid-run loses no chunk
    take_write_lock(session)
    session.refresh(smk)
    mark_covered(smk, end, now)
    commit()
    log.info(
        "shop %s kind %s window [%s, %s) first_run=%s: %d created (%d held)",
        shop.code,
        smk.kind,
        window.lower,
        window.upper,
        window.first_run,
        created,
        held,
    )
    return created, held


def create_transactional(
    session: Session,
    start: datetime,
    end: datetime,
    run_id: str = "manual",
    now: datetime | None = None,
    kinds: tuple[str, ...] = TRANSACTIONAL_KINDS,
) -> CreationReport:
    """Create the mails for the data interval [start, end) for every switched-on kind."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError(f"start/end must be timezone-aware, got {start!r} / {end!r}")
    if not start < end:
        raise ValueError(f"start {start.isoformat()} must be before end {end.isoformat()}")
    now = now or datetime.now(UTC)
    report = CreationReport()
    renderer = Renderer(session)
    for shop, smk in enabled_kinds(session):
        if smk.kind not in kinds:
            continue
        created, held = create_for_kind(
            session, shop, smk, start, end, run_id, renderer, now, session.commit
        )
        report.add(f"{shop.code}/{smk.kind}", created, held)
    return report
