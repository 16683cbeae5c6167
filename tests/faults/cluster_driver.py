"""Drive the profile of scripts/cluster-up.sh from Python: start/stop it, kill or
restart a worker, trigger and (un)pause DAGs through the REST API as the UI does, and
read task instances and XComs from the metadata database.

Used by tests/faults/test_cluster.py and bench/cluster.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from automail.smtp_sink import free_port

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "cluster-up.sh"
VENV_BIN = Path(sys.executable).parent

# Fast detection for tests: a killed worker's task is failed ~20 s after its last
# heartbeat and retried 5 s later (production keeps Airflow's defaults, see README).
TEST_TUNING = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
    "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
    "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "5",
}


def pg_database_url(base_url: str, database: str) -> str:
    return make_url(base_url).set(database=database).render_as_string(hide_password=False)


def recreate_database(base_url: str, database: str) -> None:
    admin = create_engine(pg_database_url(base_url, "postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{database}"'))
    finally:
        admin.dispose()


def wait_for(
    what: str, probe: Callable[[], Any], timeout: float, every: float = 0.5, log: Path | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = "\n" + "\n".join(log.read_text().splitlines()[-40:]) if log else ""
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}{tail}")
        time.sleep(every)


@dataclass
class Cluster:
    home: Path
    pg_base_url: str  # any database on the server; the profile makes its own two
    name: str = "automail_cl"  # prefix of its metadata / store database names
    executor: str = "celery"
    workers: int = 2
    concurrency: int = 2
    smtp_port: int = 8025
    pool_slots: int = 4
    tuning: dict[str, str] = field(default_factory=lambda: dict(TEST_TUNING))
    env: dict[str, str] = field(default_factory=dict)
    _token: str | None = None
    _meta: Engine | None = None
    _pids: set[int] = field(default_factory=set)  # every process group started

    @property
    def metadata_db(self) -> str:
        return f"{self.name}_airflow"

    @property
    def store_db(self) -> str:
        return f"{self.name}_store"

    @property
    def store_url(self) -> str:
        return pg_database_url(self.pg_base_url, self.store_db)

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def _script_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.pop("AUTOMAIL_DB_URL", None)  # the profile's store is its connection automail_db
        env.update(self.tuning)
        env.update(
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            PYTHONPATH=os.pathsep.join([str(REPO / "include"), str(REPO / "plugins")]),
            AUTOMAIL_CLUSTER_DIR=str(self.home),
            AUTOMAIL_EXECUTOR=self.executor,
            AUTOMAIL_WORKERS=str(self.workers),
            AUTOMAIL_WORKER_CONCURRENCY=str(self.concurrency),
            AUTOMAIL_METADATA_DB=self.metadata_db,
            AUTOMAIL_STORE_DB=self.store_db,
            AUTOMAIL_API_PORT=str(free_port()),
            AUTOMAIL_REDIS_PORT=str(free_port()),
            AUTOMAIL_SMTP_PORT=str(self.smtp_port),
            AUTOMAIL_SMTP_POOL_SLOTS=str(self.pool_slots),
        )
        return env

    def _script(self, *args: str, timeout: float = 300) -> None:
        r = subprocess.run(
            ["bash", str(SCRIPT), *args],
            env=self._script_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if r.returncode != 0:
            raise RuntimeError(f"cluster-up.sh {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")

    def start(self, fresh: bool = True) -> Cluster:
        if fresh:
            recreate_database(self.pg_base_url, self.metadata_db)
            recreate_database(self.pg_base_url, self.store_db)
        self._script("start", timeout=600)
        self._remember_pids()
        out = subprocess.run(
            ["bash", "-c", f"source {self.home / 'env.sh'} && env -0"],
            capture_output=True,
            check=True,
        ).stdout
        self.env = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
        self._meta = create_engine(self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        return self

    def _remember_pids(self) -> None:
        self._pids |= {int(p.read_text()) for p in (self.home / "pids").glob("*.pid")}

    def stop(self) -> None:
        try:
            self._script("stop", timeout=180)
        finally:
            # Whatever the script could not stop (its pid files gone): end our own groups.
            for pid in self._pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            self._pids.clear()
            if self._meta is not None:
                self._meta.dispose()

    def restart_worker(self, n: int) -> None:
        self._script("worker", str(n), timeout=120)
        self._remember_pids()
        wait_for(
            f"worker{n} ready",
            lambda: "ready." in (self.logs / f"worker{n}.log").read_text().split("Restarting")[-1],
            120,
        )

    def stop_worker(self, n: int) -> None:
        self._script("stop-worker", str(n), timeout=120)

    def worker_pid(self, n: int) -> int:
        return int((self.home / "pids" / f"worker{n}.pid").read_text())

    def kill_worker(self, n: int) -> int:
        """SIGKILL a worker and every process under it (its task runners): a machine lost."""
        root = psutil.Process(self.worker_pid(n))
        procs = [root, *root.children(recursive=True)]
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(procs, timeout=10)
        with (self.logs / f"worker{n}.log").open("a") as log:
            log.write("\n--- killed by the test (SIGKILL); Restarting later ---\n")
        return len(procs)

    # --- the REST API, as the UI uses it ---------------------------------------------

    @property
    def base_url(self) -> str:
        return self.env["AIRFLOW__API__BASE_URL"]

    def api(self, method: str, path: str, body: dict | None = None) -> Any:
        if self._token is None:
            pw_file = (
                Path(self.env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
            )
            pw = json.loads(pw_file.read_text())["admin"]
            r = httpx.post(
                f"{self.base_url}/auth/token",
                json={"username": "admin", "password": pw},
                timeout=60,
            )
            r.raise_for_status()
            self._token = r.json()["access_token"]
        r = httpx.request(
            method,
            f"{self.base_url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=60,
        )
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json()

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def trigger(self, dag_id: str) -> str:
        """▷ Trigger: a manual run with no logical date and no data interval."""
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None})
        return run["dag_run_id"]

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["airflow", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def wait_dags_parsed(self, dag_ids: set[str], timeout: float = 180) -> None:
        def parsed() -> bool:
            with self.meta.connect() as c:
                got = set(c.scalars(text("SELECT dag_id FROM dag WHERE NOT is_stale")))
            return dag_ids <= got

        wait_for(
            f"DAGs {sorted(dag_ids)} parsed", parsed, timeout, log=self.logs / "dag-processor.log"
        )

    # --- the metadata database -------------------------------------------------------

    @property
    def meta(self) -> Engine:
        assert self._meta is not None, "cluster not started"
        return self._meta

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        with self.meta.connect() as c:
            return c.scalar(
                text("SELECT state FROM dag_run WHERE dag_id = :d AND run_id = :r"),
                {"d": dag_id, "r": run_id},
            )

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        return wait_for(
            f"{dag_id} {run_id} to finish",
            lambda: (s := self.run_state(dag_id, run_id)) in ("success", "failed") and s,
            timeout,
            log=self.logs / "scheduler.log",
        )

    def runs(self, dag_id: str) -> list[dict]:
        with self.meta.connect() as c:
            rows = c.execute(
                text(
                    "SELECT run_id, run_type, state, data_interval_start, start_date, end_date"
                    " FROM dag_run WHERE dag_id = :d ORDER BY id"
                ),
                {"d": dag_id},
            ).mappings()
            return [dict(r) for r in rows]

    def task_instances(self, dag_id: str, task_id: str | None = None) -> list[dict]:
        """Every try of every task instance of the DAG (current and history)."""
        cols = (
            "run_id, task_id, map_index, try_number, state, hostname,"
            " queued_dttm, start_date, end_date"
        )
        where = "dag_id = :d" + (" AND task_id = :t" if task_id else "")
        with self.meta.connect() as c:
            rows = c.execute(
                text(
                    f"SELECT {cols} FROM task_instance WHERE {where}"
                    f" UNION ALL SELECT {cols} FROM task_instance_history WHERE {where}"
                ),
                {"d": dag_id, "t": task_id},
            ).mappings()
            return [dict(r) for r in rows]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value",
             map_index: int = -1) -> Any:  # fmt: skip
        with self.meta.connect() as c:
            value = c.scalar(
                text(
                    "SELECT value FROM xcom WHERE dag_id = :d AND run_id = :r AND task_id = :t"
                    " AND key = :k AND map_index = :m"
                ),
                {"d": dag_id, "r": run_id, "t": task_id, "k": key, "m": map_index},
            )
        return json.loads(value) if isinstance(value, str) else value
