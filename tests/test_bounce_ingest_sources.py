"""Bounce mailboxes: a folder of .eml files and a maildir (moved to processed/ once
recorded), the `automail_bounce_mailbox` connection, and `automail bounces` on the CLI.

IMAP is not tested here: no IMAP server is installed on the test machines, and a stub
written for the test would only test itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from bounce_helpers import FIXTURES
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from automail.bounces.ingest import ingest_mailbox
from automail.bounces.mailbox import ENV_VAR, FolderSource, open_source, source_from_fields
from automail.cli import main
from automail.db import session_factory
from automail.models import Bounce

SOME = ["postfix-userunknown.eml", "vacation-en.eml", "qmail-overquota.eml"]


def _fill(folder: Path, names: list[str] = SOME) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(FIXTURES / name, folder / name)


def test_folder_source_moves_recorded_files_to_processed(
    engine: Engine, session: Session, tmp_path: Path
) -> None:
    box = tmp_path / "box"
    _fill(box)
    (box / "notes.txt").write_text("not a message")

    summary = ingest_mailbox(session_factory(engine), FolderSource(box))

    assert (summary.messages, summary.ingested, summary.unmatched) == (3, 3, 3)
    assert (summary.hard, summary.soft, summary.ignored) == (1, 1, 1)
    assert sorted(p.name for p in box.glob("*.eml")) == []
    assert sorted(p.name for p in (box / "processed").iterdir()) == sorted(SOME)
    assert (box / "notes.txt").exists()  # not a message: left alone
    sources = set(session.scalars(select(Bounce.source)))
    assert sources == {str(box / name) for name in SOME}

    _fill(box, SOME[:1])  # the same message delivered again: a no-op, kept as a copy
    again = ingest_mailbox(session_factory(engine), FolderSource(box))
    assert (again.messages, again.ingested, again.duplicates) == (1, 0, 1)
    assert (box / "processed" / "postfix-userunknown.1.eml").exists()
    session.commit()
    assert session.scalar(select(func.count()).select_from(Bounce)) == 3


def test_maildir_new_and_cur_are_read(engine: Engine, tmp_path: Path) -> None:
    box = tmp_path / "Maildir"
    (box / "tmp").mkdir(parents=True)
    _fill(box / "new", SOME[:2])
    _fill(box / "cur", SOME[2:])

    summary = ingest_mailbox(session_factory(engine), FolderSource(box))

    assert summary.ingested == 3
    assert list((box / "new").iterdir()) == [] and list((box / "cur").iterdir()) == []
    assert len(list((box / "processed").iterdir())) == 3


def test_a_message_that_cannot_be_recorded_stays_in_the_mailbox(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from automail.bounces import ingest

    box = tmp_path / "box"
    _fill(box, SOME[:2])
    real = ingest.ingest_message

    def flaky(session, raw, source=None, now=None, signer=None):  # noqa: ANN001, ANN202
        if source and source.endswith("vacation-en.eml"):
            raise RuntimeError("store went away")
        return real(session, raw, source, now, signer)

    monkeypatch.setattr(ingest, "ingest_message", flaky)
    summary = ingest_mailbox(session_factory(engine), FolderSource(box))

    assert summary.ingested == 1
    assert len(summary.failed) == 1 and "store went away" in summary.failed[0]
    assert [p.name for p in box.glob("*.eml")] == ["vacation-en.eml"]


def test_connection_fields_choose_the_source(tmp_path: Path) -> None:
    src = source_from_fields("fs", extra={"path": str(tmp_path)})
    assert isinstance(src, FolderSource) and src.root == tmp_path
    assert isinstance(source_from_fields("path", host=str(tmp_path)), FolderSource)
    with pytest.raises(ValueError, match="conn_type 'ftp' is not fs, path or imap"):
        source_from_fields("ftp", host="x")
    with pytest.raises(ValueError, match="needs extra path"):
        source_from_fields("fs")
    with pytest.raises(ValueError, match="not a directory"):
        source_from_fields("fs", extra={"path": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="imap needs a host"):
        source_from_fields("imap", login="u", password="p")


def test_open_source_reads_the_airflow_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "fs", "extra": {"path": str(tmp_path)}}
    monkeypatch.setenv(ENV_VAR, json.dumps(conn))
    src = open_source()
    assert isinstance(src, FolderSource) and src.root == tmp_path
    monkeypatch.setenv(ENV_VAR, json.dumps({"conn_type": "fs", "extra": {"path": "/nope/x"}}))
    with pytest.raises(ValueError, match="/nope/x"):
        open_source()


def test_cli_ingest_and_list_unmatched(
    engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    box = tmp_path / "box"
    _fill(box)

    assert main(["bounces", "ingest", "--dir", str(box)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["ingested"], summary["unmatched"]) == (3, 3)

    assert main(["bounces", "list", "--unmatched"]) == 0
    out = capsys.readouterr().out
    assert "3 unmatched bounce(s)" in out
    assert "hanako.yamada@mail.example.net" in out and "unmatched" in out
    assert main(["bounces", "list", "--json", "--limit", "1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 1 and rows[0]["mail_id"] is None

    assert main(["bounces", "ingest", "--dir", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
