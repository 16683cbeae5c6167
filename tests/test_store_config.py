"""Reaching the store: a broken `automail_db` connection, a mistyped SQLite path and an
unmigrated store each fail with one line naming the cause (issue 12.7, 12.13)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from automail import db
from automail.cli import main as cli_main
from automail.db import StoreConnectionError, StoreNotMigrated

BROKEN_CONNECTIONS = {
    "truncated JSON": '{"conn_type": "sqlite", "host": "/tmp/x.db"',
    "unknown type": '{"conn_type": "mysqlx", "host": "h"}',
    "sqlite without a path": '{"conn_type": "sqlite"}',
    "not a URI": "not a url",
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project home with no store URL of the test run leaking in."""
    monkeypatch.setenv("AUTOMAIL_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.delenv("AUTOMAIL_DB_URL", raising=False)
    monkeypatch.delenv(db.ENV_VAR, raising=False)
    return tmp_path


@pytest.mark.parametrize("case", list(BROKEN_CONNECTIONS))
def test_broken_connection_fails_naming_it_and_writes_no_local_store(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    monkeypatch.setenv(db.ENV_VAR, BROKEN_CONNECTIONS[case])
    with pytest.raises(StoreConnectionError, match="automail_db"):
        db.resolve_url()
    assert cli_main(["settings", "list"]) == 2
    err = capsys.readouterr().err
    assert "automail_db" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (home / "var").exists()  # nothing fell back to the embedded SQLite file


def test_no_connection_at_all_uses_the_embedded_default(home: Path) -> None:
    assert db.resolve_url() == f"sqlite:///{home / 'var' / 'automail.db'}"
    db.make_engine().dispose()
    assert (home / "var").is_dir()  # only the default's own folder is created


def test_sqlite_connection_in_uri_form_is_read(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(db.ENV_VAR, f"sqlite:///{home}/store.db")
    assert db.resolve_url() == f"sqlite:///{home}/store.db"


def test_mistyped_sqlite_path_creates_no_folder(home: Path) -> None:
    url = f"sqlite:///{home}/vra/sub/automail.db"
    with pytest.raises(StoreConnectionError, match="does not exist"):
        db.make_engine(url)
    assert not (home / "vra").exists()


def test_unmigrated_store_says_run_db_upgrade(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTOMAIL_DB_URL", f"sqlite:///{home}/empty.db")
    assert cli_main(["mails", "search"]) == 2
    err = capsys.readouterr().err
    assert "run `automail db upgrade`" in err and len(err.splitlines()) == 1


def test_missing_table_is_reported_on_both_stores(engine: Engine) -> None:
    with engine.connect() as conn, pytest.raises(StoreNotMigrated, match="no_such_table"):
        conn.execute(text("SELECT 1 FROM no_such_table"))
