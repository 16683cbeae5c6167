"""Opens and clicks (issue 18) on both stores: link rewriting frozen per campaign, the
public pixel/redirect (in TestClient over the plugin's app), machine hits told apart,
figures, audience filters, resend to non-openers, and sequences started by a click."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient
from tracking_helpers import NOW, URLS, links_of, sent_campaign

from automail.campaigns import create_campaign, tick
from automail.campaigns.audience import matching_ids, validate_filter
from automail.campaigns.content import CompiledContent
from automail.campaigns.unsubscribe_web import create_app
from automail.db import session_factory
from automail.models import Campaign, Customer, Mail, TrackingHit
from automail.sample_data import make_customer, make_order, make_shop
from automail.steps import add_step, create_due_step_mails, create_sequence
from automail.tracking.links import CLICK_MARK, Tracker, TrackingOptions
from automail.tracking.machine import Hit, Rules, burst_ids, classify, ua_class
from automail.tracking.report import campaign_report, report_csv, sequence_report
from automail.tracking.resend import resend_to_non_openers
from automail.tracking.tokens import BadToken, MailRef, click_token, mail_token, verify_click

BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"
# The app is mounted at /automail-public by the plugin; TestClient talks to it directly.
CLICK = re.compile(r"""href=["']http://127\.0\.0\.1:8080/automail-public(/c/[^"']+)["']""")
PIXEL = re.compile(r'<img src="http://127\.0\.0\.1:8080/automail-public(/o/[^"]+)"')


@pytest.fixture
def client(engine) -> Iterator[TestClient]:  # noqa: ANN001
    client = TestClient(create_app(session_factory(engine)), follow_redirects=False)
    yield client
    client.app.state.tracking.close()  # no late write into the next test's store


def _flush(client: TestClient) -> None:
    client.app.state.tracking.flush()


def _hits(session: Session) -> list[TrackingHit]:
    session.rollback()
    session.expire_all()
    return list(session.scalars(select(TrackingHit).order_by(TrackingHit.id)))


def test_links_rewritten_to_signed_redirects_and_a_pixel(session: Session) -> None:
    campaign, mails = sent_campaign(session)
    links = links_of(session, campaign)
    assert set(links) == set(URLS)  # literal http(s) links only: not mailto, not unsubscribe
    html = mails[0].body_html
    assert len(CLICK.findall(html)) == 3
    assert "mailto:help@example.jp" in html and "/automail-public/unsubscribe?t=" in html
    assert "shop.example.jp" not in html  # every literal link now goes through the redirect
    assert html.index("/automail-public/o/") < html.index("</body>")
    tokens = {verify_click(t.rsplit("/", 1)[1])[0] for t in CLICK.findall(html)}
    assert tokens == {MailRef("campaign", campaign.id, mails[0].customer_id)}
    assert "\x00" not in html  # every mark filled with this mail's token
    # Another recipient's links carry their own tokens.
    assert CLICK.findall(mails[1].body_html)[0] != CLICK.findall(html)[0]


def test_tracking_is_off_by_default(session: Session) -> None:
    campaign, mails = sent_campaign(session, track_opens=False, track_clicks=False)
    assert "/automail-public/c/" not in mails[0].body_html
    assert "/automail-public/o/" not in mails[0].body_html
    assert links_of(session, campaign) == {}


def test_text_links_rewritten_only_when_asked(session: Session) -> None:
    body = "ご覧ください: https://shop.example.jp/new。\nクーポン: <#クーポンURL>"
    _, plain = sent_campaign(session, body=body, body_format="text")
    assert "https://shop.example.jp/new。" in plain[0].body_text
    tracker = Tracker(
        session, "campaign", 99, body, "text", TrackingOptions(clicks=True, text_links=True)
    )
    assert f"{CLICK_MARK}." in tracker.template and "<#クーポンURL>" in tracker.template
    compiled = CompiledContent("s", tracker.template, "text")
    out = compiled.render({"unsubscribe_url": "u"})
    (out.body_text,) = tracker.fill(MailRef("campaign", 99, 1), out.body_text)
    assert CLICK_MARK not in out.body_text
    assert re.search(
        r"ご覧ください: http://127\.0\.0\.1:8080/automail-public/c/t1\.c99-1\.[\w-]{43}\.\d+\.[\w-]{43}。",
        out.body_text,
    )


def test_open_and_click_recorded_once_per_person(session: Session, client: TestClient) -> None:
    campaign, mails = sent_campaign(session)
    html = mails[0].body_html
    (pixel,) = PIXEL.findall(html)
    headers = {"user-agent": BROWSER}
    for _ in range(2):
        r = client.get(pixel, headers=headers)
        assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
    r = client.get(CLICK.findall(html)[0], headers=headers)
    assert r.status_code == 302 and r.headers["location"] == URLS[0]
    _flush(client)
    hits = _hits(session)
    assert [(h.kind, h.machine, h.mail_id, h.ua_class) for h in hits] == [
        ("open", None, mails[0].id, "browser"),
        ("open", None, mails[0].id, "browser"),
        ("click", None, mails[0].id, "browser"),
    ]
    (fig,) = campaign_report(session, campaign.id).rows
    assert (fig.delivered, fig.unique_opens, fig.total_opens) == (3, 1, 2)
    assert (fig.unique_clicks, fig.total_clicks, fig.open_rate) == (1, 1, round(1 / 3, 4))
    assert fig.click_to_open == 1.0


def test_forged_altered_or_foreign_tokens_are_404_and_counted_nowhere(
    session: Session, client: TestClient
) -> None:
    campaign, mails = sent_campaign(session)
    click = CLICK.findall(mails[0].body_html)[0]
    token = click.rsplit("/", 1)[1]
    ref, link_id = verify_click(token)
    altered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    forged = click_token(ref, link_id, key=b"someone-elses-secret-key")
    moved = token.replace(f"-{ref.customer_id}.", f"-{ref.customer_id + 1}.", 1)
    foreign = click_token(MailRef("campaign", campaign.id + 1, ref.customer_id), link_id)
    as_open = mail_token(ref)
    for bad in (altered, forged, moved, foreign, "t1.c1-1.1.x", "", "../../etc/passwd"):
        assert client.get(f"/automail-public/c/{bad}").status_code == 404, bad
    assert client.get(f"/automail-public/c/{as_open}").status_code == 404
    assert client.get(f"/automail-public/o/{token}").status_code == 404  # a click token
    _flush(client)
    assert _hits(session) == []
    with pytest.raises(BadToken):
        verify_click(altered)


def test_editing_the_template_never_breaks_an_old_redirect(
    session: Session, client: TestClient
) -> None:
    campaign, mails = sent_campaign(session)
    old_click = CLICK.findall(mails[0].body_html)[1]
    campaign.body = campaign.body.replace(
        "https://shop.example.jp/new", "https://shop.example.jp/v2"
    )
    Tracker(session, "campaign", campaign.id, campaign.body, "html", TrackingOptions(clicks=True))
    session.commit()
    assert len(links_of(session, campaign)) == 4  # rows only added
    r = client.get(old_click, headers={"user-agent": BROWSER})
    assert r.status_code == 302 and r.headers["location"] == "https://shop.example.jp/new"


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        (BROWSER, "browser"),
        ("Mozilla/5.0", "apple_mpp"),
        ("", "empty"),
        ("Mozilla/5.0 (compatible; Barracuda Sentinel)", "scanner"),
        ("python-requests/2.32", "scanner"),
        ("Mozilla/5.0 (X11) HeadlessChrome/131.0", "scanner"),
        ("Mozilla/5.0 (Windows NT 5.1) GoogleImageProxy", "image_proxy"),
        ("Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0)", "mail_client"),
        ("x" * 100_000, "other"),
    ],
)
def test_user_agent_classes(agent: str, expected: str) -> None:
    assert ua_class(agent) == expected
    assert ua_class(BROWSER, "17.58.1.2") == "apple_mpp"  # Apple's network, never stored


def test_machine_rules_per_mail() -> None:
    sent = datetime(2026, 6, 10, 1, 0, tzinfo=UTC)

    def hit(i: int, kind: str, link: int | None, secs: float, **kw) -> Hit:
        return Hit(
            i,
            kind,
            link,
            sent + timedelta(seconds=secs),
            kw.get("m", "GET"),
            kw.get("ua", "browser"),
        )

    verdict = {
        h.id: h.machine
        for h in classify(
            [
                hit(1, "click", 1, 3),  # scanner on arrival
                hit(2, "click", 2, 100, m="HEAD"),
                hit(3, "click", 1, 200),  # before the person's open at 300
                hit(4, "open", None, 300),
                hit(5, "click", 1, 400),  # a person
                hit(6, "click", 1, 900.0),  # burst: three links within a second
                hit(7, "click", 2, 900.3),
                hit(8, "click", 3, 900.6),
                hit(9, "open", None, 950, ua="apple_mpp"),
            ],
            sent,
        )
    }
    assert verdict == {
        1: "click_right_after_delivery",
        2: "head_request",
        3: "click_before_open",
        4: None,
        5: None,
        6: "link_burst",
        7: "link_burst",
        8: "link_burst",
        9: "apple_privacy_proxy",
    }


def _bursts_by_definition(clicks: list[Hit], window: timedelta, links: int) -> set[int]:
    """The burst rule read literally: every window starting at a click, all its clicks."""
    found: set[int] = set()
    for i, first in enumerate(clicks):
        inside = [h for h in clicks[i:] if h.at - first.at <= window]
        if len({h.link_id for h in inside}) >= links:
            found.update(h.id for h in inside)
    return found


@given(
    st.lists(st.tuples(st.integers(0, 5000), st.sampled_from([None, 1, 2, 3, 4])), max_size=60),
    st.integers(2, 4),
)
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
def test_linear_burst_rule_matches_its_definition(
    raw: list[tuple[int, int | None]], links: int
) -> None:
    start = datetime(2026, 6, 10, 1, 0, tzinfo=UTC)
    clicks = [
        Hit(i, "click", link, start + timedelta(milliseconds=ms), "GET", "browser")
        for i, (ms, link) in enumerate(sorted(raw, key=lambda r: r[0]))
    ]
    rules = Rules(burst_window=timedelta(seconds=1), burst_links=links)
    assert burst_ids(clicks, rules) == _bursts_by_definition(clicks, rules.burst_window, links)


def test_scanner_burst_is_flagged_and_kept_out_of_the_rates(
    session: Session, client: TestClient
) -> None:
    campaign, mails = sent_campaign(session, sent_at=datetime.now(UTC))
    for click in CLICK.findall(mails[1].body_html):
        assert client.get(click, headers={"user-agent": BROWSER}).status_code == 302
    client.head(PIXEL.findall(mails[2].body_html)[0], headers={"user-agent": BROWSER})
    client.get(PIXEL.findall(mails[2].body_html)[0], headers={"user-agent": "Mozilla/5.0"})
    _flush(client)
    hits = _hits(session)
    assert len(hits) == 5 and all(h.machine for h in hits)
    report = campaign_report(session, campaign.id)
    (fig,) = report.rows
    assert (fig.unique_opens, fig.unique_clicks, fig.machine_clicks, fig.machine_opens) == (
        0,
        0,
        3,
        2,
    )
    assert any("machine hit" in n for n in report.notes)
    assert {lf.machine_clicks for lf in report.links} == {1}


def test_report_figures_csv_and_bounces(session: Session, client: TestClient) -> None:
    campaign, mails = sent_campaign(session, customers=4)
    mails[3].bounce_outcome = "hard"
    customer = session.get(Customer, mails[2].customer_id)
    customer.unsubscribed_at = NOW + timedelta(hours=1)
    session.commit()
    for mail in mails[:2]:
        client.get(PIXEL.findall(mail.body_html)[0], headers={"user-agent": BROWSER})
    client.get(CLICK.findall(mails[0].body_html)[2], headers={"user-agent": BROWSER})
    client.get(CLICK.findall(mails[0].body_html)[2], headers={"user-agent": BROWSER})
    _flush(client)
    report = campaign_report(session, campaign.id)
    (fig,) = report.rows
    assert (fig.sent, fig.delivered, fig.bounces, fig.unsubscribes) == (4, 3, 1, 1)
    assert (fig.unique_opens, fig.open_rate, fig.unique_clicks, fig.total_clicks) == (
        2, round(2 / 3, 4), 1, 2,
    )  # fmt: skip
    assert (fig.click_rate, fig.click_to_open) == (round(1 / 3, 4), 0.5)
    faq = next(lf for lf in report.links if lf.url == URLS[2])
    assert (faq.unique_clicks, faq.total_clicks) == (1, 2)
    text = report_csv(report)
    assert text.splitlines()[0].startswith("row,label,scope,scope_id,sent,delivered")
    assert f"link,,campaign,{campaign.id},{faq.link_id},{URLS[2]}" not in text  # column order
    assert any(line.startswith("link,") and URLS[2] in line for line in text.splitlines())
    assert sum(1 for _ in report.series) >= 1 and sum(b[1] for b in report.series) == 2


def test_audience_filters_and_resend_to_non_openers(session: Session, client: TestClient) -> None:
    campaign, mails = sent_campaign(session, customers=4)
    campaign.status = "counted"
    session.commit()
    client.get(PIXEL.findall(mails[0].body_html)[0], headers={"user-agent": BROWSER})
    client.get(CLICK.findall(mails[1].body_html)[1], headers={"user-agent": BROWSER})
    client.get(PIXEL.findall(mails[2].body_html)[0], headers={"user-agent": "Mozilla/5.0"})
    _flush(client)
    new_link = links_of(session, campaign)[URLS[1]]

    def who(flt: dict) -> set[int]:
        return set(session.scalars(matching_ids(campaign.shop_id, flt, "Asia/Tokyo")))

    ids = [m.customer_id for m in mails]
    assert who({"opened_campaign": campaign.id}) == {ids[0], ids[1]}  # a click is an open
    assert who({"received_campaign": campaign.id, "not_opened_campaign": campaign.id}) == {
        ids[2],  # only a privacy proxy fetched its pixel
        ids[3],
    }
    assert who({"clicked_link": new_link}) == {ids[1]}
    with pytest.raises(ValueError, match="opened_campaign: 'x' is not an id"):
        validate_filter({"opened_campaign": "x"})

    resend = resend_to_non_openers(session, campaign.id, now=NOW + timedelta(days=1))
    assert resend.audience_mode == "fixed" and resend.track_opens and resend.track_clicks
    tick(session, resend.scheduled_at)
    to = set(session.scalars(select(Mail.customer_id).where(Mail.campaign_id == resend.id)))
    assert to == {ids[2], ids[3]}
    fresh = session.get(Campaign, resend.id)
    assert fresh.body == campaign.body
    untracked = create_campaign(
        session, shop_id=campaign.shop_id, name="x", subject="s", body="b", body_format="text",
        scheduled_at=NOW + timedelta(hours=1), now=NOW,
    )  # fmt: skip
    with pytest.raises(ValueError, match="needs a campaign that was sent"):
        resend_to_non_openers(session, untracked.id, now=NOW)


def test_sequence_started_by_a_click_once_per_customer(
    session: Session, client: TestClient
) -> None:
    campaign, mails = sent_campaign(session, customers=3)
    session.commit()
    link = links_of(session, campaign)[URLS[1]]
    for customer_id in (mails[0].customer_id, mails[1].customer_id):
        session.get(Customer, customer_id).signed_up_at = NOW - timedelta(days=30)
    session.commit()
    once = create_sequence(
        session, shop_id=campaign.shop_id, name="clicked new", start_event="click",
        start_link_id=link, now=NOW,
    )  # fmt: skip
    again = create_sequence(
        session, shop_id=campaign.shop_id, name="each click", start_event="click",
        start_link_id=link, allow_restart=True, now=NOW,
    )  # fmt: skip
    for seq in (once, again):
        add_step(session, seq.id, offset="0m", subject="新商品をご覧いただき", body_text="x")
    session.commit()
    person = CLICK.findall(mails[0].body_html)[1]
    for _ in range(2):  # the same person clicks twice, later
        client.get(person, headers={"user-agent": BROWSER})
        _flush(client)
    client.get(CLICK.findall(mails[1].body_html)[1], headers={"user-agent": "curl/8.0"})
    _flush(client)
    report = create_due_step_mails(session, until=datetime.now(UTC) + timedelta(minutes=1))
    rows = session.execute(
        select(Mail.source_key, Mail.customer_id).where(Mail.kind == "step")
    ).all()
    by_seq = {
        seq.id: sorted(k for k, _ in rows if k.startswith(f"step:{seq.steps[0].id}:"))
        for seq in (once, again)
    }
    assert by_seq[once.id] == [f"step:{once.steps[0].id}:customer:{mails[0].customer_id}"]
    assert len(by_seq[again.id]) == 2 and all(":start:" in k for k in by_seq[again.id])
    assert report.created == 3
    assert (
        create_due_step_mails(session, until=datetime.now(UTC) + timedelta(minutes=1)).created == 0
    )
    with pytest.raises(ValueError, match="start_event 'click' needs"):
        create_sequence(session, shop_id=campaign.shop_id, name="x", start_event="click")
    with pytest.raises(ValueError, match="allow_restart: a 'signup' happens once"):
        create_sequence(
            session, shop_id=campaign.shop_id, name="x", start_event="signup", allow_restart=True
        )


def test_events_before_the_customer_existed_never_start_a_sequence(session: Session) -> None:
    shop = make_shop(session)
    seq = create_sequence(
        session,
        shop_id=shop.id,
        name="per order",
        start_event="order",
        now=NOW - timedelta(days=90),
    )
    add_step(session, seq.id, offset="1d", subject="ありがとう", body_text="x")
    newcomer = make_customer(session, shop, "new@example.jp", signed_up_at=NOW)
    regular = make_customer(session, shop, "old@example.jp", signed_up_at=NOW - timedelta(days=60))
    make_order(session, newcomer, NOW - timedelta(days=10), number="IMPORTED-1")  # imported, older
    make_order(session, regular, NOW - timedelta(days=10), number="R1")
    make_order(session, regular, NOW - timedelta(days=5), number="R2")
    create_due_step_mails(session, until=NOW + timedelta(days=2))
    got = session.execute(select(Mail.to_address, Mail.due_at).where(Mail.kind == "step")).all()
    assert got == [("old@example.jp", NOW - timedelta(days=9))]  # once, from the first order


def test_sequence_report_per_step(session: Session) -> None:
    shop = make_shop(session)
    seq = create_sequence(
        session, shop_id=shop.id, name="welcome", start_event="signup", now=NOW,
        track_opens=True, track_clicks=True,
    )  # fmt: skip
    add_step(
        session,
        seq.id,
        offset="0m",
        subject="ようこそ",
        body_html='<a href="https://shop.example.jp/">shop</a>',
    )
    make_customer(session, shop, "a@example.jp", signed_up_at=NOW + timedelta(minutes=5))
    create_due_step_mails(session, until=NOW + timedelta(hours=1))
    (mail,) = session.scalars(select(Mail).where(Mail.kind == "step"))
    assert "/automail-public/c/t1.s" in mail.body_html and "/automail-public/o/" in mail.body_html
    report = sequence_report(session, seq.id)
    assert [r.label for r in report.rows] == ["#1 +0m ようこそ"] and len(report.links) == 1


def test_cli_report_csv_and_resend(session: Session, client: TestClient, capsys, tmp_path) -> None:  # noqa: ANN001
    from automail.cli import main

    campaign, mails = sent_campaign(session, customers=2)
    campaign.status = "counted"
    session.commit()
    client.get(PIXEL.findall(mails[0].body_html)[0], headers={"user-agent": BROWSER})
    _flush(client)
    assert main(["campaigns", "report", str(campaign.id)]) == 0
    out = capsys.readouterr().out
    assert "open rate      50.0%" in out and "cannot be counted" in out
    assert main(["campaigns", "report", str(campaign.id), "--csv", "-"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("row,label") and rows[1].startswith("total,夏のセール")
    assert len([r for r in rows if r.startswith("link,")]) == 3
    assert main(["campaigns", "report", "999"]) == 2
    assert "campaign_id: no campaign 999" in capsys.readouterr().err
    assert main(["campaigns", "resend-non-openers", str(campaign.id)]) == 0
    assert "fixed list of 1 customers frozen" in capsys.readouterr().out


def test_hits_are_answered_ahead_of_the_public_apps_stack(session: Session, engine) -> None:  # noqa: ANN001
    """/o/ and /c/ never enter the FastAPI stack (its middleware sees only other paths);
    everything else, lifespan included, still does."""
    _, mails = sent_campaign(session, customers=1)
    app = create_app(session_factory(engine))
    seen: list[str] = []

    @app.middleware("http")
    async def spy(request, call_next):  # noqa: ANN001, ANN202
        seen.append(request.url.path)
        return await call_next(request)

    pixel = PIXEL.findall(mails[0].body_html)[0]
    with TestClient(app, follow_redirects=False) as client:
        assert client.get(pixel, headers={"user-agent": BROWSER}).status_code == 200
        assert client.get(CLICK.findall(mails[0].body_html)[0]).status_code == 302
        assert client.get("/o/nonsense").status_code == 404
        assert client.post(pixel).status_code == 404  # only GET/HEAD, still ahead of the stack
        assert client.get("/o").status_code == 404  # not the hot path: FastAPI's own 404
        assert client.get("/unsubscribe?t=bad").status_code == 400
        client.app.state.tracking.flush()
    assert seen == ["/o", "/unsubscribe"]
    assert len(_hits(session)) == 2


def test_heap_frozen_once_started_and_once_warm(
    session: Session, engine, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    """Full collections over the api-server's heap stalled every hit (bench p99 0.5-1.2 s):
    frozen at startup and after the first hits are written, once per process each."""
    from automail.tracking import web

    frozen: list[int] = []
    monkeypatch.setattr(web, "_frozen", set())
    monkeypatch.setattr(web.gc, "freeze", lambda: frozen.append(1))
    _, mails = sent_campaign(session, customers=1)
    pixel = PIXEL.findall(mails[0].body_html)[0]
    for _ in range(2):  # a second app in the same process freezes nothing more
        with TestClient(create_app(session_factory(engine))) as client:
            assert len(frozen) == 1 or frozen == [1, 1]
            client.get(pixel, headers={"user-agent": BROWSER})
            client.get(pixel, headers={"user-agent": BROWSER})
            client.app.state.tracking.flush()
            assert frozen == [1, 1]
    assert web._frozen == {"started", "warm"}


def test_hits_go_through_the_writer_process(engine, session) -> None:  # noqa: ANN001
    """The app as the api-server runs it (no sessions given): hits are forwarded to a
    writer process on the configured store, which stores them with their verdicts and
    exits once the app closes its pipe."""
    campaign, mails = sent_campaign(session, customers=3)
    session.commit()
    app = create_app()  # store of the configuration (the fixture's AUTOMAIL_DB_URL)
    client = TestClient(app, follow_redirects=False)
    pixels = [PIXEL.findall(m.body_html)[0] for m in mails]
    clicks = [CLICK.findall(m.body_html)[0] for m in mails]
    for path in pixels + clicks:
        r = client.get(path, headers={"user-agent": BROWSER})
        assert r.status_code in (200, 302)
    assert client.head(pixels[0]).status_code == 200  # a HEAD: machine
    forwarder = app.state.tracking
    forwarder.forward()  # whatever its thread has not handed over yet
    writer = forwarder.writer
    forwarder.close()
    assert writer is not None and writer.returncode == 0 and forwarder.stats.writers_started == 1
    session.rollback()
    (fig,) = campaign_report(session, campaign.id).rows
    assert (fig.unique_opens, fig.total_opens, fig.unique_clicks) == (3, 3, 3)
    assert fig.machine_opens == 1
