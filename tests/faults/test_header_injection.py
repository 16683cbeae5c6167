"""Header injection and poison mails (issue 12 items 2, 3, 4).

- Every line-break / control character (C0 but TAB, DEL, C1, U+2028, U+2029) in every
  header field, plain or hidden in an RFC 2047 encoded word (B or Q, several charsets,
  nested): refused with MailBuildError naming the field, by `render_bytes` (what the
  batch sends) and `build_message` alike.
- Caller text that merely looks like an encoded word is written so that a receiver
  (the stdlib parser here) decodes it back to exactly that text, never interpreted.
- Poison mails (the above, customer names through a real template, structurally
  unusable To addresses with the shop's address check off, non-ASCII local parts)
  mixed into batches of good mails, sent through the real aiosmtpd sink: every good
  mail arrives, every poison mail is `error` with the field named, the batch finishes.
  Each captured .eml is parsed: exactly the expected headers with the expected
  values, no Bcc, body intact.

Counters: `header_injections_delivered` (captured messages whose headers differ from
the expected set, must be 0), `poison_mails_stopped_batch` (batches that raised or left
a mail unfinished, must be 0); every probe counts in `inputs`.
Knob: FAULTS_EXAMPLES_SCALE (default 1.0) multiplies every example count.
"""

from __future__ import annotations

import base64
import itertools
import os
import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.policy import compat32
from email.utils import parseaddr
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session

from automail.db import session_factory
from automail.mime import MailBuildError, as_bytes, build_message, render_bytes
from automail.models import Mail, Shop
from automail.rendering import compile_template
from automail.rendering.context import Sources
from automail.sending import SmtpConfig, send_batch
from automail.sending.claim import claim_ids
from automail.smtp_sink import SmtpSink

from .conftest import FaultTotals, fault_shop

SCALE = float(os.environ.get("FAULTS_EXAMPLES_SCALE", "1") or 1)

# Every character a header must never carry (written out here, independently of mime.py).
CONTROLS = [chr(c) for c in range(0x20) if c != 0x09] + ["\x7f"]
CONTROLS += [chr(c) for c in range(0x80, 0xA0)] + ["\u2028", "\u2029"]
NAMED = {"\r": "CR", "\n": "LF", "\0": "NUL", "\x0b": "VT", "\x0c": "FF", "\x1b": "ESC"}
NAMED |= {"\x1c": "FS", "\x1d": "GS", "\x1e": "RS", "\x85": "NEL", "\u2028": "LINE SEPARATOR"}
TEXT = st.text(
    alphabet=st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")) | st.just("\t"),
    max_size=12,
)
FIELDS = ("subject", "from_name", "to_address", "reply_to", "from_address", "bcc")
FIELDS += ("extra_value", "extra_name")


def examples(n: int) -> settings:
    return settings(
        max_examples=max(1, int(n * SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def encoded_word(text: str, charset: str, cte: str) -> str:
    raw = text.encode(charset)
    if cte in "bB":
        body = base64.b64encode(raw).decode()
    else:
        body = "".join(
            chr(b) if chr(b).isascii() and chr(b).isalnum() else "_" if b == 0x20 else f"={b:02X}"
            for b in raw
        )
    return f"=?{charset}?{cte}?{body}?="


def ew_strategy(payload: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """`payload` as an encoded word: B or Q, upper or lower case, several charsets."""
    return st.builds(
        encoded_word,
        payload,
        st.sampled_from(["utf-8", "UTF-8", "utf-16"]),
        st.sampled_from("bBqQ"),
    )


def mail_with(field: str, value: str, mail_id: int = 7) -> Mail:
    mail = Mail(
        id=mail_id,
        shop_id=1,
        to_address="hanako@example.jp",
        from_address="shop@tea.example.jp",
        from_name="お茶の山田園",
        reply_to="support@tea.example.jp",
        subject="ご注文ありがとうございます",
        body_text="本文",
        bcc=None,
        extra_headers=None,
        message_id=None,
    )
    if field == "extra_name":
        mail.extra_headers = {f"X-{value}": "x"}
    elif field == "extra_value":
        mail.extra_headers = {"X-Campaign": value}
    elif field in ("to_address", "from_address", "reply_to", "bcc"):
        setattr(mail, field, f"user{value}@example.jp")
    else:
        setattr(mail, field, value)
    return mail


def field_label(field: str) -> str:
    return "extra_headers" if field.startswith("extra") else field


def assert_refused(mail: Mail, field: str) -> MailBuildError:
    """Both writers refuse, naming the field; the error is the same on each."""
    with pytest.raises(MailBuildError) as fast:
        render_bytes(mail)
    with pytest.raises(MailBuildError) as slow:
        as_bytes(build_message(mail))
    assert field_label(field) in str(fast.value), str(fast.value)
    assert str(fast.value) == str(slow.value)
    return fast.value


# --- 1. every control character in every header field ----------------------------------


def test_every_control_character_in_every_header_field_is_refused(
    fault_totals: FaultTotals,
) -> None:
    fixed = 0
    for field, ch in itertools.product(FIELDS, CONTROLS):  # each pair once: 8 x 66
        err = assert_refused(mail_with(field, f"a{ch}b"), field)
        if ch in NAMED and field != "extra_name":
            assert NAMED[ch] in str(err), str(err)
        fixed += 1
    fault_totals.inputs += fixed

    @examples(300)
    @given(
        field=st.sampled_from(FIELDS),
        before=TEXT,
        ch=st.sampled_from(CONTROLS),
        after=TEXT,
    )
    def check(field: str, before: str, ch: str, after: str) -> None:
        fault_totals.inputs += 1
        assert_refused(mail_with(field, before + ch + after), field)

    check()


# --- 2. control characters hidden in encoded words -------------------------------------

INJECTIONS = st.tuples(TEXT, st.sampled_from(CONTROLS), TEXT).map("".join)
HEADER_TEXT_FIELDS = ("subject", "from_name", "extra_value")


def test_encoded_words_that_decode_to_control_characters_are_refused(
    fault_totals: FaultTotals,
) -> None:
    issue = "=?utf-8?q?=0D=0ABcc:_spy@evil.example=0D=0AX-Phish:_1=0D=0A=0D=0Abody?="
    odd_charsets = [  # unusual charsets and sloppy words a lenient decoder still reads
        "=?utf-7?q?+AA0AChe-?=",
        "=?idna?q?=FF=0A?=",
        "=?x-unknown?b?DQo=?=",
        "=?utf-8*ja?Q?=0d=0a?=",
        "=?utf-8?b?DQ o K?=",  # whitespace inside
        "=?utf-8?B?DQoNCg?=",  # missing padding
        "=?utf-8?q?=E2=80=A8?=",  # U+2028
        "=?utf-8?q?=C2=85?=",  # NEL
        "=?iso-8859-1?q?=85?=",  # NEL in Latin-1
        "=?utf-16?b?//4NAAoA?=",
    ]
    for field in HEADER_TEXT_FIELDS:  # the probe from the issue, in an ASCII subject
        err = assert_refused(mail_with(field, f"Re: order for {issue} thanks"), field)
        assert "encoded word" in str(err) and "CR" in str(err)
        for word in odd_charsets:
            assert "encoded word" in str(assert_refused(mail_with(field, f"a {word} b"), field))
        fault_totals.inputs += 1 + len(odd_charsets)

    @examples(300)
    @given(
        field=st.sampled_from(HEADER_TEXT_FIELDS),
        before=TEXT,
        word=ew_strategy(INJECTIONS) | ew_strategy(ew_strategy(INJECTIONS)),
        after=TEXT,
    )
    def check(field: str, before: str, word: str, after: str) -> None:
        fault_totals.inputs += 1
        err = assert_refused(mail_with(field, before + word + after), field)
        assert "encoded word" in str(err)

    check()


# --- 3. look-alikes are written literally ------------------------------------------------

OUR_WORDS = re.compile(rb"=\?utf-8\?b\?[A-Za-z0-9+/=]*\?=")


def from_name(raw: bytes) -> str:
    """The From display name as RFC 2047 says to decode it. (The stdlib's address parser
    puts a space between adjacent encoded words of a display name, which 6.2 says to
    ignore; `decode_header` does it right.)"""
    name, _ = parseaddr(message_from_bytes(raw, policy=compat32)["From"])
    return str(make_header(decode_header(name)))


LOOKALIKE = st.one_of(
    ew_strategy(TEXT),
    # Q look-alikes decode to letters and spaces only (a B soup may decode to control
    # bytes: refused, as test 2 shows).
    st.lists(st.sampled_from(["=?", "?=", "?q?", "?Q?", "utf-8", "=41", "_", " ", "a", "あ"]))
    .map("".join)
    .filter(lambda s: "=?" in s),
)


def test_text_that_looks_like_encoded_words_arrives_literally(fault_totals: FaultTotals) -> None:
    @examples(250)
    @given(subject=st.tuples(TEXT, LOOKALIKE, TEXT).map("".join), name=LOOKALIKE, tag=LOOKALIKE)
    def check(subject: str, name: str, tag: str) -> None:
        fault_totals.inputs += 1
        mail = mail_with("subject", subject)
        mail.from_name, mail.extra_headers = name, {"X-Tag": tag}
        for raw in (render_bytes(mail), as_bytes(build_message(mail))):
            got = message_from_bytes(raw, policy=policy.default)
            assert str(got["Subject"]) == subject
            assert from_name(raw) == name
            assert str(got["X-Tag"]) == tag
            head = raw.split(b"\r\n\r\n")[0]
            assert b"=?" not in OUR_WORDS.sub(b"", head)  # no encoded word but ours

    check()


# --- 4. poison mails in a batch through the real sink ----------------------------------

_keys = itertools.count()


def address_check_off_shop(engine: Engine) -> Shop:
    shop = fault_shop(engine, "legacy")
    with session_factory(engine)() as session:
        session.execute(update(Shop).where(Shop.id == shop.id).values(address_check=False))
        session.commit()
    return shop


def render_for(name: str, shop: Shop) -> tuple[str, str]:
    """Subject and text body of a real template for a customer called `name`."""
    compiled = compile_template(
        "【{{ shop_name }}】{{ customer_name }} 様、ご注文ありがとうございます",
        "{{ customer_name }} 様\nご注文を承りました。",
        None,
    )
    customer = SimpleNamespace(id=1, name=name, email="c@example.jp", prefecture="東京都")
    subject, text, _ = compiled.render(Sources(shop, customer), False)
    return subject, text or ""


def row(shop: Shop, **fields: object) -> dict:
    values = {
        "shop_id": shop.id,
        "kind": "order_confirmation",
        "source_key": f"poison:{next(_keys)}",
        "to_address": f"ok{next(_keys)}@example.jp",
        "from_address": shop.from_address,
        "from_name": shop.from_name,
        "reply_to": shop.reply_to,
        "subject": f"ご注文ありがとうございます {next(_keys)}",
        "body_text": f"本文 {next(_keys)}\nありがとうございました。",
    }
    values.update(fields)
    return values


LONG_FROM = "shop@" + ".".join(["a" * 60, "b" * 60, "c" * 60, "d" * 50, "jp"])  # 241 chars


def poison_cases(pg: bool) -> st.SearchStrategy[tuple[str, str, dict]]:
    """(field named in the error, shop: 'tea' (check on) | 'legacy' (off), mail fields)."""
    controls = [c for c in CONTROLS if not (pg and c == "\0")]  # PostgreSQL text: no NUL
    hostile = st.tuples(TEXT, st.sampled_from(controls), TEXT).map("".join)
    hidden = st.tuples(TEXT, ew_strategy(INJECTIONS), TEXT).map("".join)
    # A template's subject is one line: the renderer joins a value's CR/LF into spaces
    # (GOOD_EXTRAS sends one); every other control character reaches the header check.
    in_name = st.tuples(TEXT, st.sampled_from([c for c in controls if c not in "\r\n"]), TEXT)
    unusable_to = st.sampled_from(
        [
            "<mallory@example.jp>",
            "@x.com",
            "mallory@",
            "ma llory@example.jp",
            "mallory@example.jp>",
            '"mal lory"@example.jp',
            "山田@example.jp",
            "mallory@[127.0.0.1]",
            "a@b@example.jp",
            "mallory@ex ample.jp",
            "mallory@-.jp\u2028",
        ]
    )
    text_fields = st.sampled_from(["subject", "from_name"])
    return st.one_of(
        st.builds(lambda f, v: (f, "tea", {f: v}), text_fields, hostile | hidden),
        st.builds(lambda v: ("extra_headers", "tea", {"extra_headers": {"X-Tag": v}}), hidden),
        st.builds(lambda v: ("reply_to", "tea", {"reply_to": f"r{v}@tea.example.jp"}), hostile),
        st.builds(lambda v: ("bcc", "legacy", {"bcc": f"a@x.jp, b{v}@x.jp"}), hostile),
        st.builds(lambda v: ("to_address", "legacy", {"to_address": v}), unusable_to),
        st.builds(lambda v: ("to_address", "tea", {"to_address": f"c{v}@example.jp"}), hostile),
        st.builds(
            lambda v: ("customer_name", "tea", {"customer_name": v}), in_name.map("".join) | hidden
        ),
        # a From domain so long that the Message-ID would not fit the store's column
        st.just(("message_id", "legacy", {"from_address": LONG_FROM})),
    )


GOOD_EXTRAS = st.sampled_from(
    [
        {},
        {"subject": "=?utf-8?q?hi?= there 【お知らせ】"},  # a look-alike: sent literally
        {"from_name": "=?iso-2022-jp?b?GyRCJTUlcyVXJWsbKEI=?= 商店"},
        {"to_address": "hanako@例え.jp"},  # IDN: sent as A-labels
        {"to_address": "taro..yamada.@docomo.ne.jp", "legacy": True},  # check off only
        {"customer_name": "=?utf-8?b?5bGx55Sw?= 花子"},
        {"customer_name": 'O\'Brien "Bob" <b@x.jp>'},
        {"customer_name": "山田\r\nBcc: spy@evil.example\r\n"},  # joined into one line
        {"subject": "tab\there", "body_text": "本文\u2028改行\x0bも本文ならそのまま"},
    ]
)


def expected_headers(mail: Mail) -> dict[str, str]:
    """What a receiver must see: exactly these headers (plus Date / Content-*)."""
    wire_to = "hanako@xn--r8jz45g.jp" if mail.to_address == "hanako@例え.jp" else mail.to_address
    return {
        "from": f"{mail.from_name!r} <{mail.from_address}>",
        "to": wire_to,
        "reply-to": mail.reply_to,
        "subject": mail.subject,
        "message-id": mail.message_id,
        "x-automail-id": str(mail.id),
    }


ALWAYS = {"date", "mime-version", "content-type", "content-transfer-encoding"}
SINK_ADDED = {"return-path"}  # what a receiving MTA adds (the sink may record it)


def lines(text: str) -> list[str]:
    return re.split(r"\r\n|\r|\n", text.rstrip("\r\n"))


def delivered_problems(data: bytes, mail: Mail) -> list[str]:
    """Differences between a captured message and what `mail` should have produced."""
    msg = message_from_bytes(data, policy=policy.default)
    want = expected_headers(mail)
    names = [n.lower() for n in msg]
    problems = [f"{n} appears {names.count(n)} times" for n in set(names) if names.count(n) > 1]
    extra = set(names) - set(want) - ALWAYS - SINK_ADDED
    problems += [f"unexpected header {n}" for n in sorted(extra)]
    if "bcc" in names:
        problems.append("a Bcc header was delivered")
    got = {
        "from": f"{from_name(data)!r} <{msg['From'].addresses[0].addr_spec}>",
        "to": msg["To"].addresses[0].addr_spec,
        "reply-to": msg["Reply-To"].addresses[0].addr_spec if msg["Reply-To"] else None,
        "subject": str(msg["Subject"]),
        "message-id": str(msg["Message-ID"]),
        "x-automail-id": str(msg["X-Automail-Id"]),
    }
    problems += [f"{k}: {got[k]!r} != {v!r}" for k, v in want.items() if got[k] != v]
    body = lines(msg.get_body(("plain",)).get_content())
    if body != lines(mail.body_text or ""):  # a body's line ends go out as CRLF
        problems.append(f"body {body!r} != {mail.body_text!r}")
    return problems


def sink_files(sink: SmtpSink) -> list[Path]:
    assert sink.handler.out_dir is not None
    return sorted(sink.handler.out_dir.glob("*.eml"))


def test_poison_mails_fail_alone_and_good_mails_arrive_intact(
    engine: Engine, session: Session, smtp_sink: SmtpSink, fault_totals: FaultTotals
) -> None:
    tea, legacy = fault_shop(engine), address_check_off_shop(engine)
    shops = {"tea": tea, "legacy": legacy}
    pg = engine.dialect.name == "postgresql"
    factory = session_factory(engine)
    cfg = SmtpConfig(host="127.0.0.1", port=smtp_sink.port, timeout=10)
    tags = itertools.count()
    totals = {"injected": 0, "stopped": 0, "good": 0, "poison": 0}

    def insert_mail(shop_code: str, fields: dict) -> int:
        shop = shops[shop_code]
        fields = dict(fields)
        if "customer_name" in fields:  # through a real template, as creation renders it
            fields["subject"], fields["body_text"] = render_for(fields.pop("customer_name"), shop)
        return session.execute(
            insert(Mail).values(**row(shop, **fields)).returning(Mail.id)
        ).scalar_one()

    @examples(40)
    @given(
        poison=st.lists(poison_cases(pg), min_size=1, max_size=4),
        good=st.lists(GOOD_EXTRAS, min_size=2, max_size=5),
        order=st.randoms(use_true_random=False),
    )
    def check(poison: list[tuple[str, str, dict]], good: list[dict], order) -> None:  # noqa: ANN001
        tag = f"poison-{next(tags)}"
        entries = [("good", None, "legacy" if g.get("legacy") else "tea", g) for g in good]
        entries += [("poison", f, shop, fields) for f, shop, fields in poison]
        order.shuffle(entries)
        ids = []
        for _, _, shop_code, fields in entries:
            ids.append(insert_mail(shop_code, {k: v for k, v in fields.items() if k != "legacy"}))
        session.commit()
        fault_totals.inputs += len(poison)
        claimed, _ = claim_ids(session, ids, tag, datetime.now(UTC), 600, "t")
        session.commit()
        assert sorted(claimed) == sorted(ids)
        files_before = set(sink_files(smtp_sink))
        try:
            summary = send_batch(factory, ids, tag, cfg, "fault-suite")
        except Exception:
            totals["stopped"] += 1
            raise
        session.expire_all()
        mails = {m.id: m for m in session.scalars(select(Mail).where(Mail.id.in_(ids)))}
        if any(
            m.claimed_by is not None or m.status not in ("sent", "error") for m in mails.values()
        ):
            totals["stopped"] += 1
        by_mid = {}
        for path in set(sink_files(smtp_sink)) - files_before:
            data = path.read_bytes()
            by_mid[str(message_from_bytes(data, policy=policy.default)["Message-ID"])] = data
        good_by_mid = {
            mails[i].message_id: mails[i]
            for i, e in zip(ids, entries, strict=True)
            if e[0] == "good"
        }
        problems = []  # every captured message: a good mail's, with exactly its headers
        for mid, data in by_mid.items():
            mail = good_by_mid.get(mid)
            found = delivered_problems(data, mail) if mail else [f"{mid}: a poison mail arrived"]
            totals["injected"] += bool(found)
            problems += found
        assert not problems, problems
        for mail_id, (kind, field, _, _) in zip(ids, entries, strict=True):
            mail = mails[mail_id]
            if kind == "good":
                totals["good"] += 1
                assert mail.status == "sent" and mail.message_id in by_mid, mail.last_error
            else:
                totals["poison"] += 1
                assert mail.status == "error", (field, mail.subject, mail.to_address)
                named = "subject" if field == "customer_name" else field
                assert named in (mail.last_error or ""), (named, mail.last_error)
        assert (summary.sent, summary.refused) == (len(good), len(poison)), summary
        assert len(by_mid) == len(good)

    try:
        check()
    finally:
        fault_totals.count("header_injections_delivered", totals["injected"])
        fault_totals.count("poison_mails_stopped_batch", totals["stopped"])
        fault_totals.lines.append(
            f"poison batches ({engine.dialect.name}): good={totals['good']} "
            f"poison={totals['poison']} injected={totals['injected']} stopped={totals['stopped']}"
        )
    assert totals["injected"] == 0 and totals["stopped"] == 0


# --- 5. an odd server reply is recorded, and the batch goes on ---------------------------


@pytest.mark.parametrize(
    "reply",
    ["550 5.1.1 no\0such user", "550 5.1.1 \udcff\udcfe", "451 4.2.0 " + "x" * 5000 + "\0"],
    ids=["NUL", "undecodable bytes", "long with NUL"],
)
def test_an_odd_server_reply_is_recorded_and_the_batch_goes_on(
    engine: Engine,
    session: Session,
    smtp_sink: SmtpSink,
    fault_totals: FaultTotals,
    reply: str,
) -> None:
    """A reply PostgreSQL cannot store as it is (NUL) must not stop the batch either."""
    shop = fault_shop(engine)
    smtp_sink.handler.reject["odd@example.jp"] = reply.encode("utf-8", "surrogateescape").decode(
        "latin-1"
    )
    fields = [{}, {"to_address": "odd@example.jp"}, {}]
    ids = [
        session.execute(insert(Mail).values(**row(shop, **f)).returning(Mail.id)).scalar_one()
        for f in fields
    ]
    session.commit()
    claim_ids(session, ids, f"odd-{reply[:3]}", datetime.now(UTC), 600, "t")
    session.commit()
    cfg = SmtpConfig(host="127.0.0.1", port=smtp_sink.port, timeout=10)
    fault_totals.inputs += 1
    send_batch(session_factory(engine), ids, f"odd-{reply[:3]}", cfg, "fault-suite")
    session.expire_all()
    first, odd, last = (session.get(Mail, i) for i in ids)
    assert first.status == last.status == "sent"
    assert odd.status == "error" and odd.claimed_by is None
    assert reply[:3] in odd.last_error and "\0" not in odd.last_error
