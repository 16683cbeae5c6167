"""Kills and an outage around the hit writer process (automail.tracking.writer_process), both stores.

- Writers SIGKILLed while two forwarders (two api-server workers) stream hits: the next
  batch starts a new writer; no hit is stored twice (`tracking_writer_duplicated`); the
  hits handed over after the last kill are all stored; what a killed writer held is the
  documented loss (`tracking_hits_lost_with_killed_writer`, a figure, at most its
  flush interval and the pipe).
- The worker SIGKILLed after a forward: its writer reads the pipe to its end, stores
  every hit it was given and exits (`tracking_worker_kills`).
- The store held by another transaction for ~3 s while hits keep coming: recording never
  waits, and afterwards every hit is stored once (`tracking_writer_outages`).
Each hit carries its own timestamp (a counter clock), so a stored duplicate is visible.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

from sqlalchemy import func, select
from tracking_helpers import sent_campaign

from automail.models import TrackingHit
from automail.tracking.tokens import MailRef, verify_open
from automail.tracking.writer_process import HitForwarder

PIXEL = re.compile(r'<img src="[^"]*/automail-public/o/([^"]+)"')
BASE = datetime(2026, 6, 12, tzinfo=UTC).timestamp()


def _refs(session) -> list[MailRef]:  # noqa: ANN001
    _, mails = sent_campaign(session, customers=20)
    session.commit()
    return [verify_open(PIXEL.findall(m.body_html)[0]) for m in mails]


def _stored(engine) -> tuple[int, int]:  # noqa: ANN001
    """(hits stored, hits stored more than once)."""
    with engine.connect() as conn:
        total = conn.scalar(select(func.count()).select_from(TrackingHit)) or 0
        distinct = conn.scalar(select(func.count(func.distinct(TrackingHit.at)))) or 0
    return total, total - distinct


def _wait_for(engine, expected: int, timeout: float = 30.0) -> int:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while (stored := _stored(engine)[0]) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return stored


def test_killed_writers_duplicate_nothing(engine, session, fault_totals) -> None:  # noqa: ANN001
    refs = _refs(session)
    ticks = iter(range(1_000_000))
    clock = lambda: BASE + next(ticks) / 1000  # noqa: E731  (distinct ms per hit)
    workers = [HitForwarder(interval=0.02, clock=clock) for _ in range(2)]
    sent = kills = 0
    try:
        for round_ in range(6):
            for i in range(400):
                workers[i % 2].record(refs[i % len(refs)], None, "GET", "browser")
                sent += 1
                if i % 100 == 99:
                    time.sleep(0.03)  # the forwarders hand batches over meanwhile
            victim = workers[round_ % 2]
            victim.forward()
            if round_ < 5 and victim.writer is not None:
                victim.writer.send_signal(signal.SIGKILL)
                victim.writer.wait()
                kills += 1
        after_last_kill = 400  # the last round went to writers no one killed
    finally:
        for w in workers:
            w.close()
    stored, duplicated = _stored(engine)
    fault_totals.kills += kills
    fault_totals.inputs += sent
    fault_totals.count("tracking_writer_kills", kills)
    fault_totals.count("tracking_writer_duplicated", duplicated)
    fault_totals.count("tracking_hits_lost_with_killed_writer", sent - stored)
    assert duplicated == 0
    assert kills == 5 and sum(w.stats.writers_started for w in workers) == kills + 2
    assert after_last_kill <= stored <= sent  # what killed writers held is the only loss
    assert all(w.writer is None for w in workers)  # closed: every writer reaped


CHILD = """
import os, signal, sys
from automail.tracking.tokens import MailRef
from automail.tracking.writer_process import HitForwarder
n, base = int(sys.argv[1]), float(sys.argv[2])
refs = [MailRef("campaign", int(a), int(b)) for a, b in (r.split(":") for r in sys.argv[3:])]
ticks = iter(range(n))
f = HitForwarder(interval=3600, clock=lambda: base + next(ticks) / 1000)
for i in range(n):
    f.record(refs[i % len(refs)], None, "GET", "browser")
f.forward()
print(f.writer.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # the worker dies; its writer must not
"""


def test_killed_worker_leaves_its_writer_to_store_everything(engine, session, fault_totals) -> None:  # noqa: ANN001
    refs = _refs(session)
    n = 3000
    args = [f"{r.scope_id}:{r.customer_id}" for r in refs]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), str(BASE), *args],
        capture_output=True, text=True, timeout=120, env=os.environ.copy(),
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    writer_pid = int(done.stdout.split()[0])
    stored = _wait_for(engine, n)
    deadline = time.monotonic() + 30
    while _alive(writer_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    fault_totals.count("tracking_worker_kills", 1)
    fault_totals.inputs += n
    assert stored == n and _stored(engine)[1] == 0
    assert not _alive(writer_pid)  # end of its pipe: stored, then exited


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def test_store_locked_under_the_writer_loses_nothing(engine, session, fault_totals) -> None:  # noqa: ANN001
    """The store held by another transaction (an outage as the writer sees it: SQLite
    refuses after its busy wait, PostgreSQL blocks) while hits keep coming: requests are
    never held up, and once the store is free every hit is stored once."""
    refs = _refs(session)
    ticks = iter(range(1_000_000))
    forwarder = HitForwarder(interval=0.02, clock=lambda: BASE + next(ticks) / 1000)
    n = 0
    with engine.connect() as blocker:
        blocker.begin()
        if engine.dialect.name == "sqlite":  # the write lock: other writers wait for it
            blocker.exec_driver_sql("UPDATE tracking_hits SET machine = machine WHERE id < 0")
        else:
            blocker.exec_driver_sql("LOCK TABLE tracking_hits IN ACCESS EXCLUSIVE MODE")
        slowest = 0.0
        for i in range(2000):
            started = time.monotonic()
            forwarder.record(refs[i % len(refs)], None, "GET", "browser")
            slowest = max(slowest, time.monotonic() - started)
            n += 1
            if i % 200 == 199:
                time.sleep(0.3)  # ~3 s of outage in all
        blocker.rollback()
    forwarder.close()
    stored, duplicated = _stored(engine)
    fault_totals.count("tracking_writer_outages", 1)
    fault_totals.count("tracking_writer_duplicated", duplicated)
    fault_totals.inputs += n
    assert stored == n and duplicated == 0
    assert slowest < 0.05  # recording never waited for the store


def test_writer_stores_where_its_worker_resolved(
    engine, session, store_url, tmp_path, monkeypatch
) -> None:  # noqa: ANN001
    """The writer is given the store its worker resolved, not whatever its own
    environment would resolve (here: another SQLite file that must stay untouched)."""
    refs = _refs(session)
    elsewhere = tmp_path / "elsewhere.db"
    monkeypatch.setenv("AUTOMAIL_DB_URL", f"sqlite:///{elsewhere}")
    ticks = iter(range(1000))
    forwarder = HitForwarder(store_url=lambda: store_url, clock=lambda: BASE + next(ticks))
    for ref in refs:
        forwarder.record(ref, None, "GET", "browser")
    forwarder.close()
    assert _stored(engine) == (len(refs), 0)
    assert not elsewhere.exists()
