"""Bounce parser on hand-written fixtures: every field must match expected.csv exactly.

tests/fixtures/bounces/ holds messages written for this project in the shapes real MTAs use
(Postfix, Sendmail, Exim, qmail, Exchange, Gmail, Yahoo, Amazon SES, au/KDDI, NTT DOCOMO,
SoftBank, BIGLOBE; ISO-2022-JP, Shift_JIS, base64, quoted-printable, CRLF). expected.csv has
one row per recipient, in order: outcome, status, recipient, kind, reason, and the Message-ID
and X-Automail-Id of the original mail when the bounce returns it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from automail.bounces import ParsedBounce, parse_bounce

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bounces"


def _expected() -> dict[str, list[dict[str, str]]]:
    rows: dict[str, list[dict[str, str]]] = {}
    with (FIXTURES / "expected.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            rows.setdefault(row["file"], []).append(row)
    return rows


EXPECTED = _expected()


def test_every_fixture_has_expectations() -> None:
    files = {p.name for p in FIXTURES.glob("*.eml")}
    assert files == set(EXPECTED)
    assert len(files) >= 30


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture(name: str) -> None:
    parsed = parse_bounce((FIXTURES / name).read_bytes())
    rows = EXPECTED[name]
    got = [
        (r.outcome, r.status or "", r.recipient or "", parsed.kind, r.reason)
        for r in parsed.recipients
    ]
    want = [(w["outcome"], w["status"], w["recipient"], w["kind"], w["reason"]) for w in rows]
    assert got == want
    assert (parsed.original_message_id or "") == rows[0]["message_id"]
    assert parsed.original_headers.get("x-automail-id", "") == rows[0]["automail_id"]
    assert parsed.is_bounce == any(w["outcome"] in ("hard", "soft") for w in rows)


def test_fixture_accuracy_is_total(capsys) -> None:
    """The figure the bench reports: share of fixtures whose outcomes all match."""
    good = 0
    for name, rows in EXPECTED.items():
        parsed = parse_bounce((FIXTURES / name).read_bytes())
        good += [r.outcome for r in parsed.recipients] == [w["outcome"] for w in rows]
    with capsys.disabled():
        print(f"\nbounce fixtures: {good}/{len(EXPECTED)} outcomes as expected")
    assert good == len(EXPECTED)


def test_quoted_original_headers_are_decoded() -> None:
    """The spec's example: Exim quotes the original, whose Subject is RFC 2047 UTF-8."""
    parsed = parse_bounce((FIXTURES / "exim-userunknown-quoted.eml").read_bytes())
    assert parsed.original_message_id == "mail-123.abc@automail.local"
    assert parsed.original_headers == {
        "x-automail-id": "123",
        "to": "Natsuki@Hosting.Example.net",
        "subject": "ご注文ありがとうございます",
        "return-path": "<bounce@shop.example.jp>",
    }


def test_autoreplies_and_reports_never_bounce() -> None:
    for name, rows in EXPECTED.items():
        if rows[0]["kind"] in ("autoreply", "feedback"):
            parsed: ParsedBounce = parse_bounce((FIXTURES / name).read_bytes())
            assert not parsed.is_bounce, name


def test_quoted_printable_returned_headers() -> None:
    parsed = parse_bounce((FIXTURES / "dsn-base64-qp.eml").read_bytes())
    assert parsed.original_headers["subject"] == "ご注文確認"
    assert "メールボックス" in parsed.recipients[0].diagnostic  # from the base64 notice


def test_japanese_diagnostic_is_decoded() -> None:
    parsed = parse_bounce((FIXTURES / "softbank-mailboxfull-iso2022jp.eml").read_bytes())
    assert "メールボックス" in parsed.recipients[0].diagnostic
