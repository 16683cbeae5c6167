"""Staff actions (B4, B5, A4 review) on both stores: every action's allowed and refused
statuses, audit rows (StaffAction + MailEvent per mail), claims respected, copy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from management_helpers import mail, shop
from sqlalchemy import select

from automail.management import actions
from automail.management.detail import get_detail
from automail.models import Mail, MailEvent, StaffAction
from automail.states import ACTION_FROM, MAIL_STATUSES

STATUS_ACTIONS = ("cancel", "uncancel", "delete", "release")


@pytest.mark.parametrize("action", STATUS_ACTIONS)
def test_each_status_action_allows_exactly_its_from_statuses(session, action):
    tea = shop(session)
    by_status = {s: mail(session, tea, status=s).id for s in MAIL_STATUSES}
    session.commit()
    result = actions.change_status(session, action, list(by_status.values()), "reviewer1")
    session.commit()
    allowed = ACTION_FROM[action]
    assert sorted(result.done) == sorted(by_status[s] for s in allowed)
    assert result.refused_count == len(MAIL_STATUSES) - len(allowed)
    for status, mail_id in by_status.items():
        now = session.get(Mail, mail_id).status
        if status in allowed:
            assert now == actions.TARGET[action]
        else:
            assert now == status
            assert (
                f"mail {mail_id}: cannot {action} a mail whose status is '{status}' "
                f"(allowed from: {', '.join(allowed)})"
            ) in result.refused


def test_cancel_on_sent_mail_is_refused_with_clear_message(session):
    m = mail(session, shop(session), status="sent")
    session.commit()
    result = actions.cancel(session, [m.id], "ops")
    assert result.done == []
    assert result.refused == [
        f"mail {m.id}: cannot cancel a mail whose status is 'sent' (allowed from: unsent)"
    ]


def test_cancel_then_uncancel_round_trip_with_events(session):
    m = mail(session, shop(session))
    session.commit()
    actions.cancel(session, [m.id], "ops")
    actions.uncancel(session, [m.id], "ops2")
    session.commit()
    detail = get_detail(session, m.id)
    assert detail.status == "unsent"
    assert [(e.event, e.from_status, e.to_status, e.actor) for e in detail.events] == [
        ("cancel", "unsent", "cancelled", "ops"),
        ("uncancel", "cancelled", "unsent", "ops2"),
    ]


def test_delete_is_recorded_who_when_how_many_which(session):
    tea = shop(session)
    pending = [mail(session, tea).id for _ in range(3)]
    sent = mail(session, tea, status="sent").id
    session.commit()
    result = actions.delete(session, [*pending, sent, 999999], "reviewer@shop", audit={"x": 1})
    session.commit()
    assert sorted(result.done) == sorted(pending)
    assert result.refused_count == 2 and "mail 999999: no such mail" in result.refused
    row = session.get(StaffAction, result.staff_action_id)
    assert (row.actor, row.action, row.count) == ("reviewer@shop", "delete", 3)
    assert sorted(row.detail["ids"]) == sorted(pending) and row.detail["x"] == 1
    assert row.at is not None
    events = session.scalars(select(MailEvent).where(MailEvent.event == "delete")).all()
    assert sorted(e.mail_id for e in events) == sorted(pending)
    assert {e.actor for e in events} == {"reviewer@shop"}
    # The rows stay (idempotency keys kept), only their status changed.
    assert {session.get(Mail, i).status for i in pending} == {"deleted"}


def test_live_claim_is_refused_and_lapsed_claim_is_not(session):
    tea = shop(session)
    live, lapsed = mail(session, tea), mail(session, tea)
    now = datetime.now(UTC)
    live.claimed_by, live.lease_until = "worker-1", now + timedelta(minutes=5)
    lapsed.claimed_by, lapsed.lease_until = "worker-2", now - timedelta(minutes=5)
    session.commit()
    result = actions.cancel(session, [live.id, lapsed.id], "ops")
    assert result.done == [lapsed.id]
    assert "is being sent right now (claimed by worker-1" in result.refused[0]


def test_bad_ids_and_actor_are_refused_whole(session):
    with pytest.raises(actions.ActionError, match="ids: 'abc' is not a mail id"):
        actions.cancel(session, ["abc"], "ops")
    with pytest.raises(actions.ActionError, match="actor: an actor name is required"):
        actions.cancel(session, [1], " ")
    with pytest.raises(actions.ActionError, match="action: 'explode'"):
        actions.change_status(session, "explode", [1], "ops")


def test_copy_keeps_content_changes_only_to_and_is_a_new_manual_mail(session):
    tea = shop(session)
    src = mail(session, tea, status="sent", html="<b>hi</b>", to="old@example.jp")
    src.extra_headers = {"X-Campaign": "7"}
    src.message_id = "<abc@tea.example.jp>"
    session.commit()
    copy = actions.copy_mail(session, src.id, "new@example.jp", "support1")
    again = actions.copy_mail(session, src.id, "new@example.jp", "support1")
    session.commit()
    assert (copy.kind, copy.mode, copy.status) == ("manual", "manual", "unsent")
    assert copy.copied_from_id == src.id and copy.source_key != again.source_key
    assert copy.to_address == "new@example.jp" and copy.customer_id is None
    assert (copy.subject, copy.body_text, copy.body_html) == (
        src.subject,
        src.body_text,
        "<b>hi</b>",
    )
    assert copy.extra_headers == {"X-Campaign": "7"} and copy.message_id is None
    assert get_detail(session, src.id).copies == [copy.id, again.id]
    assert session.get(Mail, src.id).status == "sent"  # the original is untouched


@pytest.mark.parametrize(
    "to, reason",
    [
        ("sample.@example.jp", "has a dot right before the @"),
        (".sample@example.jp", "starts with a dot"),
        ("sa..mple@example.jp", "has consecutive dots"),
        ("a@example.jp\r\nBcc: x@evil.example", "line break"),
    ],
)
def test_copy_refuses_bad_to_address(session, to, reason):
    src = mail(session, shop(session), status="sent")
    session.commit()
    with pytest.raises(actions.ActionError, match=reason) as err:
        actions.copy_mail(session, src.id, to, "support1")
    assert str(err.value).startswith("to: address ")


def test_send_refused_whole_when_mail_server_stopped(session, engine):
    from automail import settings
    from automail.db import session_factory

    m = mail(session, shop(session))
    settings.put(session, "mail_server_stopped", True)
    session.commit()
    with pytest.raises(actions.ActionError, match="mail server is stopped"):
        actions.send(session_factory(engine), [m.id], "ops")
    session.expire_all()
    assert session.get(Mail, m.id).status == "unsent"
    assert session.scalar(select(StaffAction.id)) is None


def test_detail_shows_headers_and_row_action(session):
    m = mail(session, shop(session), status="cancelled")
    m.bcc = "audit@tea.example.jp"
    session.commit()
    d = get_detail(session, m.id)
    assert ("To", "hanako@example.jp") in d.headers
    assert ("Bcc", "audit@tea.example.jp") in d.headers
    assert d.headers[0][0] == "From" and "shop@tea.example.jp" in d.headers[0][1]
    assert d.row_action == "resend" and d.allowed("uncancel") and not d.allowed("cancel")
    with pytest.raises(LookupError, match="mail 424242: no such mail"):
        get_detail(session, 424242)


def _smtp(sink):
    from automail.sending import SmtpConfig

    return SmtpConfig(host="127.0.0.1", port=sink.port)


def test_bulk_send_goes_through_send_now_and_reaches_the_sink(session, engine, smtp_sink):
    from automail.db import session_factory

    tea = shop(session)
    unsent = mail(session, tea, to="a@example.jp")
    error = mail(session, tea, status="error", to="b@example.jp")
    sent = mail(session, tea, status="sent", to="c@example.jp")
    session.commit()
    result = actions.send(
        session_factory(engine), [unsent.id, error.id, sent.id], "ops", smtp=_smtp(smtp_sink)
    )
    assert sorted(result.sent) == sorted([unsent.id, error.id])
    assert result.refused == [
        f"mail {sent.id}: cannot send a mail whose status is 'sent' "
        "(allowed from: unsent, error, held)"
    ]
    assert sorted(m.rcpt_tos[0] for m in smtp_sink.messages) == ["a@example.jp", "b@example.jp"]
    session.expire_all()
    d = get_detail(session, unsent.id)
    assert d.status == "sent" and d.attempts and d.attempts[-1].smtp_code == 250
    assert ("send_requested", "ops") in [(e.event, e.actor) for e in d.events]
    audit = session.get(StaffAction, result.staff_action_id)
    assert audit.count == 2 and sorted(audit.detail["sent"]) == sorted(result.sent)


def test_resend_a_sent_mail_and_refused_reply_is_recorded(session, engine, smtp_sink):
    from automail.db import session_factory

    tea = shop(session)
    sent = mail(session, tea, status="sent", to="again@example.jp")
    bad = mail(session, tea, status="cancelled", to="gone@example.jp")
    session.commit()
    smtp_sink.handler.reject["gone@example.jp"] = "550 5.1.1 no such user"
    result = actions.send(
        session_factory(engine), [sent.id, bad.id], "ops", action="resend", smtp=_smtp(smtp_sink)
    )
    assert result.sent == [sent.id] and result.failed == [bad.id]
    session.expire_all()
    failed = get_detail(session, bad.id)
    assert failed.status == "error"
    assert (failed.attempts[-1].smtp_code, failed.attempts[-1].enhanced_code) == (550, "5.1.1")
    assert [m.rcpt_tos for m in smtp_sink.messages] == [["again@example.jp"]]


def test_copy_and_send_reaches_the_new_address_only(session, engine, smtp_sink):
    from automail.db import session_factory

    src = mail(session, shop(session), status="sent", to="old@example.jp", subject="再送テスト")
    session.commit()
    result = actions.copy_and_send(
        session_factory(engine), src.id, "new@example.jp", "support1", smtp=_smtp(smtp_sink)
    )
    assert result.sent == [result.new_mail_id]
    (msg,) = smtp_sink.messages
    assert msg.rcpt_tos == ["new@example.jp"]
    assert msg.message["To"] == "new@example.jp" and msg.message["Subject"] == "再送テスト"
    session.expire_all()
    assert session.get(Mail, src.id).status == "sent"
    assert session.get(Mail, result.new_mail_id).copied_from_id == src.id
