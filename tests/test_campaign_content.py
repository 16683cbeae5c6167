"""Newsletter content: the unsubscribe link is checked in the rendered mail, not the source
(issue 12.6), and campaign bodies are validated by a sample render (issue 12.5)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from automail.campaigns import create_campaign, tick
from automail.campaigns.content import CompiledContent, context_for, shows_link
from automail.models import Mail
from automail.rendering.samples import SAMPLE_CUSTOMER, SAMPLE_SHOP
from automail.sample_data import make_customer, make_shop
from automail.steps.sequences import add_step, create_sequence

NOW = datetime(2026, 6, 10, 1, 0, tzinfo=UTC)
URL = "https://shop.example.jp/automail-public/unsubscribe?t=v1.1.2.sig&x=1"

# Bodies that mention the link in their source but do not show it in the mail.
HIDDEN_TEXT = {
    "comment": "ご案内です {# unsubscribe_url #}",
    "false if": "ご案内です{% if false %}{{ unsubscribe_url }}{% endif %}",
    "set, never output": "{% set u = unsubscribe_url %}ご案内です",
    "mangled": "停止: {{ unsubscribe_url[:-3] }}",
    "tag in a comment": "ご案内です {# [UNSUBSCRIBE_URL] #}",
}
HIDDEN_HTML = {
    **HIDDEN_TEXT,
    "html comment": '<p>ご案内</p><!-- <a href="{{ unsubscribe_url }}">停止</a> -->',
    "text, not a link": "<p>停止: {{ unsubscribe_url }}</p>",
    "unclosed comment": '<p>ご案内</p><!-- <a href="{{ unsubscribe_url }}">',
}


def _render(body: str, body_format: str) -> str:
    content = CompiledContent("件名", body, body_format)
    rendered = content.render(context_for(SAMPLE_SHOP, SAMPLE_CUSTOMER, URL))
    return (rendered.body_text or rendered.body_html) or ""


@pytest.mark.parametrize("case", list(HIDDEN_TEXT))
def test_text_body_that_hides_the_link_gets_the_standard_block(case: str) -> None:
    body = _render(HIDDEN_TEXT[case], "text")
    assert body.rstrip().endswith(f"配信停止をご希望の方はこちら: {URL}")


@pytest.mark.parametrize("case", list(HIDDEN_HTML))
def test_html_body_that_hides_the_link_gets_the_standard_block(case: str) -> None:
    body = _render(HIDDEN_HTML[case], "html")
    escaped = URL.replace("&", "&amp;")
    assert body.rstrip().endswith(f'<a href="{escaped}">こちら</a></p>')
    assert shows_link(body, URL, html=True)


@pytest.mark.parametrize(
    ("body", "body_format"),
    [
        ("停止はこちら: <#配信停止URL>\nでは", "text"),
        ('<p><a href="{{ unsubscribe_url }}">配信停止</a></p>', "html"),
        ("<p><a href=[UNSUBSCRIBE_URL]>配信停止</a></p>", "html"),
    ],
)
def test_body_that_shows_the_link_gets_no_second_one(body: str, body_format: str) -> None:
    rendered = _render(body, body_format)
    assert "配信停止をご希望の方は" not in rendered
    assert shows_link(rendered, URL, html=body_format == "html")


def test_newsletter_with_commented_out_link_is_sent_with_one(session: Session) -> None:
    shop = make_shop(session)
    make_customer(session, shop, "a@example.jp", name="佐藤")
    campaigns = [
        create_campaign(
            session,
            shop_id=shop.id,
            name=f"c{i}",
            subject="お知らせ",
            body=body,
            body_format=fmt,
            scheduled_at=NOW + timedelta(hours=2),
            now=NOW,
        )
        for i, (body, fmt) in enumerate(
            [
                ("{# unsubscribe_url #}本文", "text"),
                ("<p>本文</p><!-- {{ unsubscribe_url }} -->", "html"),
            ]
        )
    ]
    tick(session, NOW + timedelta(hours=2))
    for campaign in campaigns:
        mail = session.scalar(select(Mail).where(Mail.campaign_id == campaign.id))
        assert mail is not None
        url = mail.extra_headers["List-Unsubscribe"].split("<", 1)[1].split(">", 1)[0]
        assert shows_link(
            mail.body_text or mail.body_html or "", url, html=mail.body_html is not None
        )


BOMBS = {
    "string repeat": '{{ "a"*10**9 }}',
    "center": "{{ 'a'|center(10**9) }}",
    "nested loops": "{% for i in range(9999) %}{% for j in range(9999) %}x{% endfor %}{% endfor %}",
    "expression error": "{{ 1/0 }}",
}


@pytest.mark.parametrize("case", list(BOMBS))
def test_campaign_and_step_bodies_are_sample_rendered_at_save(session: Session, case: str) -> None:
    shop = make_shop(session)
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"^body: template failed to render"):
        create_campaign(
            session, shop_id=shop.id, name="x", subject="件名", body=BOMBS[case],
            body_format="text", scheduled_at=NOW + timedelta(hours=2), now=NOW,
        )  # fmt: skip
    seq = create_sequence(session, shop_id=shop.id, name="w", start_event="signup", now=NOW)
    with pytest.raises(ValueError, match=r"^body: template failed to render"):
        add_step(session, seq.id, offset="1d", subject="件名", body_html=BOMBS[case])
    with pytest.raises(ValueError, match=r"^subject: template failed to render"):
        CompiledContent(BOMBS[case], "本文", "text")
    assert time.monotonic() - start < 5


def test_data_dependent_bomb_fails_at_render_naming_the_field() -> None:
    content = CompiledContent(
        "件名", '{% if customer_name == "爆弾" %}{{ "x"*10**8 }}{% endif %}', "text"
    )
    bomb = type(SAMPLE_CUSTOMER)(**{**vars(SAMPLE_CUSTOMER), "name": "爆弾"})
    with pytest.raises(ValueError, match=r"^body: template failed to render: .*rendering limit"):
        content.render(context_for(SAMPLE_SHOP, bomb, URL))
