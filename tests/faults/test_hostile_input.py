"""Hostile input, generated with hypothesis (issue 8, F4, B2, B9, A5).

- CR / LF / NUL in every header field (subject, from name, From, To, Reply-To, BCC,
  extra header names and values): `build_message` refuses with MailBuildError naming
  the field; through a real batch (store + aiosmtpd) the mail becomes an error whose
  reason names the field or value, and the other mails of the batch are still sent.
- Malformed and RFC-violating addresses: `check_address` returns a reason naming the
  address; arbitrary text never raises.
- Broken and huge templates: `validate_template` raises TemplateError (field, line),
  never another exception type.
- Huge bodies (MBs) go through a batch to the sink; lone surrogates (text that is not
  valid UTF-8) in a body or header are refused with MailBuildError naming the field.
- SQL metacharacters (' " ; -- % _ \\) in every search field of the management
  search: no exception, literal (case-insensitive) substring matching.

Every input counts in `inputs`; an unexpected exception type or a batch that stopped
counts as a crash (and fails the test). Examples are derandomized (fixed) for CI.
Knob: FAULTS_EXAMPLES_SCALE (default 1.0) multiplies every example count.
"""

from __future__ import annotations

import itertools
import os
import string
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from automail.addresses import check_address
from automail.db import session_factory
from automail.management.search import FilterError, parse_filter, search
from automail.mime import MailBuildError, as_bytes, build_message
from automail.models import Mail, Shop
from automail.rendering import TemplateError, validate_template
from automail.sending import SmtpConfig, send_batch
from automail.sending.claim import claim_ids
from automail.smtp_sink import SmtpSink

from .conftest import FaultTotals, fault_shop

SCALE = float(os.environ.get("FAULTS_EXAMPLES_SCALE", "1") or 1)


def examples(n: int) -> settings:
    return settings(
        max_examples=max(1, int(n * SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


class Counted:
    """Count one input; an exception not in `expected` is a crash (counted, re-raised)."""

    def __init__(self, totals: FaultTotals, name: str) -> None:
        self.totals, self.name, self.n, self.crashes = totals, name, 0, 0

    def run(self, fn: Callable[[], object], expected: tuple[type[BaseException], ...] = ()):  # noqa: ANN201
        self.n += 1
        self.totals.inputs += 1
        try:
            return fn()
        except expected:
            raise
        except AssertionError:
            raise
        except Exception:
            self.crashes += 1
            self.totals.crashes += 1
            raise

    def close(self) -> None:
        self.totals.lines.append(f"hostile {self.name}: inputs={self.n} crashes={self.crashes}")


@pytest.fixture
def counted(request: pytest.FixtureRequest, fault_totals: FaultTotals) -> Iterator[Counted]:
    c = Counted(fault_totals, request.node.name.removeprefix("test_"))
    yield c
    c.close()


# --- strategies -----------------------------------------------------------------------

BREAKS = st.sampled_from(["\r", "\n", "\r\n", "\0", "\n\rBcc: evil@example.com\r\n"])
PLAIN = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\r\n\0"), max_size=20
)


def injected(breaks: st.SearchStrategy[str] = BREAKS) -> st.SearchStrategy[str]:
    return st.tuples(PLAIN, breaks, PLAIN).map("".join)


HEADER_FIELDS = (
    "subject",
    "from_name",
    "from_address",
    "to_address",
    "reply_to",
    "bcc",
    "extra_name",
    "extra_value",
)


def _mail(field: str, value: str, mail_id: int = 1) -> Mail:
    mail = Mail(
        id=mail_id,
        to_address="hanako@example.jp",
        from_address="shop@tea.example.jp",
        from_name="お茶の山田園",
        reply_to="support@tea.example.jp",
        subject="件名",
        body_text="本文",
        bcc=None,
        extra_headers=None,
    )
    if field == "extra_name":
        mail.extra_headers = {value: "x"}
    elif field == "extra_value":
        mail.extra_headers = {"X-Campaign": value}
    elif field in ("to_address", "from_address", "reply_to", "bcc"):
        setattr(mail, field, "user@example.jp" + value if field != "bcc" else value)
    else:
        setattr(mail, field, value)
    return mail


def _field_name(field: str) -> str:
    return "extra_headers" if field.startswith("extra") else field


# --- 1. header injection --------------------------------------------------------------


def test_crlf_nul_in_every_header_field_is_refused_naming_the_field(counted: Counted) -> None:
    @examples(400)
    @given(field=st.sampled_from(HEADER_FIELDS), value=injected())
    def check(field: str, value: str) -> None:
        mail = _mail(field, value)
        with pytest.raises(MailBuildError) as err:
            counted.run(lambda: as_bytes(build_message(mail)), (MailBuildError,))
        assert _field_name(field) in str(err.value)

    check()


_keys = itertools.count()


def _insert(session: Session, shop: Shop, tag: str, **fields: object) -> int:
    values = {
        "shop_id": shop.id,
        "kind": "order_confirmation",
        "source_key": f"hostile:{next(_keys)}",
        "to_address": f"ok{next(_keys)}@example.jp",
        "from_address": shop.from_address,
        "from_name": shop.from_name,
        "reply_to": shop.reply_to,
        "subject": f"件名 {tag}",
        "body_text": "本文",
    }
    values.update(fields)
    return session.execute(insert(Mail).values(**values).returning(Mail.id)).scalar_one()


def _send(engine: Engine, ids: list[int], sink: SmtpSink, tag: str):  # noqa: ANN202
    factory = session_factory(engine)
    with factory() as session:
        claimed, refused = claim_ids(session, ids, f"hostile:{tag}", datetime.now(UTC), 600, "t")
        session.commit()
    assert claimed == ids, refused
    cfg = SmtpConfig(host="127.0.0.1", port=sink.port, timeout=10)
    return send_batch(factory, ids, f"hostile:{tag}", cfg, "fault-suite")


def test_hostile_header_in_a_batch_errors_that_mail_and_the_batch_goes_on(
    engine: Engine, session: Session, smtp_sink: SmtpSink, counted: Counted
) -> None:
    shop = fault_shop(engine)
    pg = engine.dialect.name == "postgresql"
    breaks = st.sampled_from(["\r", "\n", "\r\n"] if pg else ["\r", "\n", "\r\n", "\0"])
    tags = itertools.count()

    @examples(60)
    @given(field=st.sampled_from(HEADER_FIELDS), value=injected(breaks))
    def check(field: str, value: str) -> None:
        tag = str(next(tags))
        bad = _mail(field, value)
        fields = {
            f: getattr(bad, f)
            for f in (
                "subject",
                "from_name",
                "from_address",
                "to_address",
                "reply_to",
                "bcc",
                "extra_headers",
            )
        }
        ids = [
            _insert(session, shop, tag),
            _insert(session, shop, tag, **fields),
            _insert(session, shop, tag),
        ]
        session.commit()
        before = len(smtp_sink.messages)
        summary = counted.run(lambda: _send(engine, ids, smtp_sink, tag))
        assert (summary.sent, summary.refused) == (2, 1), summary
        assert len(smtp_sink.messages) == before + 2
        session.expire_all()
        good1, hostile, good2 = (session.get(Mail, i) for i in ids)
        assert good1.status == good2.status == "sent"
        assert hostile.status == "error" and hostile.claimed_by is None
        if field == "to_address":  # the address check runs first and names the address
            assert repr(bad.to_address) in hostile.last_error, hostile.last_error
        else:
            assert _field_name(field) in hostile.last_error, hostile.last_error

    check()


# --- 2. addresses ---------------------------------------------------------------------

LOCAL = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=10)
DOMAIN = st.builds("{}.{}".format, LOCAL, st.sampled_from(["jp", "com", "ne.jp"]))
MALFORMED = st.one_of(
    st.builds("{}..{}@{}".format, LOCAL, LOCAL, DOMAIN),  # consecutive dots
    st.builds(".{}@{}".format, LOCAL, DOMAIN),  # leading dot
    st.builds("{}.@{}".format, LOCAL, DOMAIN),  # dot right before @ (seed 000)
    st.builds("{}@@{}".format, LOCAL, DOMAIN),
    st.builds("{}@{}@{}".format, LOCAL, LOCAL, DOMAIN),
    st.builds("{}{}".format, LOCAL, DOMAIN),  # no @
    st.builds("@{}".format, DOMAIN),
    st.builds("{}@".format, LOCAL),
    st.builds("{} {}@{}".format, LOCAL, LOCAL, DOMAIN),
    st.builds("{}@{}".format, LOCAL, st.builds("-{}".format, DOMAIN)),
    st.builds("{}@{}..jp".format, LOCAL, LOCAL),
    st.builds("{}@{}".format, LOCAL, LOCAL),  # no dot in the domain
    st.builds("{}@{}".format, st.text("xyz", min_size=65, max_size=90), DOMAIN),  # RFC 5321
    st.builds("{}ａ@{}".format, LOCAL, DOMAIN),  # non-ASCII local part
    st.builds("{}{}@{}".format, LOCAL, BREAKS, DOMAIN),
    st.builds("{}\udcff@{}".format, LOCAL, DOMAIN),  # not valid UTF-8
    st.builds('"{} {}"@{}'.format, LOCAL, LOCAL, DOMAIN),
    st.builds("{}@[127.0.0.1]".format, LOCAL),
)


def test_malformed_addresses_are_refused_naming_the_address(counted: Counted) -> None:
    @examples(300)
    @given(address=MALFORMED)
    def check(address: str) -> None:
        reason = counted.run(lambda: check_address(address))
        assert reason is not None, f"{address!r} accepted"
        assert repr(address) in reason

    check()


def test_arbitrary_text_as_an_address_never_raises(counted: Counted) -> None:
    @examples(150)
    @given(address=st.text(alphabet=st.characters(exclude_categories=()), max_size=80))
    def check(address: str) -> None:
        reason = counted.run(lambda: check_address(address))
        assert reason is None or repr(address) in reason

    check()


# --- 3. templates ---------------------------------------------------------------------

FRAGMENTS = [
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    " if ",
    " for ",
    " in ",
    " endif ",
    " endfor ",
    " x ",
    "customer_name",
    "order_no",
    "|",
    ".",
    "__class__",
    "(",
    ")",
    "[",
    "]",
    "'",
    '"',
    "\n",
    "、",
    "%",
    "-",
    "range(3)",
    "1/0",
    " else ",
    "【顧客名】",
    "【注文番号】",
    "【不明タグ】",
    "{{ customer_name }}",
    "{% if x %}",
    "{% endif %}",
    "<b>",
    "&",
]
TEMPLATE_TEXT = st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join)


def _validate(subject: str, text: str | None, html: str | None) -> Callable[[], None]:
    return lambda: validate_template(subject, text, html)


def test_broken_templates_raise_template_error_only(counted: Counted) -> None:
    @examples(250)
    @given(subject=TEMPLATE_TEXT, text=st.none() | TEMPLATE_TEXT, html=st.none() | TEMPLATE_TEXT)
    def check(subject: str, text: str | None, html: str | None) -> None:
        try:
            counted.run(_validate(subject, text, html), (TemplateError,))
        except TemplateError as exc:
            assert exc.field in ("subject", "body_text", "body_html")
            assert exc.field in str(exc)

    check()


HUGE_TEMPLATES = {
    "1 MB text body": ("件名", "ご注文ありがとうございます。\n" * 40_000, None),
    "error on line 20000": ("件名", "行\n" * 19_999 + "{{ customer_name ", None),
    "unknown tag on line 5000": ("件名", "x\n" * 4_999 + "【存在しないタグ】", None),
    "subject of 100k chars": ("件" * 100_000, "本文", None),
    "2 MB html body": ("件名", None, "<p>" + "あ" * 2_000_000 + "</p>"),
}


@pytest.mark.parametrize("case", list(HUGE_TEMPLATES))
def test_huge_templates_are_stored_or_refused_with_template_error(
    case: str, counted: Counted
) -> None:
    subject, text, html = HUGE_TEMPLATES[case]
    try:
        counted.run(_validate(subject, text, html), (TemplateError,))
    except TemplateError as exc:
        assert exc.field in ("subject", "body_text", "body_html")
        if case.startswith("error on line"):
            assert exc.line == 20_000, str(exc)
        if case.startswith("unknown tag"):
            assert exc.line == 5_000, str(exc)


@pytest.mark.parametrize(
    "body",
    ["{{ " + "(" * 200 + "1" + ")" * 200 + " }}", "{% if 1 %}" * 10_000 + "{% endif %}" * 10_000],
    ids=["200 nested parentheses", "10k nested ifs"],
)
def test_deeply_nested_template_is_refused_with_template_error(body: str) -> None:
    with pytest.raises(TemplateError, match="nested too deeply") as caught:
        validate_template("件名", body, None)
    assert caught.value.field == "body_text"


# --- 4. bodies ------------------------------------------------------------------------


def test_huge_body_is_sent_whole(
    engine: Engine, session: Session, smtp_sink: SmtpSink, counted: Counted
) -> None:
    shop = fault_shop(engine)
    body = ("ご注文ありがとうございます。" * 20 + "\n") * 12_000  # ~ 10 MB of UTF-8
    html = "<p>" + "大" * 1_000_000 + "</p>"
    ids = [
        _insert(session, shop, "huge", body_text=body, body_html=html),
        _insert(session, shop, "huge"),
    ]
    session.commit()
    summary = counted.run(lambda: _send(engine, ids, smtp_sink, "huge"))
    assert summary.sent == 2
    got = smtp_sink.messages[0].message
    assert got.get_body(("plain",)).get_content().replace("\r\n", "\n") == body
    assert len(smtp_sink.messages[0].data) > 10 * 2**20


@pytest.mark.parametrize("field", ["body_text", "body_html", "subject", "from_name"])
def test_text_that_is_not_valid_utf8_is_refused_naming_the_field(field: str) -> None:
    mail = _mail(field, "ご注文 \udcff text")  # what surrogateescape makes of invalid UTF-8
    if field == "body_html":
        mail.body_text = None
    with pytest.raises(MailBuildError, match=field):
        as_bytes(build_message(mail))


# --- 5. search ------------------------------------------------------------------------

META = [
    "'",
    '"',
    ";",
    "--",
    "%",
    "_",
    "\\",
    "%%",
    "\\%",
    "'; DROP TABLE mails; --",
    "' OR '1'='1",
    "a",
    "b",
    "@",
    ".",
    " ",
]
NEEDLE = st.lists(st.sampled_from(META), min_size=1, max_size=6).map("".join)
CORPUS = [
    "o'brien@example.jp",
    'quote"d@example.jp',
    "semi;colon@example.jp",
    "dash--dash@example.jp",
    "100%@example.jp",
    "under_score@example.jp",
    "back\\slash@example.jp",
    "plain@example.jp",
    "ab@example.jp",
    "a_b%c@example.jp",
]


def test_sql_metacharacters_in_search_fields_match_literally(
    engine: Engine, session: Session, counted: Counted
) -> None:
    shop = fault_shop(engine, "meta")
    for i, text in enumerate(CORPUS):
        _insert(session, shop, "meta", to_address=text, body_text=f"本文 {CORPUS[-1 - i]} 終")
    session.commit()
    rows = session.execute(select(Mail.id, Mail.to_address, Mail.body_text)).all()

    @examples(120)
    @given(to=st.none() | NEEDLE, body=st.none() | NEEDLE, shop_code=st.none() | NEEDLE)
    def check(to: str | None, body: str | None, shop_code: str | None) -> None:
        params = {"status": "all", "to": to, "body": body, "shop": shop_code, "per_page": "500"}

        def run() -> set[int]:
            f = parse_filter(params)
            return {r.id for r in search(session, f).rows}

        try:
            got = counted.run(run, (FilterError,))
        except FilterError as exc:  # only an unknown shop code may be refused here
            assert shop_code is not None and "shop" in str(exc)
            return
        assert shop_code is None or shop_code.strip() == "" or shop_code.strip() == "meta"
        to_s, body_s = (to or "").strip().lower(), (body or "").strip().lower()
        want = {
            i
            for i, addr, text in rows
            if to_s in addr.lower() and (not body_s or body_s in text.lower())
        }
        assert got == want, (to, body)

    check()
