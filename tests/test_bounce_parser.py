"""Bounce parser: accuracy on the real third-party corpus, classify_smtp per code family,
and robustness on hostile input.

The corpus (shared/corpora/bounces, BSD-2 licensed, never copied into this repository) gives
the expected hard/soft/none outcome of 359 real messages. Figures are printed per file-name
prefix group; run with ``-s`` to see the table.
"""

from __future__ import annotations

import csv
import re
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import SHARED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from automail.bounces import BounceRecipient, ParsedBounce, classify_smtp, parse_bounce
from automail.bounces import parser as bounce_parser
from automail.bounces.rules import RULES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bounce_scoring  # noqa: E402  (one scoring definition for the bench and the tests)

CORPUS = SHARED / "corpora" / "bounces"
GROUPS = ("lhost", "rhost", "rfc3464", "rfc3834", "arf")
# Thresholds the parser honestly reaches today (see the printed table); raise, never lower.
MIN_ACCURACY = {
    "overall": 97.0,
    "lhost": 97.0,
    "rhost": 95.0,
    "rfc3464": 98.0,
    "rfc3834": 100.0,
    "arf": 100.0,
}
# Each direction has its own threshold (issue 16): soft-or-none read as hard cleans a good
# customer's address; hard read as soft keeps a dead one a little longer (three failures
# in a row still invalidate it). Target 1.0 %; measured 1.20 % (3 of 249), see below.
MAX_SOFT_TO_HARD = 1.0  # issue 16: a good address cleaned by mistake, at most 1 in 100
MAX_HARD_TO_SOFT = 5.0
MIN_RECIPIENT_AGREEMENT = 98.0
STATUS_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")

needs_corpus = pytest.mark.usefixtures("bounce_corpus")  # skips, or fails under CI=true


def file_outcome(parsed: ParsedBounce) -> str:
    """One outcome per file: the recipients' shared outcome, "mixed", or "none" if empty."""
    outcomes = {r.outcome for r in parsed.recipients}
    if not outcomes:
        return "none"
    return outcomes.pop() if len(outcomes) == 1 else "mixed"


def _rows(name: str) -> list[dict[str, str]]:
    with (CORPUS / name).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def corpus_results() -> list[tuple[dict[str, str], ParsedBounce]]:
    return [
        (row, parse_bounce((CORPUS / "eml" / row["file"]).read_bytes()))
        for row in _rows("bounces.csv")
    ]


def accuracy_table(results: list[tuple[dict[str, str], ParsedBounce]]) -> dict[str, float]:
    total: Counter[str] = Counter()
    good: Counter[str] = Counter()
    for row, parsed in results:
        group = row["file"].split("-", 1)[0]
        ok = file_outcome(parsed) == row["hard_or_soft"]
        for key in ("overall", group):
            total[key] += 1
            good[key] += ok
    return {k: 100.0 * good[k] / total[k] for k in total}


@needs_corpus
def test_corpus_accuracy(corpus_results, capsys) -> None:
    table = accuracy_table(corpus_results)
    drift = {r["file"] for r in _rows("bounces_version_drift.csv")}
    misses = [
        (
            row["file"],
            row["hard_or_soft"],
            file_outcome(p),
            ",".join(r.reason for r in p.recipients),
        )
        for row, p in corpus_results
        if file_outcome(p) != row["hard_or_soft"]
    ]
    with capsys.disabled():
        print("\nbounce corpus accuracy (hard/soft/none as expected)")
        for key in ("overall", *GROUPS):
            print(f"  {key:<8} {table.get(key, 0.0):6.1f} %")
        print(f"  misclassified ({len(misses)}; * = listed as a version-drift judgement call):")
        for name, expected, got, reasons in misses:
            print(
                f"    {'*' if name in drift else ' '} {name:<32} expected {expected:<5} "
                f"got {got:<5} {reasons}"
            )
    for key, minimum in MIN_ACCURACY.items():
        assert table[key] >= minimum, f"{key}: {table[key]:.1f}% < {minimum}%"


@needs_corpus
def test_corpus_error_directions_and_recipients(capsys) -> None:
    """soft→hard and hard→soft each under their own threshold; recipients as the DSN names them;
    the same figures on both hash halves (rules were developed on "dev", "held" is the check)."""
    s = bounce_scoring.score(CORPUS)
    with capsys.disabled():
        for key in ("overall", "dev", "held"):
            print(
                f"\n  {key:<8} {s.pct(s.good, s.total, key):5.1f} %  soft→hard "
                f"{s.pct(s.soft_to_hard, s.soft_or_none, key):4.2f} %  hard→soft "
                f"{s.pct(s.hard_to_soft, s.hard, key):4.2f} %",
                end="",
            )
        print(f"\n  recipients {100 * s.rcpt_good / s.rcpt_total:5.1f} % of {s.rcpt_total}")
    assert s.pct(s.soft_to_hard, s.soft_or_none, "overall") <= MAX_SOFT_TO_HARD
    assert s.pct(s.hard_to_soft, s.hard, "overall") <= MAX_HARD_TO_SOFT
    assert 100 * s.rcpt_good / s.rcpt_total >= MIN_RECIPIENT_AGREEMENT, s.rcpt_misses
    for key in ("dev", "held"):  # no half may hide a collapse behind the other
        assert s.pct(s.good, s.total, key) >= 95.0, key


# Judgement calls where the reference labels changed between sisimai releases
# (bounces_version_drift.csv; docs/bounces.md): where one release says hard and the other
# soft, we take soft — a wrong "hard" cleans a good customer's address for good, a wrong
# "soft" costs one more attempt (three failures in a row still invalidate the address).
DRIFT_DECISIONS = {
    "lhost-amavis-03.eml": "soft",  # both soft
    "lhost-domino-02.eml": "soft",  # p5 hard (userunknown), go onhold: relayed, no code
    "lhost-gmail-07.eml": "soft",  # both soft
    "lhost-mcafee-01.eml": "soft",  # p5 hard, go filtered: a filter relays "Unknown user"
    "lhost-mcafee-04.eml": "soft",  # idem "No such user"
    "lhost-notes-02.eml": "soft",  # p5 hard, go onhold: Japanese "not in the directory list"
    "lhost-powermta-03.eml": "soft",  # p5 hard, go suspend: 5.2.1 "mailbox disabled"
    "lhost-receivingses-06.eml": "soft",  # both soft
    "rhost-franceptt-10.eml": "soft",  # both soft
}


@needs_corpus
def test_version_drift_decisions(corpus_results) -> None:
    drift = {r["file"] for r in _rows("bounces_version_drift.csv")}
    assert drift == set(DRIFT_DECISIONS), "a new drift row needs an explicit decision"
    got = {row["file"]: file_outcome(p) for row, p in corpus_results if row["file"] in drift}
    assert got == DRIFT_DECISIONS


@needs_corpus
def test_no_bounce_for_expected_none(corpus_results) -> None:
    """The hard invariant: feedback reports and auto-replies never count as bounces."""
    wrong = [
        row["file"] for row, p in corpus_results if row["hard_or_soft"] == "none" and p.is_bounce
    ]
    assert not wrong
    kinds = {row["file"]: p.kind for row, p in corpus_results if row["hard_or_soft"] == "none"}
    assert all(k in ("feedback", "autoreply") for k in kinds.values()), kinds


@needs_corpus
def test_corpus_per_recipient_accuracy() -> None:
    """Multi-recipient files too: the i-th recipient against the i-th expected row."""
    by_file: dict[str, list[dict[str, str]]] = {}
    for row in _rows("bounces_by_recipient.csv"):
        by_file.setdefault(row["file"], []).append(row)
    good = total = 0
    for name, rows in by_file.items():
        recipients = parse_bounce((CORPUS / "eml" / name).read_bytes()).recipients
        for i, row in enumerate(rows):
            total += 1
            good += i < len(recipients) and recipients[i].outcome == row["hard_or_soft"]
    assert 100.0 * good / total >= 95.0


@needs_corpus
def test_every_corpus_file_parses_cleanly() -> None:
    """No swallowed exception anywhere (the strict core raises what parse_bounce hides)."""
    kinds: Counter[str] = Counter()
    for path in sorted((CORPUS / "eml").glob("*.eml")):
        parsed = bounce_parser._parse(path.read_bytes())
        kinds[parsed.kind] += 1
        for r in parsed.recipients:
            _check_recipient(r)
        if parsed.original_message_id:
            assert "<" not in parsed.original_message_id and "@" in parsed.original_message_id
    # Only the two fml mailing-list notices are not recognisably bounces.
    assert kinds["unknown"] <= 2, kinds


def _check_recipient(r: BounceRecipient) -> None:
    assert r.outcome in ("hard", "soft", "none")
    assert r.status is None or STATUS_RE.match(r.status), r.status
    assert r.smtp_code is None or 400 <= r.smtp_code < 600
    assert r.recipient is None or (r.recipient == r.recipient.lower() and "@" in r.recipient)
    assert len(r.diagnostic) <= 500 and "\n" not in r.diagnostic
    assert r.reason and r.reason == r.reason.lower()


# --- classify_smtp: one row per code family ------------------------------------------------
CLASSIFY_CASES = [
    # address is wrong: hard
    (
        550,
        "5.1.1",
        "5.1.1 <a@example.jp>: Recipient address rejected: User unknown",
        "hard",
        "userunknown",
    ),
    (
        550,
        None,
        "550 5.1.1 The email account that you tried to reach does not exist",
        "hard",
        "userunknown",
    ),
    (550, None, "No such user here", "hard", "userunknown"),
    (550, None, "unknown user kijitora", "hard", "userunknown"),
    (550, "5.1.3", "Bad recipient address syntax", "hard", "userunknown"),
    (550, "5.1.2", "Host unknown", "hard", "hostunknown"),
    (None, "5.4.4", "Unable to route", "hard", "hostunknown"),
    (
        550,
        None,
        "Host or domain name not found. Name service error for name=x type=A",
        "hard",
        "hostunknown",
    ),
    (551, "5.1.6", "User has moved; please try b@example.org", "hard", "hasmoved"),
    (556, "5.1.10", "Recipient address has null MX", "hard", "notaccept"),
    (None, None, "送信先メールアドレスが見つかりませんでした。", "hard", "userunknown"),
    # temporary: soft, whatever the wording
    (
        450,
        "4.1.1",
        "Recipient address rejected: User unknown in virtual alias table",
        "soft",
        "userunknown",
    ),
    (451, "4.3.0", "Temporary local problem, please try again", "soft", "systemerror"),
    (421, "4.7.0", "Too many connections, try again later", "soft", "toomanyconn"),
    (None, "4.4.7", "Delivery time expired", "soft", "expired"),
    # mailbox full: persistent but the address is right
    (552, "5.2.2", "Mailbox full", "soft", "mailboxfull"),
    (552, "5.1.1", "sorry, mailbox a@example.org is over quota temporarily", "soft", "mailboxfull"),
    (
        None,
        None,
        "送信先のメールボックスが一杯のため、送信できませんでした。",
        "soft",
        "mailboxfull",
    ),
    # policy / spam / authentication: the sender's problem, not the address's
    (550, "5.7.1", "Message rejected as spam by Content Filtering", "soft", "spamdetected"),
    (
        554,
        "5.7.1",
        "Service unavailable; Client host blocked using zen.spamhaus.org",
        "soft",
        "blocked",
    ),
    (
        550,
        "5.7.26",
        "Unauthenticated email from example.org is not accepted due to DMARC",
        "soft",
        "authfailure",
    ),
    (550, "5.7.1", "Recipient address rejected: User unknown", "soft", "filtered"),
    (553, "5.1.8", "Domain of sender address a@nx.example does not exist", "soft", "rejected"),
    (550, "5.2.1", "The email account that you tried to reach is disabled", "soft", "suspend"),
    (552, "5.3.4", "Message size exceeds fixed limit", "soft", "mesgtoobig"),
    (550, None, "550 : User unknown", "soft", "filtered"),  # au/KDDI domain filter
    # RFC 5321's reply text for an unknown mailbox (Microsoft sends it with 5.5.0)
    (550, "5.5.0", "Requested action not taken: mailbox unavailable", "hard", "userunknown"),
    # Microsoft's directory lookup failure
    (
        550,
        "5.4.1",
        "Recipient address rejected: Access denied. AS(201806281)",
        "hard",
        "userunknown",
    ),
    (550, None, "<a@example.jp>: Recipient address rejected", "hard", "userunknown"),
    (None, None, "Host mx.nowhere.example not found", "hard", "hostunknown"),
    # a 5.1.x code in front of a text that blames the sender or the recipient's choice
    (550, "5.1.1", "Client host [192.0.2.1] blocked using zen.spamhaus.org", "soft", "blocked"),
    (550, "5.1.1", "Sender IP reputation is poor, message refused", "soft", "blocked"),
    (550, "5.1.1", "Message refused due to recipient preferences", "soft", "filtered"),
    (550, "5.1.0", "Sender address access denied", "soft", "rejected"),
    # ...but a plain "user unknown" keeps it, policy link or not
    (550, "5.1.1", "User unknown; see the Spamhaus policy page", "hard", "userunknown"),
    # a bare RCPT refusal, and the same words answering MAIL FROM (the sender's fault)
    (550, None, "550 Rejected (in reply to RCPT TO command)", "hard", "userunknown"),
    (
        553,
        "5.1.0",
        "after MAIL FROM:<a@b.example>: 553 5.1.0 b.example does not exist",
        "soft",
        "rejected",
    ),
    # 5.2.x says the mailbox exists (disabled): a "user unknown" beside it is not proof
    (550, "5.2.1", "Mailbox disabled: User Unknown", "soft", "suspend"),
    (None, None, "", "soft", "undefined"),
]


@pytest.mark.parametrize(("code", "status", "text", "outcome", "reason"), CLASSIFY_CASES)
def test_classify_smtp(code, status, text, outcome, reason) -> None:
    assert classify_smtp(code, status, text) == (outcome, reason)


def test_rule_patterns_are_lowercase() -> None:
    """match_reason lowercases the text and compiles without re.I: patterns must agree."""
    for pattern, _ in RULES:
        assert pattern.pattern == pattern.pattern.lower(), pattern.pattern
        assert not pattern.flags & re.IGNORECASE


def test_classify_smtp_reads_codes_from_text() -> None:
    assert classify_smtp(None, None, "550 5.1.1 <a@b.example>: Recipient address rejected") == (
        "hard",
        "userunknown",
    )
    assert classify_smtp(None, None, "452 4.2.2 Over quota")[0] == "soft"


# --- auto-replies that look like bounces ---------------------------------------------------
AUTOREPLY_LOOKALIKES = [
    b"From: Ken <ken@example.com>\nSubject: Automatic reply: Undeliverable: Your order\n"
    b"Auto-Submitted: auto-replied\n\nI am away. Mail to me could not be delivered quickly.\n",
    b"From: Ken <ken@example.com>\nSubject: Out of Office: Returned mail: see transcript\n\n"
    b"550 5.1.1 User unknown (quoted from the mail I am replying to)\n",
    "From: ken@example.jp\nSubject: 【自動返信】配信エラーのお問い合わせについて\n\n"
    "ただいま不在にしております。\n".encode(),
]


@pytest.mark.parametrize("raw", AUTOREPLY_LOOKALIKES)
def test_autoreply_lookalikes_are_not_bounces(raw: bytes) -> None:
    parsed = parse_bounce(raw)
    assert parsed.kind == "autoreply" and not parsed.is_bounce
    assert parsed.recipients[0].recipient in ("ken@example.com", "ken@example.jp")


def test_ses_delivery_notification_is_not_a_bounce() -> None:
    body = (
        '{"notificationType":"Delivery","mail":{"headers":[{"name":"Message-ID",'
        '"value":"<mail-7.x@automail.local>"}]},"delivery":{"recipients":["A@Example.com"]}}'
    )
    raw = b"From: no-reply@sns.amazonaws.com\nSubject: AWS Notification Message\n\n"
    parsed = parse_bounce(raw + body.encode())
    assert not parsed.is_bounce
    assert parsed.original_message_id == "mail-7.x@automail.local"
    assert [(r.recipient, r.outcome, r.reason) for r in parsed.recipients] == [
        ("a@example.com", "none", "delivered")
    ]


# --- hostile input -------------------------------------------------------------------------
HOSTILE = [
    b"",
    b"\x00\xff\xfe garbage",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n--x\n",
    b"From: MAILER-DAEMON\nContent-Type: message/delivery-status\n\nFinal-Recipient: ;;;\n",
    b"Subject: =?iso-2022-jp?B?broken?=\nContent-Type: text/plain; charset=x-unknown\n\n\x1b$B",
    b'Content-Type: multipart/mixed; boundary="a"\n\n--a\nContent-Type: message/rfc822\n\n--a--',
    b"X: " + b"A" * 200_000 + b"\n\nbody",
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_hostile_input_never_raises(raw: bytes) -> None:
    parsed = parse_bounce(raw)
    assert parsed.kind in ("dsn", "nonstandard", "autoreply", "feedback", "unknown")
    for r in parsed.recipients:
        _check_recipient(r)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(raw: bytes) -> None:
    assert isinstance(parse_bounce(raw), ParsedBounce)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=400))
def test_random_diagnostics_classify(text: str) -> None:
    outcome, reason = classify_smtp(None, None, text)
    assert outcome in ("hard", "soft") and reason
