"""Benchmark: sending on the production profile (scripts/cluster-up.sh: PostgreSQL
metadata, CeleryExecutor, Redis, real scheduler) with 1 and then 2 Celery workers, the
same run size each time, through a loopback SMTP sink in its own process.

Figures (JSON lines, bench/figures.emit):
  cluster_send_mails_per_s_{1,2}_workers  mails / (first batch start → last batch end)
  cluster_send_speedup_2_workers          the ratio of the two
  cluster_batch_queued_to_running_s_p50/_max  the scheduler + executor overhead per
      mapped send_batch: task instance queued_dttm → start_date (2-worker run)

Each worker has `--concurrency` task slots (default 2) and the pool automail_smtp has 4,
so 1 worker runs 2 batches at once and 2 workers run 4. On a 2-core machine shared with
the scheduler and the api-server the speed-up is bounded by CPU, not by the design.

    .venv/bin/python bench/cluster.py --mails 20000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, insert, select

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests" / "faults"), str(REPO / "include")]

import figures  # noqa: E402
from cluster_driver import Cluster, wait_for  # noqa: E402

from automail import settings  # noqa: E402
from automail.db import make_engine, session_factory  # noqa: E402
from automail.models import Mail  # noqa: E402
from automail.sample_data import make_shop  # noqa: E402
from automail.smtp_sink import free_port  # noqa: E402

PG_URL = os.environ.get(
    "AUTOMAIL_BENCH_PG_URL", "postgresql+psycopg2://automail:automail@127.0.0.1:5432/automail_bench"
)


def queue(cluster: Cluster, n: int, tag: str, batch_size: int) -> None:
    engine = make_engine(cluster.store_url)
    with session_factory(engine)() as s:
        shop = make_shop(s, f"b{tag}", "ベンチ商店")
        s.flush()
        rows = [
            {
                "shop_id": shop.id,
                "kind": "order_confirmation",
                "source_key": f"bench:{tag}:{i}",
                "to_address": f"c{i}.{tag}@example.jp",
                "from_address": shop.from_address,
                "subject": f"ご注文ありがとうございます ({i})",
                "body_text": f"お客様 {i} 様\nご注文を承りました。\n",
            }
            for i in range(n)
        ]
        s.execute(insert(Mail), rows)
        settings.put(s, "send_batch_size", batch_size, actor="bench")
        s.commit()
    engine.dispose()


def sent(cluster: Cluster) -> int:
    engine = make_engine(cluster.store_url)
    with engine.connect() as c:
        n = c.scalar(select(func.count()).select_from(Mail).where(Mail.status == "sent"))
    engine.dispose()
    return n


def send_run(cluster: Cluster, n: int, tag: str, batch_size: int) -> dict:
    """Queue `n` mails, trigger a run, wait until all are sent; the batches of whatever
    send runs took them (a scheduled run may come first) are measured."""
    before = sent(cluster)
    queue(cluster, n, tag, batch_size)
    since = datetime.now(UTC)
    cluster.trigger("automail_send")
    wait_for(f"{n} mails sent", lambda: sent(cluster) - before >= n, 1800, every=1)
    wait_for(
        "send runs to finish",
        lambda: all(r["state"] in ("success", "failed") for r in cluster.runs("automail_send")),
        600,
    )
    tis = [
        t
        for t in cluster.task_instances("automail_send", "send_batch")
        if t["start_date"] and t["start_date"] >= since and t["state"] == "success"
    ]
    span = (max(t["end_date"] for t in tis) - min(t["start_date"] for t in tis)).total_seconds()
    waits = [(t["start_date"] - t["queued_dttm"]).total_seconds() for t in tis]
    hosts = {t["hostname"] for t in tis}
    return {"rate": n / span, "batches": len(tis), "waits": waits, "hosts": hosts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mails", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    batch_size = max(args.mails // args.batches, 1)
    home = Path(tempfile.mkdtemp(prefix="automail-cluster-bench-"))
    sink_port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "automail.smtp_sink", "--port", str(sink_port),
         "--dir", str(home / "sink")],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    cluster = Cluster(
        home / "cluster",
        PG_URL,
        name="automail_bench_cl",
        concurrency=args.concurrency,
        smtp_port=sink_port,
        tuning={},
    )
    try:
        cluster.start()
        cluster.wait_dags_parsed({"automail_send"})
        cluster.set_paused("automail_send", False)
        cluster.trigger("automail_send")  # warm-up: the first task pays the api-server's start
        time.sleep(30)
        results = {}
        cluster.stop_worker(2)
        results[1] = send_run(cluster, args.mails, "one", batch_size)
        cluster.restart_worker(2)
        results[2] = send_run(cluster, args.mails, "two", batch_size)
        cluster.set_paused("automail_send", True)
    finally:
        cluster.stop()
        sink.terminate()
        sink.wait(10)
        shutil.rmtree(home, ignore_errors=True)
    for w, r in results.items():
        figures.emit(f"cluster_send_mails_per_s_{w}_workers", r["rate"], "mails/s")
        print(f"# {w} worker(s): {r['batches']} batches on {sorted(r['hosts'])}", file=sys.stderr)
    figures.emit(
        "cluster_send_speedup_2_workers", results[2]["rate"] / results[1]["rate"], "x", digits=2
    )
    waits = results[2]["waits"]
    figures.emit("cluster_batch_queued_to_running_s_p50", statistics.median(waits), "s", digits=2)
    figures.emit("cluster_batch_queued_to_running_s_max", max(waits), "s", digits=2)


if __name__ == "__main__":
    main()
