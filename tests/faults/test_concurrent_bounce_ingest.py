"""Two bounce ingestion runs over the same messages at once (issue 16: a chunk's writes
wait for its end). Each run reads a copy of one mailbox in chunks; where both record the
same fingerprint the later chunk fails on the unique index at its end, is rolled back
and goes one message at a time, where those messages are duplicates. Whatever the
interleaving, every bounce is recorded once and applied once: one `bounced` event per
bounce, each customer's failure count the real number of failures in a row.

Counter `bounce_double_applied` (extra rows, events or counted failures) must be 0.
Knob: FAULTS_BOUNCE_RACE_CUSTOMERS (default 40; two sent mails and two bounces each).
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from bounce_helpers import dsn, new_mail
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from automail.bounces.ingest import IngestSummary, ingest_source
from automail.bounces.mailbox import FolderSource
from automail.db import session_factory
from automail.models import Bounce, Customer, MailEvent
from automail.sample_data import make_customer, make_shop
from automail.sending import SmtpConfig, run_send_cycle
from automail.smtp_sink import SmtpSink

from .conftest import FaultTotals, env_int

CUSTOMERS = env_int("FAULTS_BOUNCE_RACE_CUSTOMERS", 40)
SOFT = "452 4.2.2 <{r}>: Mailbox full"


def test_two_runs_over_the_same_bounces_record_and_apply_each_once(
    engine: Engine,
    session: Session,
    smtp_sink: SmtpSink,
    tmp_path: Path,
    fault_totals: FaultTotals,
) -> None:
    shop = make_shop(session, return_path="bounce@tea.example.jp", address_check=False)
    customers = [make_customer(session, shop, f"race{n}@example.jp") for n in range(CUSTOMERS)]
    for c in customers * 2:
        new_mail(session, shop, c.email, c.id)
    session.commit()
    cfg = SmtpConfig(host="127.0.0.1", port=smtp_sink.port, timeout=5)
    assert run_send_cycle(session_factory(engine), cfg, "race-setup").failed == 0
    # Each mail's soft bounce, to its signed return path (the sink's Return-Path).
    raws = [dsn(m.data, m.rcpt_tos[0], "4.2.2", SOFT) for m in smtp_sink.messages]
    assert len(raws) == 2 * CUSTOMERS
    boxes = [tmp_path / "a", tmp_path / "b"]
    for box in boxes:
        box.mkdir()
        for n, raw in enumerate(raws):
            (box / f"{n:05d}.eml").write_bytes(raw)

    results: list[IngestSummary] = []
    errors: list[BaseException] = []

    def run(box: Path) -> None:
        try:
            results.append(ingest_source(session_factory(engine), FolderSource(box), chunk=16))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(box,)) for box in boxes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and len(results) == 2, errors
    assert not any(r.failed for r in results), [r.failed for r in results]
    assert sum(r.ingested for r in results) == len(raws)
    assert sum(r.duplicates for r in results) == len(raws)
    assert sum(r.applied for r in results) == len(raws)
    for box in boxes:  # every message done in both runs
        assert not list(box.glob("*.eml"))
        shutil.rmtree(box)

    session.commit()
    session.expire_all()
    rows = session.scalar(select(func.count()).select_from(Bounce))
    events = session.scalar(
        select(func.count()).select_from(MailEvent).where(MailEvent.event == "bounced")
    )
    counts = session.scalars(
        select(Customer.consecutive_failures).where(Customer.shop_id == shop.id)
    ).all()
    extra = (rows - len(raws)) + (events - len(raws)) + sum(abs(n - 2) for n in counts)
    fault_totals.count("bounce_double_applied", extra)
    fault_totals.inputs += 2 * len(raws)
    fault_totals.lines.append(
        f"bounce race: 2 runs x {len(raws)} bounces -> rows {rows}, events {events}, "
        f"failure counts {sorted(set(counts))}"
    )
    assert (rows, events) == (len(raws), len(raws))
    assert set(counts) == {2}  # two bounced mails in a row per customer, counted once each
