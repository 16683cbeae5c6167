"""Newsletter audience selection at 1M customers on PostgreSQL (C3, C4), JSON lines.

Generates N customers (default 1,000,000) and ~N/2 orders with INSERT … SELECT
generate_series into its own database, then times:
  - audience_filter: count of a filter audience (prefectures + min purchases + last
    order date) with eligibility and newest-wins dedupe, as evaluated before sending;
  - audience_all: every eligible customer of the shop, deduped;
  - freeze_fixed: freezing a filter audience into campaign_recipients (INSERT … SELECT).
Baseline: the naive way — fetch every customer and order row into Python and apply the
same rules there (eligibility, filter, dedupe) — timed on the same data.

    AUTOMAIL_BENCH_PG_URL=postgresql+psycopg2://automail:automail@127.0.0.1:5432/automail_bench_audience \
      .venv/bin/python bench/audience.py [--customers 1000000]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import figures
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from automail import migrate
from automail.campaigns import audience
from automail.db import make_engine, session_factory
from automail.models import Campaign
from automail.sample_data import PREFECTURES

URL = os.environ.get(
    "AUTOMAIL_BENCH_PG_URL",
    "postgresql+psycopg2://automail:automail@127.0.0.1:5432/automail_bench_audience",
)
NOW = datetime(2026, 6, 10, tzinfo=UTC)
TZ = "Asia/Tokyo"
FILTER = {
    "prefectures": ["東京都", "大阪府", "神奈川県"],
    "min_purchases": 1,
    "last_order_from": "2026-03-01",
}
PREFS = PREFECTURES[:10]  # the demo data's most populous ten


def emit(name: str, value: float, unit: str, baseline: float | None = None) -> None:
    better = figures.lower_is_better if unit == "s" else figures.higher_is_better
    figures.emit(name, value, unit, baseline, better(value, baseline), digits=3)


def fresh_database(url: str) -> None:
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}"'))
        conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()
    migrate.upgrade(url)


def generate(engine, n: int) -> float:  # noqa: ANN001
    prefs = "ARRAY[" + ",".join(f"'{p}'" for p in PREFS) + "]"
    start = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO shops (id, code, name, from_address, reply_to, admin_address, signature_pc,"
                " signature_mobile, address_check, notify_pending, repeat_stage_from) VALUES (1, 'tea',"
                " 'お茶の山田園', 'shop@tea.example.jp', 'support@tea.example.jp', 'admin@tea.example.jp',"
                " '', '', true, false, 2)"
            )
        )
        # ~2% share an address with another customer (dedupe has work to do).
        conn.execute(
            text(f"""
            INSERT INTO customers (shop_id, name, email, prefecture, signed_up_at, marketing_opt_in,
                address_valid, address_cleaned, consecutive_failures, coupon_code)
            SELECT 1, '顧客' || g,
                   CASE WHEN g % 50 = 0 THEN 'c' || (g - 1) || '@example.jp' ELSE 'c' || g || '@example.jp' END,
                   ({prefs})[1 + g % 10],
                   TIMESTAMPTZ '2024-01-01' + (g % 800) * INTERVAL '1 day' + (g % 1440) * INTERVAL '1 minute',
                   g % 5 <> 0, g % 97 <> 0, g % 89 = 0, 0,
                   CASE WHEN g % 7 = 0 THEN 'C' || g END
            FROM generate_series(1, :n) AS g"""),
            {"n": n},
        )
        conn.execute(
            text("""
            INSERT INTO orders (shop_id, customer_id, order_number, ordered_at, purchase_count,
                subtotal, shipping_fee, tax, total)
            SELECT 1, 1 + (g::bigint * 7919) % :n, 'O' || g,
                   TIMESTAMPTZ '2025-06-01' + (g % 365) * INTERVAL '1 day', 1, 1000, 0, 100, 1100
            FROM generate_series(1, :m) AS g"""),
            {"n": n, "m": n // 2},
        )
        conn.execute(text("ANALYZE customers; ANALYZE orders"))
    return time.perf_counter() - start


def timed(fn):  # noqa: ANN001, ANN201
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def naive(engine) -> int:  # noqa: ANN001
    """Baseline: everything into Python, the same rules applied row by row."""
    lo = datetime(2026, 3, 1, tzinfo=UTC) - timedelta(hours=9)
    with engine.connect() as conn:
        stats: dict[int, list] = defaultdict(lambda: [0, None])
        for cid, at in conn.execute(text("SELECT customer_id, ordered_at FROM orders")):
            s = stats[cid]
            s[0] += 1
            s[1] = at if s[1] is None or at > s[1] else s[1]
        best: dict[str, tuple] = {}
        for row in conn.execute(
            text(
                "SELECT id, email, prefecture, signed_up_at, marketing_opt_in, address_valid,"
                " address_cleaned, unsubscribed_at FROM customers WHERE shop_id = 1"
            )
        ):
            cid, email, pref, signed, opt, valid, cleaned, unsub = row
            if not opt or not valid or cleaned or unsub is not None:
                continue
            count, last = stats.get(cid, (0, None))
            if pref not in FILTER["prefectures"] or count < 1 or last is None or last < lo:
                continue
            key = email.lower()
            if key not in best or (signed, cid) > best[key]:
                best[key] = (signed, cid)
    return len(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    args = parser.parse_args()
    fresh_database(URL)
    engine = make_engine(URL)
    gen = generate(engine, args.customers)
    emit("audience_generate_customers_per_s", args.customers / gen, "rows/s")
    make = session_factory(engine)
    with make() as session:
        filt = audience.dedupe_newest(audience.matching_ids(1, FILTER, TZ))
        n_filter, t_filter = timed(lambda: audience.count(session, filt))
        n_naive, t_naive = timed(lambda: naive(engine))
        assert n_filter == n_naive, (n_filter, n_naive)
        emit("audience_filter_seconds", t_filter, "s", t_naive)
        emit(
            "audience_filter_customers_per_s",
            args.customers / t_filter,
            "rows/s",
            args.customers / t_naive,
        )
        emit("audience_filter_recipients", n_filter, "customers")
        every = audience.dedupe_newest(audience.matching_ids(1, {}, TZ))
        n_all, t_all = timed(lambda: audience.count(session, every))
        emit("audience_all_seconds", t_all, "s")
        emit("audience_all_recipients", n_all, "customers")
        campaign = Campaign(
            shop_id=1,
            name="bench",
            subject="s",
            body="b",
            body_format="text",
            scheduled_at=NOW,
            audience_mode="fixed",
            audience_filter=FILTER,
            send_to="all",
            dedupe_newest=True,
            skip_already_received=False,
            targets=0,
            succeeded=0,
            errors=0,
            unsent=0,
        )
        session.add(campaign)
        session.flush()
        frozen, t_freeze = timed(lambda: audience.freeze(session, campaign, filt, None))
        assert frozen == n_filter
        emit("audience_freeze_seconds", t_freeze, "s")
        emit("audience_freeze_recipients", frozen, "customers")
        session.commit()
    engine.dispose()


if __name__ == "__main__":
    main()
