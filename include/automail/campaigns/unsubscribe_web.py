"""The public unsubscribe page (C10), served by the Airflow plugin without login.

GET  /unsubscribe?t=TOKEN  → a confirmation page; never changes anything (mail
     scanners and link previews follow links).
POST /unsubscribe?t=TOKEN  → marketing permission off. Accepts the confirmation form
     and RFC 8058 one-click posts (body `List-Unsubscribe=One-Click`).
A malformed token is 400, a forged/altered one 403, an unknown customer 404; in
every such case nothing changes. The token is the only credential, which is why it
is an HMAC over shop and customer (automail.campaigns.unsubscribe).
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from automail.campaigns.unsubscribe import BadToken, apply_unsubscribe, verify_token
from automail.models import Customer, Shop

PAGE = """<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title></head>
<body style="font-family:sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem">
<h1 style="font-size:1.3rem">{title}</h1>{body}</body></html>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=escape(title), body=body), status_code=status)


def _error(exc: BadToken) -> HTMLResponse:
    return _page(
        "配信停止を受け付けられませんでした",
        f"<p>このリンクは無効です。メールに記載のリンクをそのままお使いください。</p>"
        f"<p><small>{escape(str(exc))}</small></p>",
        exc.status_code,
    )


def create_app(session_factory: Callable[[], Session] | None = None) -> FastAPI:
    """The FastAPI app; the store is reached lazily (plugin import never touches it)."""
    app = FastAPI(title="Automail unsubscribe", docs_url=None, redoc_url=None, openapi_url=None)

    def sessions() -> Session:
        if session_factory is not None:
            return session_factory()
        from automail.db import session_factory as default_factory

        return default_factory()()

    @app.get("/unsubscribe", response_class=HTMLResponse)
    def confirm(t: str = "") -> HTMLResponse:
        try:
            shop_id, customer_id = verify_token(t)
        except BadToken as exc:
            return _error(exc)
        with sessions() as session:
            customer = session.get(Customer, customer_id)
            shop = session.get(Shop, shop_id)
            if customer is None or shop is None or customer.shop_id != shop_id:
                return _error(BadToken("token: no such customer for this shop", 404))
            shop_name = shop.name
            done = customer.unsubscribed_at is not None
        if done:
            return _page(
                "配信停止済みです",
                f"<p>{escape(shop_name)}からのメールマガジンは停止済みです。</p>",
            )
        return _page(
            "メールマガジンの配信停止",
            f"<p>{escape(shop_name)}からのメールマガジンの配信を停止しますか？</p>"
            f'<form method="post"><input type="hidden" name="t" value="{escape(t)}">'
            '<button type="submit">配信を停止する</button></form>',
        )

    @app.post("/unsubscribe", response_class=HTMLResponse)
    async def unsubscribe(request: Request) -> HTMLResponse:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token = request.query_params.get("t") or (form.get("t") or [""])[0]
        try:
            with sessions() as session, session.begin():
                customer = apply_unsubscribe(session, token)
                shop_name = session.get(Shop, customer.shop_id).name
        except BadToken as exc:
            return _error(exc)
        return _page(
            "配信を停止しました",
            f"<p>{escape(shop_name)}からのメールマガジンの配信を停止しました。</p>",
        )

    from automail.tracking.web import mount_tracking  # opens/clicks: same public mount

    app.state.tracking = mount_tracking(app, sessions)
    return app
