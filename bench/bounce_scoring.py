"""Scoring of the bounce parser on the shared corpus: one definition for the bench and the tests.

- outcome accuracy: the file's hard/soft/none (the recipients' shared outcome) against
  bounces.csv; also per file-name group and per held-out half (see `half`).
- soft→hard: share of files expected soft or none that we read as hard (or mixed): each
  one is a good customer address cleaned by mistake. hard→soft: share of expected hard
  files read otherwise (a dead address kept a little longer).
- recipient agreement: per row of bounces_by_recipient.csv whose message carries RFC 3464
  recipient fields, our i-th recipient against the DSN's i-th Final-Recipient, or its
  Original-Recipient when that is the address the returned original was sent to. The
  reference is read here with a deliberately small reader, independent of the parser.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import Message
from pathlib import Path

from automail.bounces import ParsedBounce, parse_bounce

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpora" / "bounces"
GROUPS = ("lhost", "rhost", "rfc3464", "rfc3834", "arf")
_DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")
_FIELD_RE = re.compile(r"^(final-recipient|original-recipient)\s*:\s*(.*)$", re.I | re.M)
_ADDR_RE = re.compile(r"[^\s<>;:\"'(),\[\]]+@[A-Za-z0-9.-]*[A-Za-z0-9]")
_TO_RE = re.compile(r"^to:[ \t]*(.*(?:\n[ \t].*)*)", re.I | re.M)


def rows(name: str, corpus: Path = CORPUS) -> list[dict[str, str]]:
    with (corpus / name).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def half(file_name: str) -> str:
    """ "dev" or "held": a fixed split by hash of the file name (rules are tuned on dev only)."""
    return "dev" if hashlib.sha256(file_name.encode()).digest()[0] % 2 == 0 else "held"


def file_outcome(parsed: ParsedBounce) -> str:
    """The recipients' shared outcome, "mixed" when they differ, "none" when there are none."""
    outcomes = {r.outcome for r in parsed.recipients}
    if not outcomes:
        return "none"
    return outcomes.pop() if len(outcomes) == 1 else "mixed"


def _address(value: str) -> str | None:
    m = _ADDR_RE.search(value.split(";", 1)[-1]) or _ADDR_RE.search(value)
    return m.group(0).strip(".").lower() if m else None


def _parts(msg: Message) -> list[Message]:
    """Leaves of the bounce itself; a returned message (a bounce of a bounce) is not entered."""
    if msg.get_content_maintype() == "multipart" and isinstance(msg.get_payload(), list):
        return [leaf for sub in msg.get_payload() for leaf in _parts(sub)]
    return [msg]


def _decoded(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # not an encoded word after all
        return value


def dsn_reference(raw: bytes) -> list[str | None]:
    """Per DSN recipient block: the address we sent to, as the DSN names it."""
    msg = message_from_bytes(raw, policy=policy.compat32)
    status_text, returned = "", ""
    for part in _parts(msg):
        ctype = part.get_content_type()
        if ctype in _DSN_TYPES:
            payload = part.get_payload()
            if isinstance(payload, list):
                status_text += "\n\n".join(str(p) for p in payload) + "\n\n"
            else:
                status_text += str(payload) + "\n\n"
        elif ctype in ("message/rfc822", "text/rfc822-headers") and not returned:
            returned = str(part.get_payload(0) if part.is_multipart() else part.get_payload())
    sent_to = set()
    if m := _TO_RE.search(returned):
        sent_to = {a.lower() for a in _ADDR_RE.findall(m.group(1))}
    out: list[str | None] = []
    for block in re.split(r"\n\s*\n", status_text.replace("\r", "")):
        found = {k.lower(): _address(_decoded(v)) for k, v in _FIELD_RE.findall(block)}
        if not found:
            continue
        original, final = found.get("original-recipient"), found.get("final-recipient")
        out.append(original if original and (original in sent_to or not final) else final)
    return out


@dataclass
class Score:
    total: Counter[str] = field(default_factory=Counter)
    good: Counter[str] = field(default_factory=Counter)
    soft_or_none: Counter[str] = field(default_factory=Counter)
    soft_to_hard: Counter[str] = field(default_factory=Counter)
    hard: Counter[str] = field(default_factory=Counter)
    hard_to_soft: Counter[str] = field(default_factory=Counter)
    misses: list[tuple[str, str, str, str]] = field(default_factory=list)
    rcpt_total: int = 0
    rcpt_good: int = 0
    rcpt_misses: list[tuple[str, str | None, str | None]] = field(default_factory=list)

    def pct(self, counter: Counter[str], base: Counter[str], key: str) -> float:
        return 100.0 * counter[key] / base[key] if base[key] else 0.0


def score(corpus: Path = CORPUS) -> Score:
    s = Score()
    parsed: dict[str, ParsedBounce] = {}
    raws: dict[str, bytes] = {}
    for row in rows("bounces.csv", corpus):
        name = row["file"]
        raws[name] = (corpus / "eml" / name).read_bytes()
        parsed[name] = p = parse_bounce(raws[name])
        got, want = file_outcome(p), row["hard_or_soft"]
        keys = ("overall", name.split("-", 1)[0], half(name))
        for key in keys:
            s.total[key] += 1
            s.good[key] += got == want
            if want in ("soft", "none"):
                s.soft_or_none[key] += 1
                s.soft_to_hard[key] += got in ("hard", "mixed")
            elif want == "hard":
                s.hard[key] += 1
                s.hard_to_soft[key] += got != "hard"
        if got != want:
            reasons = ",".join(r.reason for r in p.recipients)
            s.misses.append((name, want, got, reasons))
    seen: set[str] = set()
    for row in rows("bounces_by_recipient.csv", corpus):
        name = row["file"]
        if name in seen:
            continue
        seen.add(name)
        raw = raws.get(name) or (corpus / "eml" / name).read_bytes()
        recipients = (parsed.get(name) or parse_bounce(raw)).recipients
        for i, want in enumerate(dsn_reference(raw)):
            if want is None:
                continue
            got = recipients[i].recipient if i < len(recipients) else None
            s.rcpt_total += 1
            s.rcpt_good += got == want
            if got != want:
                s.rcpt_misses.append((name, want, got))
    return s
