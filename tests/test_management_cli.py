"""`automail mails …` end to end through the real CLI entry point on both stores."""

from __future__ import annotations

import csv
import json

import pytest
from management_helpers import mail, shop

from automail.cli import main
from automail.models import Mail, StaffAction


@pytest.fixture
def sink_env(smtp_sink, monkeypatch):
    conn = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": smtp_sink.port,
        "extra": {"disable_ssl": True, "disable_tls": True},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AUTOMAIL_SMTP", json.dumps(conn))
    return smtp_sink


def fresh(session) -> None:
    session.rollback()
    session.expire_all()


def test_search_show_and_filters(session, capsys):
    tea = shop(session)
    a = mail(session, tea, body="100% ポイント", to="pct@example.jp")
    mail(session, tea, body="100x ポイント")
    session.commit()
    assert main(["mails", "search", "--body", "100%", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == [a.id]
    assert main(["mails", "search", "--sent-from", "2026-13-01"]) == 2
    assert "sent_from: '2026-13-01' is not a date" in capsys.readouterr().err
    assert main(["mails", "show", str(a.id)]) == 0
    out = capsys.readouterr().out
    assert "To: pct@example.jp" in out and "--- attempts ---" in out


def test_cancel_refusal_exit_code_and_message(session, capsys):
    m = mail(session, shop(session), status="sent")
    session.commit()
    assert main(["mails", "cancel", str(m.id), "--actor", "ops1"]) == 1
    err = capsys.readouterr().err
    assert f"mail {m.id}: cannot cancel a mail whose status is 'sent' (allowed from: unsent)" in err


def test_delete_all_matching_is_recorded_with_actor(session, capsys):
    tea = shop(session)
    keep = mail(session, tea, body="残す")
    gone = [mail(session, tea, body="テスト注文").id for _ in range(2)]
    session.commit()
    rc = main(["mails", "delete", "--all-matching", "--body", "テスト", "--actor", "rev"])
    assert rc == 0 and "delete: 2 of 2 mail(s) done" in capsys.readouterr().out
    fresh(session)
    assert {session.get(Mail, i).status for i in gone} == {"deleted"}
    assert session.get(Mail, keep.id).status == "unsent"
    audit = session.query(StaffAction).one()
    assert (audit.actor, audit.count, audit.detail["scope"]) == ("rev", 2, "all_matching")
    assert main(["mails", "delete", "--actor", "rev"]) == 2  # neither ids nor --all-matching


def test_copy_send_and_history_and_export(session, sink_env, tmp_path, capsys):
    src = mail(session, shop(session), status="sent", to="old@example.jp")
    session.commit()
    assert main(["mails", "copy", str(src.id), "--to", "new@example.jp", "--send"]) == 0
    assert [m.rcpt_tos for m in sink_env.messages] == [["new@example.jp"]]
    capsys.readouterr()
    assert main(["mails", "history", "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["to_address"], row["status"], row["smtp_code"]) == ("new@example.jp", "sent", 250)
    out = tmp_path / "x.csv"
    assert main(["mails", "export", "--status", "all", "--out", str(out)]) == 0
    with out.open(encoding="utf-8-sig") as fh:
        assert len(list(csv.DictReader(fh))) == 2
    assert main(["mails", "copy", str(src.id), "--to", "bad.@example.jp"]) == 2
    assert "has a dot right before the @" in capsys.readouterr().err


def test_send_by_id_through_the_cli(session, sink_env, capsys):
    m = mail(session, shop(session), status="error", to="retry@example.jp")
    session.commit()
    assert main(["mails", "send", str(m.id), "--actor", "ops"]) == 0
    assert "1 accepted by the SMTP server" in capsys.readouterr().out
    assert [x.rcpt_tos for x in sink_env.messages] == [["retry@example.jp"]]
