"""Bounce classes found on real reports the parser had never seen (issue 16): each test
builds its own message in the class's shape, so the rule is checked, not one corpus file."""

from __future__ import annotations

import pytest

from automail.bounces import classify_smtp, parse_bounce


def _plain(
    body: str, subject: str = "Returned mail", sender: str = "MAILER-DAEMON@gw.example"
) -> bytes:
    return (
        (
            f"From: {sender}\nTo: shop@tea.example.jp\nSubject: {subject}\n"
            f"Date: Mon, 2 Mar 2026 10:00:00 +0900\nMessage-ID: <n.1@gw.example>\n\n{body}\n"
            "\n----- Original message -----\nTo: a@example.jp\nFrom: shop@tea.example.jp\n"
            "Subject: Order 1\n\nThanks\n"
        )
        .replace("\n", "\r\n")
        .encode()
    )


def _outcomes(raw: bytes) -> dict[str, tuple[str, str]]:
    return {r.recipient: (r.outcome, r.reason) for r in parse_bounce(raw).recipients}


# --- a worded "user unknown" with no code, no stage: a gateway's summary, not proof ---------
@pytest.mark.parametrize(
    "line",
    [
        "a@example.jp [User unknown]",
        "a@example.jp\n    Recipient Not Found",
        "<a@example.jp>:\nThis user doesn't have a example.jp account (a@example.jp) [-9]",
    ],
)
def test_unproven_user_unknown_is_soft(line: str) -> None:
    raw = _plain(f"The following addresses had delivery errors:\n\n{line}\n")
    assert _outcomes(raw) == {"a@example.jp": ("soft", "filtered")}


@pytest.mark.parametrize(
    "line",
    [
        # the same words with a reply code, or answering RCPT TO: proof
        "a@example.jp\n    <<< 550 5.1.1 <a@example.jp>... User unknown",
        "a@example.jp [User unknown]\n    SMTP error from remote mail server after RCPT TO:<a@example.jp>",
        # a mailbox host's own directory verdict
        "User a (a@example.jp) not listed in Domino Directory",
        "Unknown user: a@example.jp",
        "a@example.jp\n    The email account that you tried to reach does not exist.",
        "a@example.jp\n    宛先不明のため配信できませんでした。",
    ],
)
def test_proven_user_unknown_is_hard(line: str) -> None:
    raw = _plain(f"The following addresses had delivery errors:\n\n{line}\n")
    assert _outcomes(raw)["a@example.jp"] == ("hard", "userunknown")


# --- per-recipient reading of multi-recipient reports ---------------------------------------
def test_each_dialogue_lends_its_stage_only_to_its_own_recipients() -> None:
    raw = _plain(
        "   ----- Transcript of session follows -----\n"
        "While talking to mx.one.example:\n"
        ">>> MAIL From:<shop@tea.example.jp>\n"
        "<<< 501 <shop@tea.example.jp>... no access from your server\n"
        "554 <a@one.example>... Remote protocol error\n"
        "554 <b@two.example>... 550 Host unknown (Authoritative answer from name server)\n"
        "While talking to mx.three.example:\n"
        ">>> RCPT To:<c@three.example>\n"
        "<<< 550 <c@three.example>... User unknown\n"
        "550 <c@three.example>... User unknown\n",
        subject="Returned mail: see transcript for details",
    )
    got = _outcomes(raw)
    assert got["a@one.example"][0] == "soft"  # the MAIL FROM dialogue: the sender's problem
    assert got["c@three.example"] == ("hard", "userunknown")  # its own RCPT TO


def test_a_report_listing_everyone_twice_reads_each_recipient_in_its_own_lines() -> None:
    block = (
        "  full@example.jp\n"
        "    SMTP error from remote mail server after RCPT TO:<full@example.jp>:\n"
        "    host mx.example.jp [192.0.2.12]: 550 5.2.2 <full@example.jp>... Mailbox Full\n"
        "  gone@example.jp\n"
        "    SMTP error from remote mail server after RCPT TO:<gone@example.jp>:\n"
        "    host mx.example.jp [192.0.2.12]: 550 5.2.1 <gone@example.jp>... User Unknown\n"
    )
    raw = _plain(
        f"Письмо не может быть доставлено:\n{block}\n"
        "This message was created automatically by mail delivery software.\n"
        f"The following address(es) failed:\n{block}",
        subject="Mail failure.",
    )
    got = _outcomes(raw)
    assert got["full@example.jp"] == ("soft", "mailboxfull")
    assert got["gone@example.jp"] == ("hard", "userunknown")


# --- a DSN forwarded whole inside a gateway's notice ----------------------------------------
def test_a_delivery_report_forwarded_inside_a_notice_is_read() -> None:
    raw = b"""\
From: postmaster@scanner.example.jp
To: shop@tea.example.jp
Subject: Notification
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="OUTER"

--OUTER
Content-Type: text/plain

The original message was received at Thu Oct 13 15:22:22 2015
----- The following addresses had permanent delivery errors -----

--OUTER
Content-Type: message/rfc822

From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.jp>
To: shop@tea.example.jp
Subject: Returned mail: User unknown
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="INNER"

--INNER
Content-Type: text/plain

----- The following addresses had permanent delivery errors -----
gone@example.org

--INNER
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.jp

Final-Recipient: RFC822; gone@example.org
Action: failed
Status: 5.1.1
Diagnostic-Code: SMTP; 550 5.1.1 <gone@example.org>... User Unknown

--INNER--

--OUTER--
""".replace(b"\n", b"\r\n")
    parsed = parse_bounce(raw)
    assert parsed.kind == "dsn"
    assert _outcomes(raw) == {"gone@example.org": ("hard", "userunknown")}


def test_a_receipt_rule_bounce_of_ses_receiving_is_a_filter() -> None:
    raw = b"""\
From: MAILER-DAEMON@us-west-2.amazonses.com
To: shop@tea.example.jp
Subject: Delivery Status Notification (Failure)
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

This message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; inbound-smtp.us-west-2.amazonaws.com

Action: failed
Final-Recipient: rfc822; a@example.jp
Diagnostic-Code: smtp; 550 5.1.1 Mailbox does not exist
Status: 5.1.1

--B--
""".replace(b"\n", b"\r\n")
    assert _outcomes(raw) == {"a@example.jp": ("soft", "filtered")}


# --- reply texts ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "status", "text", "expected"),
    [
        # an explicit recipient lookup answering RCPT TO, even under 5.7.1
        (
            554,
            "5.7.1",
            "SMTP error from remote mail server after RCPT TO:<a@b.example>: 554 5.7.1 "
            "<a@b.example>: Recipient address rejected: Access denied",
            ("hard", "userunknown"),
        ),
        # the quoted remote code (5.7.1 Access denied) beats the relay's generic 5.1.0
        (
            550,
            None,
            "5.1.0 - Unknown address error 550-'5.7.1 <x@relay.example>... Access denied'",
            ("soft", "filtered"),
        ),
        # a bare refusal that names the recipient
        (542, None, "542 a@b.example Rejected", ("hard", "userunknown")),
        # a local delivery agent failing: its "No such user" is its own lookup
        (
            None,
            "5.1.1",
            'procmail: Couldn\'t create "/var/spool/mail/a" id: mx.example: No such user',
            ("soft", "mailererror"),
        ),
        # a host name that does not exist (not an address)
        (553, None, "553 mx.nowhere.example does not exist", ("hard", "hostunknown")),
        (550, "5.1.1", "550 5.1.1 <a@b.example>... User not exist", ("hard", "userunknown")),
        (521, "5.3.2", "System not accepting network messages", ("hard", "notaccept")),
    ],
)
def test_reply_classes(code, status, text, expected) -> None:
    assert classify_smtp(code, status, text) == expected
