"""Benchmark: build + send N mails through automail's real claim/batch code, side by side
with (a) a plain smtplib loop on one connection sending the same prebuilt messages and
(b) the naive way, Airflow's `airflow.utils.email.send_email` once per mail.

The sink is aiosmtpd on loopback in a *separate process* (it would share our GIL
otherwise). The store is PostgreSQL (AUTOMAIL_BENCH_PG_URL, default db automail_bench),
reset, migrated and seeded before each automail run. Automail runs `plan_run` (recovery,
claim, cap) then its batches, measured twice side by side: on ONE connection (batches
one after another, the fair match for the plain loop) and with `--workers` batches at
once in separate processes, as the DAG's mapped tasks run under the `automail_smtp`
pool (4 slots). Each mail is built into MIME (headers, RFC 2047, UTF-8 body) inside the
timed automail path, and every mail gets its in_flight attempt + outcome commit
(exactly-once bookkeeping), committed before its DATA. The plain loop runs right
before each automail run, on the same freshly seeded store, so both see the same
machine state (single figures drift by 10-20% from run to run on this 2-core box).
The naive baseline runs on a smaller sample (`--naive`, default 300): it opens one SMTP
connection per mail, so 30,000 would only take long without telling more.

Prints JSON lines {"name","value","unit","baseline","ratio"}.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import smtplib
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime

from figures import emit
from sqlalchemy import insert, select, text
from sqlalchemy.engine import make_url

DEFAULT_PG = "postgresql+psycopg2://automail:automail@127.0.0.1:5432/automail_bench"
SINK_CODE = """
import sys, time
from aiosmtpd.controller import Controller
class H:
    n = 0
    async def handle_DATA(self, server, session, envelope):
        H.n += 1
        return "250 2.0.0 Message accepted"
c = Controller(H(), hostname="127.0.0.1", port=int(sys.argv[1]), data_size_limit=2**24)
c.start()
print("ready", flush=True)
sys.stdin.read()  # until the parent closes stdin
c.stop()
"""


def start_sink(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", SINK_CODE, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def reset_store(url: str) -> None:
    from automail import migrate
    from automail.db import make_engine

    target = make_url(url)
    admin = make_engine(
        target.set(database="postgres").render_as_string(hide_password=False),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        if not conn.scalar(
            text("SELECT 1 FROM pg_database WHERE datname=:n"), {"n": target.database}
        ):
            conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    migrate.upgrade(url)


def seed(factory, n: int) -> None:  # noqa: ANN001
    from automail import settings
    from automail.models import Customer, Mail
    from automail.sample_data import make_shop

    now = datetime.now(UTC)
    with factory() as session:
        shop = make_shop(session, bcc=None)
        settings.put(session, "send_cap_per_run", max(n, 30000))
        settings.put(session, "send_batch_size", 500)
        session.execute(
            insert(Customer),
            [
                {
                    "shop_id": shop.id,
                    "name": f"山田 花子{i}",
                    "email": f"user{i}@example.jp",
                    "signed_up_at": now,
                    "marketing_opt_in": True,
                    "address_valid": True,
                    "address_cleaned": False,
                    "consecutive_failures": 0,
                }
                for i in range(n)
            ],
        )
        ids = session.scalars(select(Customer.id).order_by(Customer.id)).all()
        rows = [
            {
                "shop_id": shop.id,
                "kind": "order_confirmation",
                "source_key": f"bench:{i}",
                "customer_id": cid,
                "to_address": f"user{i}@example.jp",
                "from_address": shop.from_address,
                "from_name": shop.from_name,
                "reply_to": shop.reply_to,
                "return_path": shop.return_path,
                "subject": f"【{shop.name}】ご注文ありがとうございます（注文番号 TEA-{i:06d}）",
                "body_text": (
                    f"山田 花子{i} 様\n\nこの度は{shop.name}をご利用いただき誠にありがとう"
                    "ございます。\n下記の内容でご注文を承りました。\n\n"
                    f"注文番号: TEA-{i:06d}\n静岡産 深蒸し煎茶 100g × 2  2,160円\n"
                    f"送料 550円\n合計 2,926円\n\n{shop.signature_pc}\n"
                ),
                "status": "unsent",
                "mode": "auto",
                "attempt_count": 0,
                "device": "pc",
            }
            for i, cid in enumerate(ids)
        ]
        for start in range(0, n, 5000):
            session.execute(insert(Mail), rows[start : start + 5000])
        session.commit()


_ENGINES: dict = {}


def _batch_in_process(url: str, batch: list[int], claim_id: str, smtp) -> dict:  # noqa: ANN001
    """One mapped send task in a worker process (own engine, own GIL)."""
    from automail.db import make_engine, session_factory
    from automail.sending import send_batch

    if url not in _ENGINES:
        _ENGINES[url] = session_factory(make_engine(url))
    return send_batch(_ENGINES[url], batch, claim_id, smtp, "bench").as_dict()


def _warm(_: int) -> None:
    import automail.sending  # noqa: F401 (imports before the clock starts)

    time.sleep(0.5)


def run_automail(factory, url: str, smtp, workers: int) -> tuple[float, int]:  # noqa: ANN001
    from automail.sending import plan_run, send_batch

    if workers == 1:
        t0 = time.perf_counter()
        plan = plan_run(factory, "bench")
        sent = sum(send_batch(factory, b, plan.claim_id, smtp, "bench").sent for b in plan.batches)
        return time.perf_counter() - t0, sent
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        list(pool.map(_warm, range(workers)))  # start the workers outside the timing
        t0 = time.perf_counter()
        plan = plan_run(factory, "bench")
        sent = sum(
            r["sent"]
            for r in pool.map(
                _batch_in_process,
                *zip(*[(url, b, plan.claim_id, smtp) for b in plan.batches], strict=True),
            )
        )
        return time.perf_counter() - t0, sent


def prebuilt_messages(factory) -> list[tuple[str, str, bytes]]:  # noqa: ANN001
    from automail.mime import message_id_for, render_bytes
    from automail.models import Mail, Shop

    with factory() as session:
        shop = session.scalars(select(Shop)).one()
        out = []
        for mail in session.scalars(
            select(Mail).where(Mail.kind == "order_confirmation").order_by(Mail.id)
        ):
            mail.message_id = message_id_for(mail.id, mail.from_address, shop.code)
            out.append((mail.from_address, mail.to_address, render_bytes(mail, shop)))
        session.rollback()
    return out


def run_plain(port: int, messages: list[tuple[str, str, bytes]]) -> float:
    t0 = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as client:
        for sender, to, data in messages:
            client.sendmail(sender, [to], data)
    return time.perf_counter() - t0


def run_naive(port: int, n: int) -> float:
    home = tempfile.mkdtemp(prefix="automail-bench-airflow-")
    os.environ.setdefault("AIRFLOW_HOME", home)
    os.environ.update(
        {
            "AIRFLOW__SMTP__SMTP_HOST": "127.0.0.1",
            "AIRFLOW__SMTP__SMTP_PORT": str(port),
            "AIRFLOW__SMTP__SMTP_SSL": "False",
            "AIRFLOW__SMTP__SMTP_STARTTLS": "False",
            "AIRFLOW__SMTP__SMTP_MAIL_FROM": "shop@tea.example.jp",
            "AIRFLOW_CONN_SMTP_DEFAULT": f"smtp://127.0.0.1:{port}",
        }
    )
    import logging

    from airflow.utils.email import send_email

    logging.getLogger("airflow.utils.email").setLevel(logging.WARNING)
    send_email(["warmup@example.jp"], "warm-up", "<p>warm-up</p>")  # imports, config
    t0 = time.perf_counter()
    for i in range(n):
        send_email(
            [f"user{i}@example.jp"],
            "【お茶の山田園】ご注文ありがとうございます",
            f"<p>山田 花子{i} 様</p><p>ご注文を承りました。</p>",
            mime_charset="utf-8",
        )
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=30000)
    parser.add_argument("--naive", type=int, default=300, help="sample size for send_email")
    parser.add_argument("--workers", type=int, default=4, help="concurrent batches (pool slots)")
    parser.add_argument("--pg-url", default=os.environ.get("AUTOMAIL_BENCH_PG_URL", DEFAULT_PG))
    args = parser.parse_args(argv)

    from automail.db import make_engine, session_factory
    from automail.sending import SmtpConfig
    from automail.smtp_sink import free_port

    port = free_port()
    sink = start_sink(port)
    smtp = SmtpConfig(host="127.0.0.1", port=port, timeout=30)
    auto: dict[int, float] = {}
    plain: dict[int, float] = {}  # the plain loop measured right before each automail run
    try:
        for workers in dict.fromkeys((1, args.workers)):
            reset_store(args.pg_url)
            engine = make_engine(args.pg_url, pool_size=2)
            factory = session_factory(engine)
            seed(factory, args.mails)
            messages = prebuilt_messages(factory)  # built outside the plain loop's timing
            plain[workers] = run_plain(port, messages)
            del messages
            auto[workers], sent = run_automail(factory, args.pg_url, smtp, workers)
            assert sent == args.mails, (workers, sent)
            engine.dispose()
        naive_s = run_naive(port, args.naive)
    finally:
        assert sink.stdin is not None
        sink.stdin.close()
        sink.wait(timeout=30)
    naive_rate = args.naive / naive_s
    emit(f"naive airflow send_email per mail ({args.naive}-mail sample)", naive_rate, "mails/s")
    for workers, auto_s in auto.items():
        label = "1 connection" if workers == 1 else f"{workers} connections (processes)"
        plain_rate = args.mails / plain[workers]
        emit(f"plain smtplib loop, one connection, before the {label} run", plain_rate, "mails/s")
        rate = args.mails / auto_s
        emit(f"automail, {label}, PostgreSQL, build+send+bookkeeping", rate, "mails/s")
        emit(f"automail ({label}) vs plain loop", rate, "mails/s", "plain smtplib loop",
             rate / plain_rate)  # fmt: skip
        emit(f"automail ({label}) vs naive", rate, "mails/s", "airflow send_email per mail",
             rate / naive_rate)  # fmt: skip
        emit(f"automail wall time ({label})", auto_s, "s", None, None)


if __name__ == "__main__":
    main()
