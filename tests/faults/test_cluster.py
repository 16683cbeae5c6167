"""The production profile for real: PostgreSQL metadata, CeleryExecutor with Redis and
two Celery workers (scripts/cluster-up.sh), the real scheduler and dag-processor
running the DAGs — no dag.test. Then one worker is SIGKILLed mid-send and one
mid-creation-partition: nothing is lost, nothing is made or delivered twice.

Also: a manual trigger (▷ / `airflow dags trigger`, no data interval) of every DAG, the
wait between unpausing `automail_send` and its first run, and the UI quick start's
LocalExecutor profile surviving `airflow backfill create` with the scheduler running.

Prints `cluster: mails=… workers_used=2 kills=2 lost=0 duplicated=0` (fault totals:
`cluster_lost`, `cluster_duplicated`). Needs PostgreSQL and Debian's redis-server
(scripts/services-up.sh); missing either is a skip, and a failure under CI=true.
Knob: CLUSTER_MAILS (20000) mails created and sent in the first scenario.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import _ensure_pg_database
from sqlalchemy import Engine, func, insert, select, text

from automail import settings
from automail.creation import set_kind
from automail.db import make_engine, session_factory
from automail.models import Mail, Shop
from automail.rendering import install_default_templates
from automail.sample_data import make_shop
from automail.sending.smtp import DEFAULT_CONNECTIONS

from .cluster_driver import Cluster, wait_for
from .conftest import SinkProcess, env_int, judge

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

PG_URL = os.environ.get(
    "AUTOMAIL_TEST_PG_URL", "postgresql+psycopg2://automail:automail@127.0.0.1:5432/automail_test"
)
ALL_DAGS = {
    "automail_create_transactional",
    "automail_send",
    "automail_campaigns",
    "automail_step_mails",
    "automail_bounces",
    "automail_maintenance",
}
SLOW = "slow.example.jp"  # the sink answers mail to this domain after 15 ms: a kill lands mid-batch
TOTALS: dict[str, object] = {"mails": 0, "kills": 0, "lost": 0, "duplicated": 0, "hosts": set()}


def _unavailable() -> str | None:
    if not shutil.which("redis-server"):
        return "redis-server not installed (scripts/services-up.sh installs it)"
    try:
        _ensure_pg_database(PG_URL)  # as the store fixture does: each run may use its own
        probe = make_engine(PG_URL)
        with probe.connect():
            pass
        probe.dispose()
    except Exception as exc:
        return f"PostgreSQL unreachable: {exc}"
    return None


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """Outside pytest's basetemp: other pytest sessions on the machine rotate that away."""
    path = Path(tempfile.mkdtemp(prefix="automail-cluster-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def sink(workdir: Path):
    extra = ["--delay-ms", "15", "--delay-domain", SLOW]
    with SinkProcess(workdir / "sink", extra=extra) as s:
        yield s


@pytest.fixture(scope="module")
def cluster(workdir: Path, sink: SinkProcess, fault_totals):
    why = _unavailable()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the cluster test: {why}")
        pytest.skip(why)
    db = os.environ.get("AUTOMAIL_TEST_PG_URL", PG_URL).rsplit("/", 1)[-1]
    c = Cluster(workdir / "celery", PG_URL, name=f"{db}_cl", smtp_port=sink.port)
    c.start()
    try:
        c.wait_dags_parsed(ALL_DAGS)
        yield c
    finally:
        c.stop()
        line = (
            f"cluster: mails={TOTALS['mails']} workers_used={len(TOTALS['hosts'])} "
            f"kills={TOTALS['kills']} lost={TOTALS['lost']} duplicated={TOTALS['duplicated']}"
        )
        print("\n" + line)
        fault_totals.lines.append(line)
        fault_totals.count("cluster_lost", int(TOTALS["lost"]))
        fault_totals.count("cluster_duplicated", int(TOTALS["duplicated"]))
        fault_totals.kills += int(TOTALS["kills"])
        fault_totals.mails += int(TOTALS["mails"])


@pytest.fixture(scope="module")
def store(cluster: Cluster) -> Engine:
    engine = make_engine(cluster.store_url)
    yield engine
    engine.dispose()


def _put(store: Engine, **values: object) -> None:
    with session_factory(store)() as s:
        for key, value in values.items():
            settings.put(s, key, value, actor="cluster-test")
        s.commit()


def _add_orders(store: Engine, shop_id: int, n: int, tag: str, within_s: int) -> None:
    """`n` orders (and their customers) placed within the last `within_s` seconds."""
    now = datetime.now(UTC)
    with store.begin() as conn:
        conn.execute(
            text("""
            INSERT INTO customers (shop_id, name, email, prefecture, signed_up_at,
                marketing_opt_in, address_valid, address_cleaned, consecutive_failures)
            SELECT :shop, '山田 太郎' || g, 'u' || g || '.' || :tag || '@example.jp', '東京都',
                   :now - interval '200 days', true, true, false, 0
            FROM generate_series(1, :n) g"""),
            {"shop": shop_id, "n": n, "now": now, "tag": tag},
        )
        conn.execute(
            text("""
            INSERT INTO orders (shop_id, customer_id, order_number, ordered_at, purchase_count,
                subtotal, shipping_fee, tax, total, payment_method)
            SELECT :shop, c.id, :tag || '-' || c.id,
                   :now - make_interval(secs => 1 + (c.id * 7919) % :within), 1,
                   2160, 550, 216, 2926, 'クレジットカード'
            FROM customers c WHERE c.email LIKE :pat"""),
            {"shop": shop_id, "tag": tag, "now": now, "within": within_s, "pat": f"%.{tag}@%"},
        )
        conn.execute(
            text("""
            INSERT INTO order_lines (order_id, sku, name, quantity, unit_price)
            SELECT o.id, 'TEA-001', '静岡産 深蒸し煎茶 100g', 2, 1080 FROM orders o
            WHERE o.order_number LIKE :pat"""),
            {"pat": f"{tag}-%"},
        )


def _shops(store: Engine) -> dict[str, int]:
    with session_factory(store)() as s:
        if not s.scalar(select(func.count()).select_from(Shop)):
            install_default_templates(s)
            for code in ("tea", "sweets"):
                make_shop(s, code, f"{code} shop")
            s.commit()
        return {shop.code: shop.id for shop in s.scalars(select(Shop))}


def _enable_order_confirmations(store: Engine) -> None:
    with session_factory(store)() as s:
        for shop in s.scalars(select(Shop)):
            set_kind(s, shop, "order_confirmation", True, now=datetime.now(UTC))
        s.commit()


def _count(store: Engine, *where) -> int:  # noqa: ANN002
    with store.connect() as c:
        return c.scalar(select(func.count()).select_from(Mail).where(*where))


def _leases_lapsed(store: Engine) -> bool:
    return _count(store, Mail.claimed_by.is_not(None), Mail.lease_until > datetime.now(UTC)) == 0


def _send_runs_done(cluster: Cluster) -> bool:
    return all(r["state"] in ("success", "failed") for r in cluster.runs("automail_send"))


# --- 1. a manual trigger of every DAG; the wait after unpausing ---------------------------


def test_manual_trigger_of_every_dag_succeeds_with_the_real_scheduler(cluster, store) -> None:
    _shops(store)
    for dag_id in sorted(ALL_DAGS - {"automail_send"}):
        cluster.set_paused(dag_id, False)
    # The exact command for creation; the UI's ▷ (REST, no logical date) for the rest.
    r = cluster.cli("dags", "trigger", "automail_create_transactional")
    assert r.returncode == 0, r.stderr[-2000:]
    manual = {
        "automail_create_transactional": wait_for(
            "the CLI-triggered run",
            lambda: [
                x["run_id"]
                for x in cluster.runs("automail_create_transactional")
                if x["run_type"] == "manual"
            ],  # fmt: skip
            60,
        )[0]
    }
    for dag_id in sorted(ALL_DAGS - {"automail_create_transactional", "automail_send"}):
        manual[dag_id] = cluster.trigger(dag_id)
    # Sending: time from unpausing to its first run, then a manual run of it too.
    unpaused = time.monotonic()
    cluster.set_paused("automail_send", False)
    wait_for("the first send run after unpausing", lambda: cluster.runs("automail_send"), 120)
    first_run_wait = time.monotonic() - unpaused
    manual["automail_send"] = cluster.trigger("automail_send")
    states = {dag_id: cluster.wait_run(dag_id, run_id, 300) for dag_id, run_id in manual.items()}
    for dag_id in ALL_DAGS:
        cluster.set_paused(dag_id, True)
    wait_for("send runs to finish", lambda: _send_runs_done(cluster), 300)
    print(f"\ncluster: first send run {first_run_wait:.1f} s after unpausing")
    assert states == dict.fromkeys(ALL_DAGS, "success"), states
    assert first_run_wait < 60, "the first send run starts within a scheduler loop or two"
    with cluster.meta.connect() as c:  # the manual runs really had no data interval
        intervals = c.execute(
            text("SELECT data_interval_end FROM dag_run WHERE run_type = 'manual'")
        ).scalars()
        assert set(intervals) == {None}


# --- 2. 20,000 mails: created over partitions, sent in mapped batches by both workers ------


def test_mails_created_and_sent_by_both_workers_exactly_once(cluster, store, sink) -> None:
    n = env_int("CLUSTER_MAILS", 20_000)
    shops = _shops(store)
    per_shop = n // len(shops)
    for code, shop_id in shops.items():
        _add_orders(store, shop_id, per_shop, f"big{code}", within_s=5 * 24 * 3600)
    _put(store, creation_partitions=4, creation_chunk_size=2000, send_batch_size=max(n // 16, 50))
    _enable_order_confirmations(store)
    since = datetime.now(UTC)
    cluster.set_paused("automail_create_transactional", False)
    run_id = cluster.trigger("automail_create_transactional")
    assert cluster.wait_run("automail_create_transactional", run_id, 600) == "success"
    cluster.set_paused("automail_create_transactional", True)
    with store.connect() as c:
        created = c.scalar(select(func.count()).select_from(Mail))
    assert created == per_shop * len(shops)
    partitions = cluster.task_instances("automail_create_transactional", "create_partition")
    assert len({t["map_index"] for t in partitions if t["run_id"] == run_id}) == 4

    cluster.set_paused("automail_send", False)
    cluster.trigger("automail_send")
    wait_for("every mail sent", lambda: _count(store, Mail.status == "sent") == created, 900,
             every=2, log=cluster.logs / "scheduler.log")  # fmt: skip
    cluster.set_paused("automail_send", True)
    wait_for("send runs to finish", lambda: _send_runs_done(cluster), 300)

    batches = [
        t for t in cluster.task_instances("automail_send", "send_batch")
        if t["start_date"] and t["start_date"] >= since and t["state"] == "success"
    ]  # fmt: skip
    hosts = Counter(t["hostname"] for t in batches)
    print(f"\ncluster: {created} mails, {len(batches)} send batches, hosts {dict(hosts)}")
    assert len(batches) >= 8
    assert set(hosts) == {"worker1", "worker2"}, hosts
    with session_factory(store)() as s:
        ids = list(s.scalars(select(Mail.id)))
        v = judge(s, ids, sink.message_id_counts())
    assert (v.sent, v.lost, v.duplicated, v.strays) == (len(ids), [], [], [])
    TOTALS["mails"] += len(ids)
    TOTALS["hosts"] |= set(hosts)


# --- 3. a worker SIGKILLed mid-send --------------------------------------------------------


def _queue_slow_mails(store: Engine, shop_id: int, n: int, tag: str) -> list[int]:
    rows = [
        {
            "shop_id": shop_id,
            "kind": "order_confirmation",
            "source_key": f"cluster:{tag}:{i}",
            "to_address": f"c{i}.{tag}@{SLOW}",
            "from_address": "shop@tea.example.jp",
            "subject": f"ご注文ありがとうございます ({tag}-{i})",
            "body_text": f"お客様 {i} 様\nご注文を承りました。\n",
        }
        for i in range(n)
    ]
    with session_factory(store)() as s:
        s.execute(insert(Mail), rows)
        s.commit()
        return list(s.scalars(select(Mail.id).where(Mail.source_key.like(f"cluster:{tag}:%"))))


def _sent_of(store: Engine, ids: list[int]) -> int:
    with store.connect() as c:
        return c.scalar(
            select(func.count()).select_from(Mail).where(Mail.id.in_(ids), Mail.status == "sent")
        )


def _running_partial_batch(cluster: Cluster, store: Engine) -> tuple[dict, list[int]] | None:
    """A send_batch try running on some worker with part of its batch sent."""
    for ti in cluster.task_instances("automail_send", "send_batch"):
        if ti["state"] != "running" or not ti["hostname"]:
            continue
        batches = cluster.xcom("automail_send", ti["run_id"], "plan") or []
        batch = batches[ti["map_index"]]["batch"]  # the plan maps {batch, smtp_conn_id}
        if 20 <= _sent_of(store, batch) <= len(batch) - 60:
            return ti, batch
    return None


def test_worker_killed_mid_send_loses_nothing_and_sends_nothing_twice(cluster, store, sink) -> None:
    shop_id = _shops(store)["tea"]
    ids = _queue_slow_mails(store, shop_id, 2400, "kill-send")
    _put(store, send_batch_size=300, lease_seconds=30)
    cluster.set_paused("automail_send", False)
    cluster.trigger("automail_send")
    ti, batch = wait_for(
        "a batch mid-send", lambda: _running_partial_batch(cluster, store), 300, every=0.2
    )
    victim = int(ti["hostname"].removeprefix("worker"))
    cluster.kill_worker(victim)
    sent_at_kill = _sent_of(store, batch)
    TOTALS["kills"] += 1

    def retried() -> dict | None:
        tries = [
            t for t in cluster.task_instances("automail_send", "send_batch")
            if (t["run_id"], t["map_index"]) == (ti["run_id"], ti["map_index"])
        ]  # fmt: skip
        done = [t for t in tries if t["try_number"] > ti["try_number"] and t["state"] == "success"]
        return done[0] if done else None

    retry = wait_for("the killed batch's retry on the other worker", retried, 300, every=1,
                     log=cluster.logs / "scheduler.log")  # fmt: skip
    assert retry["hostname"] != ti["hostname"], "the dead worker cannot have run the retry"
    assert cluster.wait_run("automail_send", ti["run_id"], 300) == "success"
    summary = cluster.xcom("automail_send", ti["run_id"], "summarize")
    # The run's summary accounts for every claimed mail: sent by this run's tries, or
    # skipped by the retry (sent by the killed try before it died, or in doubt).
    outcomes = ("sent", "retry_scheduled", "failed", "refused", "in_doubt", "skipped")
    assert sum(summary[k] for k in outcomes) + summary["deferred_rate"] == summary["claimed"]
    assert summary["skipped"] >= sent_at_kill
    # The in-doubt group's lease lapses; the next run holds it for a person, unsent.
    wait_for("the in-doubt group's lease to lapse", lambda: _leases_lapsed(store), 120, every=2)
    recovery = cluster.trigger("automail_send")
    assert cluster.wait_run("automail_send", recovery, 300) == "success"
    assert cluster.xcom("automail_send", recovery, "summarize")["recovered_in_doubt"] == _count(
        store, Mail.id.in_(ids), Mail.status == "held"
    )
    cluster.set_paused("automail_send", True)
    wait_for("send runs to finish", lambda: _send_runs_done(cluster), 300)
    with session_factory(store)() as s:
        v = judge(s, ids, sink.message_id_counts())
    print(
        f"\ncluster kill-send: worker{victim} killed with {sent_at_kill}/{len(batch)} of its batch"
        f" sent; retry on {retry['hostname']}; sent={v.sent} in_doubt={v.in_doubt}"
    )
    assert (v.lost, v.duplicated) == ([], [])
    assert v.sent + v.in_doubt == len(ids)
    # In doubt: per killed try, the group on the wire and the next one, whose in_flight
    # rows are committed while the first is sent (batch.py pipelines them).
    killed = [
        t for t in cluster.task_instances("automail_send", "send_batch")
        if t["run_id"] == ti["run_id"] and t["hostname"] == ti["hostname"]
        and t["state"] != "success"
    ]  # fmt: skip
    assert 1 <= len(killed) <= 2  # the worker's task slots
    assert {t["state"] for t in killed} <= {"failed", "up_for_retry"}  # by the scheduler
    # Per killed try: the group on the wire and the next one, on each of its lanes (the
    # relay connection's `connections`, default DEFAULT_CONNECTIONS).
    group = settings.SETTINGS["send_commit_group"].default
    assert v.in_doubt <= 2 * len(killed) * group * DEFAULT_CONNECTIONS
    TOTALS["mails"] += len(ids)
    TOTALS["lost"] += len(v.lost)
    TOTALS["duplicated"] += len(v.duplicated)
    TOTALS["hosts"] |= {ti["hostname"], retry["hostname"]}
    cluster.restart_worker(victim)


# --- 4. a worker SIGKILLed mid-creation-partition -----------------------------------------


def _created_in_partition(store: Engine, tag: str, partition: int, partitions: int) -> int:
    with store.connect() as c:
        return c.scalar(
            text(
                "SELECT count(*) FROM mails m JOIN orders o ON o.id = m.order_id"
                " WHERE o.order_number LIKE :pat AND o.id % :n = :p"
            ),
            {"pat": f"{tag}-%", "n": partitions, "p": partition},
        )


def test_worker_killed_mid_creation_partition_retry_creates_the_rest_once(cluster, store) -> None:
    n, tag, partitions = 10_000, "killcreate", 2
    shop_id = _shops(store)["tea"]
    _add_orders(store, shop_id, n, tag, within_s=1800)
    _enable_order_confirmations(store)
    with store.connect() as c:
        expected = dict(
            c.execute(
                text(
                    "SELECT id % :n, count(*) FROM orders WHERE order_number LIKE :pat GROUP BY 1"
                ),
                {"n": partitions, "pat": f"{tag}-%"},
            ).all()
        )
    _put(store, creation_partitions=partitions, creation_chunk_size=200)
    cluster.set_paused("automail_create_transactional", False)
    run_id = cluster.trigger("automail_create_transactional")

    def mid_partition() -> dict | None:
        for ti in cluster.task_instances("automail_create_transactional", "create_partition"):
            if ti["run_id"] == run_id and ti["state"] == "running" and ti["hostname"]:
                done = _created_in_partition(store, tag, ti["map_index"], partitions)
                if 0 < done < expected[ti["map_index"]] - 1000:
                    return ti
        return None

    ti = wait_for("a creation partition half done", mid_partition, 300, every=0.2)
    victim = int(ti["hostname"].removeprefix("worker"))
    cluster.kill_worker(victim)
    at_kill = _created_in_partition(store, tag, ti["map_index"], partitions)
    TOTALS["kills"] += 1
    assert cluster.wait_run("automail_create_transactional", run_id, 600) == "success"
    cluster.set_paused("automail_create_transactional", True)
    tries = [
        t for t in cluster.task_instances("automail_create_transactional", "create_partition")
        if (t["run_id"], t["map_index"]) == (run_id, ti["map_index"])
    ]  # fmt: skip
    final = max(tries, key=lambda t: t["try_number"])
    dead = [t for t in tries if t["try_number"] == ti["try_number"]]
    assert [t["state"] for t in dead] in (["failed"], ["up_for_retry"]), dead
    assert final["try_number"] > ti["try_number"] and final["hostname"] != ti["hostname"]
    with store.connect() as c:
        per_order = c.execute(
            text(
                "SELECT o.id, count(m.id) FROM orders o LEFT JOIN mails m ON m.order_id = o.id"
                " AND m.kind = 'order_confirmation' WHERE o.order_number LIKE :pat GROUP BY o.id"
            ),
            {"pat": f"{tag}-%"},
        ).all()
    missing = [oid for oid, k in per_order if k == 0]
    twice = [oid for oid, k in per_order if k > 1]
    print(
        f"\ncluster kill-create: worker{victim} killed at {at_kill}/{expected[ti['map_index']]}"
        f" of partition {ti['map_index']}; retry on {final['hostname']}"
    )
    assert (len(per_order), missing, twice) == (n, [], [])
    TOTALS["mails"] += n
    TOTALS["lost"] += len(missing)
    TOTALS["duplicated"] += len(twice)
    TOTALS["hosts"] |= {ti["hostname"], final["hostname"]}
    cluster.restart_worker(victim)


# --- 5. the UI quick start's profile (LocalExecutor) survives a backfill ------------------


def test_ui_quick_start_profile_runs_backfill_with_the_scheduler(cluster, workdir) -> None:
    cluster.stop()  # one profile at a time on 2 cores
    db = os.environ.get("AUTOMAIL_TEST_PG_URL", PG_URL).rsplit("/", 1)[-1]
    local = Cluster(workdir / "ui", PG_URL, name=f"{db}_ui", executor="local")
    local.start()
    try:
        local.wait_dags_parsed({"automail_create_transactional"})
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        start = end - timedelta(hours=3)
        local.set_paused("automail_create_transactional", False)
        r = local.cli(
            "backfill", "create", "--dag-id", "automail_create_transactional",
            "--from-date", start.isoformat(), "--to-date", end.isoformat(),
        )  # fmt: skip
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        backfill = lambda: [x for x in local.runs("automail_create_transactional")  # noqa: E731
                            if x["run_type"] == "backfill"]  # fmt: skip
        wait_for("backfill runs", lambda: len(backfill()) >= 3, 120)
        wait_for(
            "backfill runs to finish",
            lambda: all(x["state"] in ("success", "failed") for x in backfill()),
            600,
            every=2,
            log=local.logs / "scheduler.log",
        )
        assert {x["state"] for x in backfill()} == {"success"}
        assert (local.home / "pids" / "scheduler.pid").exists()
        assert "database is locked" not in (local.logs / "scheduler.log").read_text()
    finally:
        local.stop()
