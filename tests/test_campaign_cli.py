"""The `automail campaigns` / `automail steps` commands, incl. a real test send (C2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from automail.cli import main
from automail.models import Campaign, Mail
from automail.sample_data import make_customer, make_shop


@pytest.fixture
def smtp_env(smtp_sink, monkeypatch):  # noqa: ANN001, ANN201
    uri = f"smtp://127.0.0.1:{smtp_sink.port}?disable_ssl=true&disable_tls=true"
    monkeypatch.setenv("AIRFLOW_CONN_AUTOMAIL_SMTP", uri)
    return smtp_sink


def test_campaign_commands_and_test_send(session, smtp_env, capsys, tmp_path) -> None:  # noqa: ANN001
    shop = make_shop(session, monthly_quota=100)
    make_customer(
        session,
        shop,
        "old@example.jp",
        name="古い 顧客",
        signed_up_at=datetime.now(UTC) - timedelta(days=9),
    )
    make_customer(
        session,
        shop,
        "new@example.jp",
        name="新しい 顧客",
        signed_up_at=datetime.now(UTC) - timedelta(days=1),
    )
    session.commit()
    at = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    base = [
        "campaigns",
        "create",
        "--shop",
        "tea",
        "--name",
        "n",
        "--subject",
        "[TENPO_NAME] 夏",
        "--format",
        "text",
    ]
    assert (
        main(
            [
                *base,
                "--body",
                "[CUSTOMER_NAME] 様",
                "--at",
                (datetime.now(UTC) + timedelta(minutes=1)).isoformat(),
            ]
        )
        == 2
    )
    assert "less than 3 minutes ahead" in capsys.readouterr().err
    assert main([*base, "--body", "x", "--at", at, "--filter", "{bad"]) == 2
    assert "--filter: '{bad' is not JSON" in capsys.readouterr().err
    assert main([*base, "--body", "[CUSTOMER_NAME] 様", "--at", at]) == 0
    cid = session.scalar(select(Campaign.id))

    assert (
        main(
            [
                "campaigns",
                "test-send",
                str(cid),
                "--to",
                "staff@tea.example.jp, sa..m@example.jp,x.",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "'sa..m@example.jp' has consecutive dots" in err and "'x.'" in err
    assert smtp_env.messages == []
    assert (
        main(
            ["campaigns", "test-send", str(cid), "--to", "staff@tea.example.jp,boss@tea.example.jp"]
        )
        == 0
    )
    assert sorted(m.rcpt_tos[0] for m in smtp_env.messages) == [
        "boss@tea.example.jp",
        "staff@tea.example.jp",
    ]
    msg = smtp_env.messages[0].message
    assert msg["Subject"] == "[テスト] お茶の山田園 夏"
    assert msg.get_content().startswith("新しい 顧客 様")  # merge fields: newest eligible customer
    session.rollback()  # a fresh snapshot (SQLite WAL) to see what the command wrote
    tests = session.scalars(
        select(Mail).where(Mail.source_key.like(f"campaign-test:{cid}:%"))
    ).all()
    assert (
        len(tests) == 2 and {m.status for m in tests} == {"sent"} and tests[0].customer_id is None
    )

    capsys.readouterr()
    assert main(["campaigns", "quota", "--shop", "tea"]) == 0
    assert "used 2, limit 100, left 98" in capsys.readouterr().out
    out = tmp_path / "aud.csv"
    assert main(["campaigns", "audience", str(cid), "--csv", str(out)]) == 0
    assert out.read_text(encoding="utf-8").count("\n") == 3
    assert main(["campaigns", "show", str(cid)]) == 0
    assert "None -> scheduled" not in capsys.readouterr().out
    assert main(["campaigns", "cancel", str(cid)]) == 0
    assert main(["campaigns", "list"]) == 0
    assert "\tcancelled\t" in capsys.readouterr().out


def test_step_commands(session, capsys) -> None:  # noqa: ANN001
    make_shop(session)
    session.commit()
    assert (
        main(
            [
                "steps",
                "create",
                "--shop",
                "tea",
                "--name",
                "welcome",
                "--event",
                "signup",
                "--starts-from",
                "2026-01-01T00:00:00+00:00",
            ]
        )
        == 0
    )
    assert (
        main(["steps", "add-step", "1", "--offset", "1d2h", "--subject", "s", "--body", "b"]) == 0
    )
    assert "1560 minutes after the start" in capsys.readouterr().out
    assert (
        main(["steps", "add-step", "1", "--offset", "soon", "--subject", "s", "--body", "b"]) == 2
    )
    assert "offset: 'soon'" in capsys.readouterr().err
    assert main(["steps", "run", "--until", "2026-02-01T00:00:00"]) == 0
    assert main(["steps", "list"]) == 0
    assert "+1560m\t0 mails" in capsys.readouterr().out


def test_command_line_times_name_the_flag_and_default_their_zone() -> None:
    from datetime import UTC
    from zoneinfo import ZoneInfo

    from automail.cli.times import parse_time

    tokyo = ZoneInfo("Asia/Tokyo")
    assert parse_time("--at", "2026-12-01T09:00", tokyo).utcoffset().total_seconds() == 9 * 3600
    assert parse_time("--until", "2026-12-01T09:00").tzinfo is UTC
    assert parse_time("--at", "2026-12-01T09:00+00:00", tokyo).utcoffset().total_seconds() == 0
    with pytest.raises(ValueError, match=r"--until: '1\. Dez' is not an ISO 8601 time"):
        parse_time("--until", "1. Dez")
