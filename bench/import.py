"""Import throughput and peak memory: N order rows in one CP932 Next Engine-style CSV.

Writes the file (Shift_JIS/CP932, Japanese headers, one row per order, half of them
shipped, 5 orders per customer), then times `automail.imports.import_file` into a
fresh PostgreSQL store: checksum and strict decoding pass, CSV parsing, checks,
COPY into the staging table, upserts of customers, orders, order lines and
shipments. Each size runs in its own process so peak RSS is that import's alone; a
second run of the same bytes (re-drop, nothing imported) is timed too.
Target (issue 15): >= 50,000 rows/s on PostgreSQL, RSS flat from 100k to 1M rows.
Also printed: the floor, a bare COPY of the same rows into an unindexed table (the
import's rate as a fraction of it is the honest figure for this machine); rows per CPU-second of the importing process plus its PostgreSQL backend
(from /proc), the figure to trust on a shared, busy machine where wall time is not.

    .venv/bin/python bench/import.py --rows 100000 1000000
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import figures
from sqlalchemy import text

DEFAULT_URL = "postgresql+psycopg2://automail:automail@127.0.0.1:5432/automail_bench"
HEADER = [
    "受注番号", "受注日", "購入者名", "購入者メールアドレス", "購入者都道府県", "支払方法",
    "商品計", "税金", "発送代", "総合計", "商品コード", "商品名", "受注数", "商品単価",
    "発送日", "発送方法", "配送伝票番号",
]  # fmt: skip
NAMES = ["山田 花子", "佐藤 翔太", "鈴木 陽菜", "高橋 大翔", "田中 結衣"]


def write_csv(path: Path, rows: int) -> None:
    start = datetime(2026, 6, 1, 9, 0)
    with path.open("w", encoding="cp932", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for i in range(rows):
            at = start + timedelta(seconds=i * 7)
            shipped = (at + timedelta(days=1)).strftime("%Y/%m/%d") if i % 2 else ""
            w.writerow([
                f"NE-{i:09d}", at.strftime("%Y/%m/%d %H:%M:%S"), NAMES[i % 5],
                f"c{i // 5}@example.jp", "東京都", "クレジットカード", "2160", "216", "550",
                "2926", "TEA-001", "静岡産 深蒸し煎茶 100g", "2", "1080", shipped,
                "ヤマト運輸" if shipped else "", f"{i:012d}" if shipped else "",
            ])  # fmt: skip


def _cpu_self() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _cpu_pid(pid: int) -> float:
    """utime + stime of a local process (the PostgreSQL backend), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def copy_floor(engine, path: Path) -> float:  # noqa: ANN001
    """Seconds for the cheapest way the same rows reach PostgreSQL: the file decoded and
    COPYed as is (17 text columns) into an unindexed temp table, on the same connection.
    No checks, no keys, no indexes, no foreign keys: what no import can beat here."""
    with engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.execute(
            f"CREATE TEMP TABLE copy_floor ({', '.join(f'c{i} text' for i in range(len(HEADER)))})"
        )
        with path.open(encoding="cp932", newline="") as fh:
            t0 = time.perf_counter()
            cursor.copy_expert("COPY copy_floor FROM STDIN WITH (FORMAT csv, HEADER true)", fh)
            seconds = time.perf_counter() - t0
        cursor.close()
        conn.rollback()
    return seconds


def run_one(url: str, path: Path) -> dict:
    from automail import migrate
    from automail.db import make_engine, session_scope
    from automail.imports import import_file
    from automail.sample_data import make_shop

    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    migrate.upgrade(url)
    with session_scope(engine) as s:
        make_shop(s, "bench", "ベンチ商店")
    # The import's one connection is the pool's only one: its backend's CPU is the server's
    # share, so client + server CPU time gives a figure that a busy machine does not skew.
    engine.dispose()
    engine = make_engine(url, pool_size=1, max_overflow=0)
    with engine.connect() as conn:
        backend = conn.scalar(text("SELECT pg_backend_pid()"))
    cpu0, server0 = _cpu_self(), _cpu_pid(backend)
    t0 = time.perf_counter()
    result = import_file(engine, path, "orders", "bench", "next_engine_orders")
    elapsed = time.perf_counter() - t0
    cpu = _cpu_self() - cpu0 + _cpu_pid(backend) - server0
    assert result.status == "done" and result.inserted == result.read, result.summary()
    t1 = time.perf_counter()
    again = import_file(engine, path, "orders", "bench", "next_engine_orders")
    redrop = time.perf_counter() - t1
    assert again.status == "skipped", again.summary()
    with engine.connect() as conn:
        orders = conn.scalar(text("SELECT count(*) FROM orders"))
    floor = copy_floor(engine, path)
    engine.dispose()
    assert orders == result.read, f"{orders} orders for {result.read} rows"
    return {
        "rows": result.read,
        "seconds": elapsed,
        "rate": result.read / elapsed,
        "cpu_seconds": cpu,
        "load": os.getloadavg()[0],
        "redrop_seconds": redrop,
        "floor_seconds": floor,
        "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "mb": path.stat().st_size / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--url", default=os.environ.get("AUTOMAIL_BENCH_PG_URL", DEFAULT_URL))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child-process mode: the CSV path
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.url, Path(args.one))))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="automail-bench-import-") as tmp:
        for n in args.rows:
            path = Path(tmp) / f"orders_{n}.csv"
            write_csv(path, n)
            cmd = [sys.executable, __file__, "--one", str(path), "--url", args.url]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"benchmark for {n} rows failed:\n{out.stderr}")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            path.unlink()
    for r in results:
        rate = r["rate"]
        figures.emit(
            f"import_rows_per_s_{r['rows']}", rate, "rows/s", 50000.0, rate / 50000.0, digits=0
        )
        per_cpu = r["rows"] / r["cpu_seconds"]
        figures.emit(
            f"import_rows_per_cpu_s_{r['rows']}", per_cpu, "rows/CPU-s", 50000.0,
            per_cpu / 50000.0, digits=0,
        )  # fmt: skip
        figures.emit(f"import_peak_rss_mb_{r['rows']}", r["rss_peak_mb"], "MB")
        floor = r["rows"] / r["floor_seconds"]
        figures.emit(f"import_copy_floor_rows_per_s_{r['rows']}", floor, "rows/s", digits=0)
        figures.emit(f"import_vs_copy_floor_{r['rows']}", rate / floor, "x", digits=3)
        print(
            f"# {r['rows']:>9} rows ({r['mb']:.0f} MB CP932): {rate:>8.0f} rows/s in "
            f"{r['seconds']:.1f} s wall, {r['cpu_seconds']:.1f} s CPU (client + PostgreSQL "
            f"backend), load average {r['load']:.1f}; re-drop {r['redrop_seconds']:.1f} s; "
            f"peak RSS {r['rss_peak_mb']:.0f} MB",
            file=sys.stderr,
        )
        print(
            f"#   floor: a bare COPY of the same rows into an unindexed table, {floor:>8.0f} "
            f"rows/s ({r['floor_seconds']:.1f} s); the import runs at {rate / floor:.1%} of it",
            file=sys.stderr,
        )
    if len(results) > 1:
        small, large = results[0], results[-1]
        figures.emit(
            "import_rss_growth_ratio", large["rss_peak_mb"] / small["rss_peak_mb"], "x", digits=2
        )


if __name__ == "__main__":
    main()
