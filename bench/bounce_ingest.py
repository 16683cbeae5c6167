"""Bounce ingestion throughput on the store, one JSON line per figure.

Sets up `--mails` sent mails (one customer each), writes `--bounces` DSNs for distinct
mails into a folder mailbox and times `ingest_mailbox` over it (parse + match by the
mail's signed return path + record + address health + move to processed/), then the same files
again (re-ingest: fingerprints make it a no-op), then headerless bounces that only the
last-resort recipient match can place. Baseline: parsing alone (`parse_bounce`) of the
same messages, so ratio = share of the parse-only rate that full ingestion keeps.

    AUTOMAIL_BENCH_URL=postgresql+psycopg2://automail:automail@127.0.0.1:5432/automail_bench \
      .venv/bin/python bench/bounce_ingest.py [--mails 20000] [--bounces 1000]
(default store: a fresh SQLite file in a temp dir)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import figures
from sqlalchemy import insert, select, text

from automail import migrate
from automail.bounce_links import MailSigner
from automail.bounces import parse_bounce
from automail.bounces.ingest import ingest_mailbox
from automail.bounces.mailbox import FolderSource
from automail.db import make_engine, session_factory
from automail.models import Customer, Mail
from automail.sample_data import make_shop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bounce_helpers import bare_bounce, dsn  # noqa: E402


def _emit(name: str, value: float, unit: str, baseline: float | None = None) -> None:
    figures.emit(name, value, unit, baseline, figures.higher_is_better(value, baseline))


def _setup(url: str, mails: int) -> list[tuple[int, str, int]]:
    engine = make_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    migrate.upgrade(url)
    engine = make_engine(url)
    sf = session_factory(engine)
    now = datetime.now(UTC)
    with sf() as s:
        shop = make_shop(s, return_path="bounce@tea.example.jp")
        s.execute(
            insert(Customer),
            [
                {
                    "shop_id": shop.id,
                    "name": f"c{i}",
                    "email": f"user{i}@example.jp",
                    "signed_up_at": now - timedelta(days=30),
                }
                for i in range(mails)
            ],
        )
        ids = s.execute(select(Customer.id, Customer.email).order_by(Customer.id)).all()
        s.execute(
            insert(Mail),
            [
                {
                    "shop_id": shop.id,
                    "kind": "order_confirmation",
                    "source_key": f"bench:{cid}",
                    "status": "sent",
                    "customer_id": cid,
                    "to_address": email,
                    "from_address": shop.from_address,
                    "subject": "bench",
                    "body_text": "bench",
                    "sent_at": now - timedelta(seconds=mails - i),
                    "message_id": f"<automail.{i + 1}.tea@tea.example.jp>",
                }
                for i, (cid, email) in enumerate(ids)
            ],
        )
        s.commit()
        rows = s.execute(select(Mail.id, Mail.to_address, Mail.shop_id).order_by(Mail.id)).all()
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))  # as autovacuum would after a bulk load
    engine.dispose()
    return [(r[0], r[1], r[2]) for r in rows]


def _original(mail_id: int, to: str) -> bytes:
    return (
        f"From: shop@tea.example.jp\r\nTo: {to}\r\nSubject: bench\r\n"
        f"Message-ID: <automail.{mail_id}.tea@tea.example.jp>\r\nX-Automail-Id: {mail_id}\r\n\r\n"
    ).encode()


def _timed_ingest(url: str, box: Path) -> tuple[float, dict]:
    engine = make_engine(url)
    start = time.perf_counter()
    summary = ingest_mailbox(session_factory(engine), FolderSource(box))
    elapsed = time.perf_counter() - start
    engine.dispose()
    return elapsed, summary.as_dict()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mails", type=int, default=20000)
    ap.add_argument("--bounces", type=int, default=1000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bounce-bench-"))
    url = os.environ.get("AUTOMAIL_BENCH_URL") or f"sqlite:///{tmp / 'store.db'}"
    mails = _setup(url, args.mails)
    step = max(1, len(mails) // args.bounces)
    chosen = mails[::step][: args.bounces]
    signer = MailSigner()  # each DSN comes back to its mail's signed return path
    messages = [
        dsn(_original(mid, to), to, to=signer.return_path("bounce@tea.example.jp", shop, mid))
        for mid, to, shop in chosen
    ]

    start = time.perf_counter()
    for raw in messages:
        parse_bounce(raw)
    parse_rate = len(messages) / (time.perf_counter() - start)

    box = tmp / "box"
    box.mkdir()
    for n, raw in enumerate(messages):
        (box / f"{n:06d}.eml").write_bytes(raw)
    elapsed, summary = _timed_ingest(url, box)
    assert summary["applied"] == len(messages), summary
    store = url.split(":", 1)[0].split("+", 1)[0]
    _emit(f"bounce_ingest_{store}_msgs_per_s", len(messages) / elapsed, "msg/s", parse_rate)

    for p in (box / "processed").iterdir():
        shutil.move(str(p), str(box / p.name))
    shutil.rmtree(box / "processed")
    elapsed, summary = _timed_ingest(url, box)
    assert summary["duplicates"] == len(messages) and summary["ingested"] == 0, summary
    _emit(f"bounce_reingest_noop_{store}_msgs_per_s", len(messages) / elapsed, "msg/s", parse_rate)

    bare = tmp / "bare"
    bare.mkdir()
    few = chosen[: max(1, len(chosen) // 5)]
    for n, (_, to, _shop) in enumerate(few):
        (bare / f"{n:06d}.eml").write_bytes(bare_bounce(to, "bounce@tea.example.jp"))
    elapsed, summary = _timed_ingest(url, bare)
    assert summary["matched"] == len(few), summary
    _emit(f"bounce_ingest_recipient_fallback_{store}_msgs_per_s", len(few) / elapsed, "msg/s")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
