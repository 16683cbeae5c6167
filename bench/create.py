"""Creation throughput and peak memory on PostgreSQL (issue 3 / issue 8).

Generates N orders (INSERT … SELECT generate_series, so setup is fast), switches
order confirmation on so the first run's one-week lookback covers all of them, and
times `create_transactional` (stream, render, bulk insert). Each size runs in its own
process so peak RSS is that run's alone. Prints one JSON line per figure.

    .venv/bin/python bench/create.py --orders 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import figures
from sqlalchemy import text

DEFAULT_URL = "postgresql+psycopg2://automail:automail@127.0.0.1:5432/automail_bench"


def _emit(name: str, value: float, unit: str, baseline: float | None = None) -> None:
    figures.emit(name, value, unit, baseline, figures.higher_is_better(value, baseline))


def prepare(url: str, orders: int, now: datetime) -> None:
    from automail import migrate
    from automail.db import make_engine, session_scope
    from automail.rendering import install_default_templates
    from automail.sample_data import make_shop

    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    migrate.upgrade(url)
    customers = max(orders // 5, 1)
    with session_scope(engine) as s:
        install_default_templates(s)
        shop = make_shop(s, "bench", "ベンチ商店")
        shop_id = shop.id
    week = 6 * 24 * 3600  # all orders inside the one-week lookback
    with engine.begin() as conn:
        conn.execute(
            text("""
            INSERT INTO customers (shop_id, name, email, prefecture, signed_up_at,
                marketing_opt_in, address_valid, address_cleaned, consecutive_failures)
            SELECT :shop, '山田 太郎' || g, 'user' || g || '@example.jp', '東京都',
                   :now - interval '200 days', true, true, false, 0
            FROM generate_series(1, :n) g"""),
            {"shop": shop_id, "n": customers, "now": now},
        )
        conn.execute(
            text("""
            INSERT INTO orders (shop_id, customer_id, order_number, ordered_at, purchase_count,
                subtotal, shipping_fee, tax, total, payment_method)
            SELECT :shop, 1 + (g % :c), 'B-' || g,
                   :now - make_interval(secs => 1 + (g::bigint * 7919) % :week), 1 + (g % 3),
                   2160, 550, 216, 2926, 'クレジットカード'
            FROM generate_series(1, :n) g"""),
            {"shop": shop_id, "c": customers, "n": orders, "now": now, "week": week},
        )
        conn.execute(
            text("""
            INSERT INTO order_lines (order_id, sku, name, quantity, unit_price)
            SELECT id, 'TEA-001', '静岡産 深蒸し煎茶 100g', 2, 1080 FROM orders""")
        )
        conn.execute(text("ANALYZE"))
    engine.dispose()


def _partition_worker(url: str, jobs: list, partition: int, partitions: int) -> None:
    from automail.creation.create import job_from_dict, run_job
    from automail.db import make_engine, session_factory

    engine = make_engine(url)
    session = session_factory(engine)()
    for job in map(job_from_dict, jobs):
        run_job(session, job, "bench", partition=partition, partitions=partitions)
    session.close()
    engine.dispose()


def run_one(url: str, orders: int, partitions: int) -> dict:
    """One run as the DAG does it: plan, `partitions` worker processes, finish."""
    import multiprocessing

    from automail.creation import set_kind
    from automail.creation.create import finish, job_from_dict, job_to_dict, plan
    from automail.db import make_engine, session_factory
    from automail.models import Mail, Shop

    now = datetime.now(UTC).replace(microsecond=0)
    prepare(url, orders, now)
    engine = make_engine(url)
    session = session_factory(engine)()
    shop = session.query(Shop).one()
    set_kind(session, shop, "order_confirmation", True, now=now)
    session.commit()
    t0 = time.perf_counter()
    jobs = [job_to_dict(j) for j in plan(session, now - timedelta(hours=1), now)]
    session.commit()
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: RSS is the worker's own
    workers = [
        ctx.Process(target=_partition_worker, args=(url, jobs, p, partitions))
        for p in range(partitions)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
        assert w.exitcode == 0, f"worker exited {w.exitcode}"
    finish(session, [job_from_dict(j) for j in jobs], now, now)
    elapsed = time.perf_counter() - t0
    created = session.query(Mail).count()
    session.close()
    engine.dispose()
    rss_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert created == orders, f"created {created} of {orders}"
    return {
        "orders": orders,
        "seconds": elapsed,
        "rate": orders / elapsed,
        "rss_peak_mb": rss_peak / 1024,
        "partitions": partitions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--url", default=os.environ.get("AUTOMAIL_BENCH_PG_URL", DEFAULT_URL))
    parser.add_argument("--partitions", type=int, default=2, help="parallel workers")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child-process mode
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.url, args.one, args.partitions)))
        return
    results = []
    for n in args.orders:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                str(n),
                "--url",
                args.url,
                "--partitions",
                str(args.partitions),
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            sys.exit(f"benchmark for {n} orders failed:\n{out.stderr}")
        out = out.stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    for r in results:
        _emit(f"create_mails_per_s_{r['orders']}", r["rate"], "mails/s", 20000.0)
        _emit(f"create_peak_rss_mb_{r['orders']}", r["rss_peak_mb"], "MB")
        print(
            f"# {r['orders']:>9} orders: {r['rate']:>9.0f} mails/s in {r['seconds']:.1f} s, "
            f"with {r['partitions']} worker processes, peak RSS per worker "
            f"{r['rss_peak_mb']:.0f} MB"
        )
    if len(results) > 1:
        small, large = results[0], results[-1]
        _emit("create_rss_growth_ratio", large["rss_peak_mb"] / small["rss_peak_mb"], "x")


if __name__ == "__main__":
    main()
