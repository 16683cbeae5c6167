"""Shared fixtures: the mail store on SQLite and on PostgreSQL, and a real SMTP sink.

Every test that takes `engine`/`session` runs once per store. PostgreSQL is found at
AUTOMAIL_TEST_PG_URL (default: the role and database scripts/postgres-up.sh makes);
when it is unreachable the postgres runs are skipped, except under CI=true where
that is a failure: CI must test the production store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from automail import migrate
from automail.db import make_engine, session_factory
from automail.models import Base
from automail.smtp_sink import SmtpSink

# One Airflow home for the whole test process, set before anything imports airflow
# (its config is read once, at import). DAG tests share it via the `airflow_db` fixture.
REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="automail-airflow-"))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("AUTOMAIL_SECRET_KEY", "test-secret-key")

PG_URL = os.environ.get(
    "AUTOMAIL_TEST_PG_URL", "postgresql+psycopg2://automail:automail@127.0.0.1:5432/automail_test"
)
STORES = [s for s in os.environ.get("AUTOMAIL_TEST_STORES", "sqlite,postgres").split(",") if s]
# ../shared beside the repo (CI checks it out there); AUTOMAIL_SHARED points elsewhere.
SHARED = Path(os.environ.get("AUTOMAIL_SHARED") or REPO.parent / "shared")


def _ensure_pg_database(url: str) -> None:
    """Create the test database if missing (each developer/agent may use its own)."""
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}
            )
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    finally:
        admin.dispose()


def _pg_available() -> str | None:
    try:
        _ensure_pg_database(PG_URL)
        probe = create_engine(PG_URL)
        with probe.connect():
            pass
        probe.dispose()
        return None
    except Exception as exc:  # unreachable server, bad credentials
        return f"PostgreSQL at {make_url(PG_URL).render_as_string()} unreachable: {exc}"


def _reset_schema(url: str) -> None:
    """Drop everything and migrate to head, so each session starts from the migrations."""
    engine = make_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    migrate.upgrade(url)


@pytest.fixture(scope="session", params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'automail.db'}"
    else:
        why = _pg_available()
        if why:
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI must run the PostgreSQL store: {why}")
            pytest.skip(why)
        url = PG_URL
    _reset_schema(url)
    return url


@pytest.fixture(scope="session")
def _session_engine(store_url: str) -> Iterator[Engine]:
    engine = make_engine(store_url)
    yield engine
    engine.dispose()


def _truncate_all(engine: Engine) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                conn.execute(text(f"DELETE FROM {name}"))
            has_seq = conn.scalar(
                text("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'")
            )
            if has_seq:
                conn.execute(text("DELETE FROM sqlite_sequence"))


@pytest.fixture
def engine(_session_engine: Engine, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """A migrated, empty store; also made the default for code that resolves the URL."""
    _truncate_all(_session_engine)
    monkeypatch.setenv("AUTOMAIL_DB_URL", store_url)
    return _session_engine


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    s = session_factory(engine)()
    yield s
    s.rollback()
    s.close()


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """Airflow's metadata DB (SQLite in AIRFLOW_HOME), migrated once per test session."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    return os.environ["AIRFLOW_HOME"]


@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[SmtpSink]:
    with SmtpSink(tmp_path / "sink") as sink:
        yield sink


@pytest.fixture(scope="session")
def bounce_corpus() -> Path:
    """The shared bounce corpus; missing, its tests skip, except under CI=true where
    that fails the run (as a missing PostgreSQL does): CI must test real bounces."""
    path = SHARED / "corpora" / "bounces"
    if not (path / "bounces.csv").is_file():
        why = f"shared bounce corpus not found at {path} (CI checks shared/ out beside the repo)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the bounce corpus tests: {why}")
        pytest.skip(why)
    return path
