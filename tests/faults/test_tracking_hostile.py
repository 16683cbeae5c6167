"""Hostile traffic at the public open pixel and click redirect (issue 18), in TestClient
over the plugin's app on both stores.

- Forged tokens (hypothesis text, signatures from another key), altered tokens (every
  single-character change of a genuine one), tokens of another campaign's link, open
  tokens at the click path: 404, and `tracking_forged_counted` (hits recorded for any of
  them) stays 0.
- Open-redirect attempts: javascript:, data:, //host, backslash hosts, CR/LF header
  injection and control characters in template hrefs are never tracked; the same URLs
  planted straight into the link table are refused (404); query/path tricks on a
  genuine token never change the target. `open_redirects` (a Location that is not the
  link's frozen URL) stays 0.
- Replays: a genuine token repeated counts in the totals, once in the unique figures.
- Huge and odd user agents (64 KB, control bytes, Latin-1 garbage): answered, classed.
- Floods: a few thousand hits on one mail are all written; past the recorder's bound
  new hits are dropped and counted (`tracking_flood_dropped`), never queued without end.
Knob: FAULTS_EXAMPLES_SCALE (default 1.0) multiplies the hypothesis examples.
"""

from __future__ import annotations

import os
import re
import string
import time
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select
from starlette.testclient import TestClient
from tracking_helpers import NOW, URLS, links_of, sent_campaign

from automail.campaigns.unsubscribe_web import create_app
from automail.db import session_factory
from automail.models import TrackingHit, TrackingLink
from automail.tracking.links import safe_target, url_hash
from automail.tracking.report import campaign_report
from automail.tracking.tokens import MailRef, click_token, link_part, mail_token, verify_click

SCALE = float(os.environ.get("FAULTS_EXAMPLES_SCALE", "1") or 1)
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"
CLICK = re.compile(r"""href=["']http://127\.0\.0\.1:8080/automail-public(/c/[^"']+)["']""")
PIXEL = re.compile(r'<img src="http://127\.0\.0\.1:8080/automail-public(/o/[^"]+)"')
HOSTILE_URLS = [
    "javascript:alert(document.cookie)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "//evil.example/phish",
    "///evil.example",
    "https:evil.example",
    "https://\\evil.example",
    "https://ok.example/\r\nSet-Cookie: stolen=1",
    "https://ok.example/%0d%0aX: y\nLocation: https://evil.example",
    "https://ok.example/\x00nul",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
    "ftp://evil.example/",
    "http://",
    "https://" + "a" * 3000 + ".example/",
]


def examples(n: int) -> settings:
    return settings(
        max_examples=max(1, int(n * SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@pytest.fixture
def client(engine) -> Iterator[TestClient]:  # noqa: ANN001
    client = TestClient(create_app(session_factory(engine)), follow_redirects=False)
    yield client
    client.app.state.tracking.close()  # no late write into the next test's store


def _hit_count(engine) -> int:  # noqa: ANN001
    with session_factory(engine)() as s:
        return s.scalar(select(func.count(TrackingHit.id))) or 0


def test_forged_altered_and_foreign_tokens_are_never_counted(
    engine, session, client, fault_totals
) -> None:  # noqa: ANN001
    campaign, mails = sent_campaign(session, customers=2)
    other, other_mails = sent_campaign(session, customers=1, shop_code="other")
    click = CLICK.findall(mails[0].body_html)[0]
    token = click.rsplit("/", 1)[1]
    ref, link_id = verify_click(token)
    other_link = links_of(session, other)[URLS[0]]
    tries: list[str] = []
    alphabet = string.ascii_letters + string.digits + "-_."
    for i, ch in enumerate(token):  # every one-character alteration of a genuine token
        tries.append(
            token[:i] + alphabet[(alphabet.index(ch) + 7) % len(alphabet)] + token[i + 1 :]
        )
    tries += [
        click_token(ref, link_id, key=b"not-the-shop-secret-key"),
        click_token(MailRef("campaign", other.id, ref.customer_id), link_id, key=b"x" * 16),
        token.replace(f".{link_id}.", f".{other_link}.", 1),  # another campaign's link id
        click_token(ref, other_link)[:-3] + "abc",
        f"{mail_token(ref)}.{link_part('campaign', other.id, other_link)}",  # recombined
        token + "A",
        token[:-1],
        token.replace("t1.", "v1.", 1),
    ]
    # A genuine signature over another campaign's link: still refused (link scope check).
    foreign = click_token(ref, other_link)
    statuses = [client.get(f"/c/{t}").status_code for t in tries]
    statuses += [client.get(f"/o/{t}").status_code for t in tries]
    statuses.append(client.get(f"/c/{foreign}").status_code)
    statuses.append(client.get(f"/o/{token}").status_code)  # a click token at the pixel
    statuses.append(client.get(f"/c/{mail_token(ref)}").status_code)  # pixel at the redirect
    client.app.state.tracking.flush()
    counted = _hit_count(engine)
    fault_totals.inputs += len(statuses)
    fault_totals.count("tracking_forged_counted", counted)
    assert set(statuses) == {404} and counted == 0
    assert other_mails


def test_hot_path_edges_are_404_and_never_counted(engine, session, client, fault_totals) -> None:  # noqa: ANN001
    """The dispatch ahead of the FastAPI stack: other methods on genuine tokens, empty and
    extra path segments, other cases and prefixes — 404 (or the stack's own answer),
    nothing recorded."""
    _, mails = sent_campaign(session, customers=1)
    pixel = PIXEL.findall(mails[0].body_html)[0]
    click = CLICK.findall(mails[0].body_html)[0]
    responses = [
        client.request(method, path)
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")
        for path in (pixel, click)
    ]
    paths = ["/o", "/o/", "/c/", "/o//", "/c//", f"{pixel}/", f"{click}/x", f"/x{pixel}"]
    paths += [
        pixel.replace("/o/", "/O/"),
        click.replace("/c/", "/C/"),
        pixel.replace("/o/", "/oo/"),
    ]
    paths += [click.replace("/c/", "/o/"), pixel.replace("/o/", "/c/"), f"/o/{'A' * 60_000}"]
    responses += [client.get(p) for p in paths]
    client.app.state.tracking.flush()
    counted = _hit_count(engine)
    fault_totals.inputs += len(responses)
    fault_totals.count("tracking_forged_counted", counted)
    assert counted == 0
    assert {r.status_code for r in responses} <= {404, 405, 307}, [
        (r.request.method, str(r.request.url)[:80], r.status_code)
        for r in responses
        if r.status_code not in (404, 405, 307)
    ]


@examples(300)
@given(junk=st.text(min_size=0, max_size=300))
def test_random_tokens_are_404(engine, client, fault_totals, junk: str) -> None:  # noqa: ANN001
    path = quote(junk, safe="")
    for kind in ("c", "o"):
        r = client.get(f"/{kind}/{path}")
        if r.status_code == 307:  # "%2F" at the end: the app's own trailing-slash redirect
            assert r.headers["location"].startswith(f"http://testserver/{kind}/")
        else:
            assert r.status_code == 404, (junk, r.status_code)
    fault_totals.inputs += 2
    client.app.state.tracking.flush()
    counted = _hit_count(engine)
    fault_totals.count("tracking_forged_counted", counted)
    assert counted == 0


def test_open_redirect_attempts(engine, session, client, fault_totals) -> None:  # noqa: ANN001
    assert not any(safe_target(u) for u in HOSTILE_URLS)
    plantable = [u for u in HOSTILE_URLS if "\x00" not in u]  # PostgreSQL text refuses NUL
    body = "".join(f'<a href="{u}">x</a>' for u in plantable)
    body += '<a href="https://ok.example/">ok</a>'
    campaign, mails = sent_campaign(session, customers=1, body=body)
    frozen = links_of(session, campaign)
    assert list(frozen) == ["https://ok.example/"]  # none of the hostile hrefs was tracked
    # Plant the hostile URLs straight into the link table (a tampered store) and sign them.
    ref = MailRef("campaign", campaign.id, mails[0].customer_id)
    planted = []
    for url in plantable:
        link_id = session.execute(
            insert(TrackingLink)
            .values(scope="campaign", scope_id=campaign.id, url=url, url_hash=url_hash(url))
            .returning(TrackingLink.id)
        ).scalar_one()
        planted.append(click_token(ref, link_id))
    session.commit()
    genuine = CLICK.findall(mails[0].body_html)[0]
    responses = [client.get(f"/c/{t}") for t in planted]
    refused = sum(r.status_code == 404 for r in responses)
    tricks = [
        f"{genuine}?url=https://evil.example",
        f"{genuine}?next=//evil.example&redirect=javascript:alert(1)",
        f"{genuine}%0d%0aLocation:%20https://evil.example",
        f"{genuine}/../../evil.example",
        "/c/https://evil.example",
        "/c//evil.example",
        "/c/%2F%2Fevil.example",
    ]
    responses += [client.get(t) for t in tricks]
    bad = [
        r.headers["location"]
        for r in responses
        if "location" in r.headers and r.headers["location"] != "https://ok.example/"
    ]
    fault_totals.inputs += len(responses)
    fault_totals.count("open_redirects", len(bad))
    assert bad == [] and refused == len(plantable)
    ok = [r for r in responses if r.status_code == 302]
    assert len(ok) == 2  # only the two query-string variants of the genuine link


def test_replays_huge_agents_and_floods(engine, session, client, fault_totals) -> None:  # noqa: ANN001
    campaign, mails = sent_campaign(session, customers=2)
    pixel = PIXEL.findall(mails[0].body_html)[0]
    click = CLICK.findall(mails[0].body_html)[0]
    agents = [
        "x" * 65_536,
        "Mozilla/5.0 \x01\x02\x7f control",
        "Ã©Ã¨ latin-1 Ã¿ garbage Ã",
        " ",
        "Mozilla/5.0",
        BROWSER,
    ]
    for agent in agents:
        r = client.get(pixel, headers={"user-agent": agent.encode("latin-1")})
        assert r.status_code == 200
    replays = 200
    for _ in range(replays):
        assert client.get(click, headers={"user-agent": BROWSER}).status_code == 302
    recorder = client.app.state.tracking
    recorder.flush()
    (fig,) = campaign_report(session, campaign.id).rows
    assert fig.unique_clicks == 1 and fig.unique_opens == 1
    verdicts = session.execute(
        select(TrackingHit.kind, TrackingHit.machine, TrackingHit.at, TrackingHit.ua_class).where(
            TrackingHit.machine.is_not(None)
        )
    ).all()
    assert fig.total_clicks + fig.machine_clicks == replays, verdicts
    # Flood: a few thousand hits are written; beyond the bound new ones are dropped.
    flood = 3000
    for _ in range(flood):
        client.get(PIXEL.findall(mails[1].body_html)[0], headers={"user-agent": BROWSER})
    recorder.flush()
    recorder.max_pending = 50
    with recorder.paused():  # the store is slow: hits pile up to the bound, then drop
        for _ in range(120):
            assert client.get(pixel, headers={"user-agent": BROWSER}).status_code == 200
        dropped = recorder.stats.dropped
    recorder.flush()
    fault_totals.inputs += len(agents) + replays + flood + 120
    fault_totals.count("tracking_flood_dropped", dropped)
    assert dropped == 70
    assert _hit_count(engine) == len(agents) + replays + flood + 50
    fault_totals.count("tracking_forged_counted", 0)


def test_hammered_token_keeps_the_writer_linear(
    engine,
    session,
    client,
    fault_totals,
    monkeypatch,  # noqa: ANN001
) -> None:
    """One genuine click token replayed 20,000 times within a second, then the mail's
    open and more clicks: every flush stays linear in the hits it touches. The burst rule
    and the clicks-before-open rule were quadratic per mail (20,000 clicks: minutes in the
    writer thread, holding the api-server worker's GIL, or in PostgreSQL)."""
    campaign, mails = sent_campaign(session, customers=1)
    ref, first_link = verify_click(CLICK.findall(mails[0].body_html)[0].removeprefix("/c/"))
    other_links = [i for i in links_of(session, campaign).values() if i != first_link][:2]
    recorder = client.app.state.tracking
    hammer = 20_000
    rounds = [
        [first_link] * hammer,  # one link: no burst, nothing flagged yet (no open)
        [None] + [first_link, *other_links] * 1000,  # the open, then a 3-link burst
        [first_link] * 10,
    ]
    clock = iter(())  # hit times: each round 10 s after the last, its hits 1 µs apart
    monkeypatch.setattr("automail.tracking.recorder._now", lambda: next(clock))
    slow = 0
    for r, links in enumerate(rounds):
        at = NOW + timedelta(days=1, seconds=10 * r)
        clock = iter(at + timedelta(microseconds=i) for i in range(len(links)))
        with recorder.paused():  # the background thread must not take part of the round
            for link in links:
                recorder.record(ref, link, "GET", "browser")
        started = time.monotonic()
        assert recorder.flush() == len(links)
        slow += time.monotonic() - started > 0.5 + 0.25 * len(links) / 1000  # 250 µs a hit
    fault_totals.inputs += sum(map(len, rounds))
    fault_totals.count("tracking_hammer_slow_flushes", slow)
    session.rollback()  # a fresh snapshot: the writer committed in its own sessions
    verdicts = dict(
        session.execute(
            select(TrackingHit.machine, func.count()).group_by(TrackingHit.machine)
        ).all()
    )
    # Every hammered click came before the mail's first open (it is in the second round).
    assert verdicts.get("click_before_open", 0) >= hammer
    assert verdicts.get("link_burst", 0) >= 3000
    assert slow == 0
