"""A real `airflow api-server` for UI tests: temp AIRFLOW_HOME, SQLite metadata DB,
simple auth manager with fixed users/passwords, this repo's plugins folder and (with
`with_dags`) this repo's DAGs serialized into the metadata DB, as a dag-processor
would, so the screen can read `automail_send`'s paused state and next run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from automail.smtp_sink import free_port

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
USERS = {"admin": ("admin", "admin-test-pw"), "viewer": ("viewer", "viewer-test-pw")}
DAGS = REPO / "dags"


@dataclass
class AirflowServer:
    base_url: str
    home: Path
    log: Path
    env: dict[str, str]
    pid: int  # the api-server's main process (its workers are children)

    def airflow(self, *args: str) -> str:
        """Run an `airflow` CLI command against this server's metadata DB."""
        airflow = shutil.which("airflow", path=self.env["PATH"]) or "airflow"
        done = subprocess.run(
            [airflow, *args], env=self.env, check=True, capture_output=True, text=True, timeout=300
        )
        return done.stdout

    def token(self, user: str) -> str:
        _, password = USERS[user]
        r = httpx.post(
            f"{self.base_url}/auth/token", json={"username": user, "password": password}, timeout=30
        )
        r.raise_for_status()
        return r.json()["access_token"]


def _env(
    home: Path, port: int, store_url: str, smtp_port: int, with_dags: bool = False, workers: int = 1
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__AUTH_MANAGER=(
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=",".join(
            f"{name}:{role}" for name, (role, _) in USERS.items()
        ),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(home / "passwords.json"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS if with_dags else home / "dags"),
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__SECRET_KEY="automail-ui-test-secret",
        AIRFLOW__API_AUTH__JWT_SECRET="automail-ui-test-jwt-secret",
        AIRFLOW__API__WORKERS=str(workers),
        AUTOMAIL_DB_URL=store_url,
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


@contextmanager
def running_airflow(
    home: Path,
    store_url: str,
    smtp_port: int,
    *,
    with_dags: bool = False,
    workers: int = 1,
    settings: dict[str, str] | None = None,  # more AIRFLOW__… settings (bench: logging)
) -> Iterator[AirflowServer]:
    (home / "dags").mkdir(parents=True, exist_ok=True)
    (home / "passwords.json").write_text(json.dumps({name: pw for name, (_, pw) in USERS.items()}))
    port = free_port()
    env = {**_env(home, port, store_url, smtp_port, with_dags, workers), **(settings or {})}
    airflow = shutil.which("airflow", path=env["PATH"]) or "airflow"
    subprocess.run(
        [airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=180
    )
    if with_dags:  # the DAG rows (paused, next run) a dag-processor would write
        subprocess.run(
            [airflow, "dags", "reserialize"], env=env, check=True, capture_output=True, timeout=300
        )
    log = home / "api-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [airflow, "api-server", "--port", str(port), "--host", "127.0.0.1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = AirflowServer(f"http://127.0.0.1:{port}", home, log, env, proc.pid)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"api-server exited: {log.read_text()[-3000:]}")
            try:
                if (
                    httpx.get(f"{server.base_url}/api/v2/monitor/health", timeout=2).status_code
                    == 200
                ):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"api-server did not start: {log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield server
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
