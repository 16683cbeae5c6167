"""Order to confirmation latency with a real scheduler (issue 15).

Starts Airflow the way production runs it, minus the UI: `airflow api-server` (the
task execution API), `airflow scheduler` (LocalExecutor) and `airflow dag-processor`
on a temporary AIRFLOW_HOME (SQLite metadata DB), a SQLite mail store and a loopback
SMTP sink. Order confirmation is switched on and `automail_import`,
`automail_create_transactional` and `automail_send` are unpaused. Then one CSV of N
orders is dropped into the import folder and the time until each confirmation is in
the sink is measured: drop -> import (polled every minute) -> Asset -> creation ->
Asset -> send. Prints p50/p95/max seconds as JSON lines.

    .venv/bin/python bench/latency.py --orders 100
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import figures

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DAGS = ("automail_import", "automail_create_transactional", "automail_send")


def _env(home: Path, port: int, store: str, smtp_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=f"{REPO / 'include'}{os.pathsep}{REPO / 'plugins'}",
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__WORKERS="1",
        AIRFLOW__API_AUTH__JWT_SECRET="automail-latency-bench",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
        AUTOMAIL_DB_URL=store,
        AIRFLOW_CONN_AUTOMAIL_SMTP=json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": smtp_port,
                "extra": {"disable_ssl": True, "disable_tls": True},
            }
        ),
    )
    return env


def _airflow(env: dict, *args: str, timeout: float = 300) -> str:
    out = subprocess.run(
        [str(BIN / "airflow"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args)}: {out.stderr[-2000:]}")
    return out.stdout


def _prepare_store(store: str, drop: Path, now: datetime) -> None:
    from automail import migrate, settings
    from automail.creation import set_kind
    from automail.db import make_engine, session_scope
    from automail.rendering import install_default_templates
    from automail.sample_data import make_shop

    migrate.upgrade(store)
    engine = make_engine(store)
    with session_scope(engine) as s:
        install_default_templates(s)
        shop = make_shop(s, "tea")
        set_kind(s, shop, "order_confirmation", True, now=now)
        settings.put(s, "import_drop_location", str(drop))
        settings.put(s, "import_settle_seconds", 0)
        settings.put(s, "creation_partitions", 1)
    engine.dispose()


def _drop(drop: Path, n: int, now: datetime) -> float:
    from automail.sample_data import ORDER_HEADER, _write

    folder = drop / "tea" / "orders"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        [f"LAT-{i:05d}", now.isoformat(), f"C{i}", f"lat{i}@example.jp", "山田 花子"]
        + [""] * (len(ORDER_HEADER) - 5)
        for i in range(n)
    ]
    tmp = folder / ".orders.csv.part"
    _write(tmp, ORDER_HEADER, rows)
    t0 = time.time()
    tmp.rename(folder / "orders.csv")  # appears whole
    return t0


def _arrivals(sink: Path) -> dict[str, float]:
    """To address -> when the sink saved its message (file mtime)."""
    from email.parser import BytesHeaderParser

    got = {}
    parser = BytesHeaderParser()
    for path in sink.glob("*.eml"):
        with path.open("rb") as fh:
            to = str(parser.parse(fh).get("To", ""))
        got[to] = path.stat().st_mtime
    return got


def _run_types(home: Path) -> dict[str, set[str]]:
    """DAG id -> the run types it ran (scheduled, asset_triggered, …), from Airflow's DB."""
    import sqlite3

    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute("SELECT dag_id, run_type FROM dag_run").fetchall()
    types: dict[str, set[str]] = {}
    for dag_id, run_type in rows:
        types.setdefault(dag_id, set()).add(run_type)
    return types


def run_chain(orders: int, timeout: float = 900, keep: bool = False) -> dict:
    """Drop `orders` orders with a real scheduler running; returns the latencies (s)
    of their confirmations and the run types each DAG ran."""
    from automail.smtp_sink import free_port

    home = Path(tempfile.mkdtemp(prefix="automail-latency-"))
    procs: list[subprocess.Popen] = []
    try:
        port, smtp_port = free_port(), free_port()
        store = f"sqlite:///{home / 'automail.db'}"
        env = _env(home, port, store, smtp_port)
        sink = home / "sink"
        sink.mkdir()
        now = datetime.now(UTC).replace(microsecond=0)
        _prepare_store(store, home / "drop", now - timedelta(minutes=5))
        _airflow(env, "db", "migrate")
        _airflow(env, "pools", "set", "automail_smtp", "4", "SMTP")
        for name, cmd in (
            ("sink", [sys.executable, "-m", "automail.smtp_sink", "--port", str(smtp_port),
                      "--dir", str(sink)]),
            ("api-server", [str(BIN / "airflow"), "api-server", "--port", str(port)]),
            ("scheduler", [str(BIN / "airflow"), "scheduler"]),
            ("dag-processor", [str(BIN / "airflow"), "dag-processor"]),
        ):  # fmt: skip
            log = (home / f"{name}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )  # fmt: skip
            )
        deadline = time.monotonic() + 300
        while not all(d in _airflow(env, "dags", "list", "-o", "json") for d in DAGS):
            if time.monotonic() > deadline:
                raise RuntimeError(f"DAGs not parsed; see {home}/dag-processor.log")
            time.sleep(3)
        for dag in DAGS:
            _airflow(env, "dags", "unpause", dag)
        time.sleep(20)  # the unpaused DAGs' first runs (nothing to do yet)
        t0 = _drop(home / "drop", orders, datetime.now(UTC).replace(microsecond=0))
        want = {f"lat{i}@example.jp" for i in range(orders)}
        deadline = time.monotonic() + timeout
        got: dict[str, float] = {}
        while time.monotonic() < deadline and len(got) < len(want):
            got = {to: at for to, at in _arrivals(sink).items() if to in want}
            time.sleep(1)
        if len(got) < len(want):
            keep = True
            raise RuntimeError(f"{len(got)} of {len(want)} confirmations arrived; logs in {home}")
        return {"latencies": sorted(at - t0 for at in got.values()), "runs": _run_types(home)}
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if not keep:
            shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    result = run_chain(args.orders, args.timeout, os.environ.get("KEEP_LATENCY_HOME") == "1")
    lat = result["latencies"]
    p95 = lat[max(0, int(len(lat) * 0.95) - 1)]
    figures.emit("latency_order_to_mail_p50_s", statistics.median(lat), "s")
    figures.emit("latency_order_to_mail_p95_s", p95, "s", 60.0, figures.lower_is_better(p95, 60.0))
    figures.emit("latency_order_to_mail_max_s", lat[-1], "s")
    print(f"# runs by type: {result['runs']}", file=sys.stderr)


if __name__ == "__main__":
    main()
