"""The public unsubscribe page (C10), served by the Airflow plugin without login.

GET  /unsubscribe?t=TOKEN  → a confirmation page; never changes anything (mail
     scanners and link previews follow links).
POST /unsubscribe?t=TOKEN  → marketing permission off. Accepts the confirmation form
     and RFC 8058 one-click posts (body `List-Unsubscribe=One-Click`).
A malformed token is 400, a forged/altered one 403, an unknown customer 404; in
every such case nothing changes. The token is the only credential, which is why it
is an HMAC over shop and customer (automail.campaigns.unsubscribe).

An opt-out is never lost: the POST takes the store's write lock first (SQLite: waits
up to `lock_wait_ms` for another writer instead of failing on a stale snapshot); if
the store still cannot take it, the verified token goes to the durable spool
(automail.campaigns.unsubscribe_spool, applied by the next newsletter run) and the
customer is told it was received and when it takes effect. Only if even the spool
cannot be written is the answer "not received, please retry" (503).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from html import escape
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from automail.campaigns import unsubscribe_spool
from automail.campaigns.unsubscribe import BadToken, apply_unsubscribe, verify_token
from automail.db import take_write_lock
from automail.models import Customer, Shop

LOCK_WAIT_MS = 10_000  # how long an opt-out waits for another writer before it is spooled
SQLITE_BUSY_MS = 30_000  # automail.db's connection default, restored afterwards
log = logging.getLogger(__name__)

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


def _write_now(session: Session, token: str, lock_wait_ms: int) -> str:
    """Apply the opt-out in one transaction that starts with the write lock; shop name."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    with session.begin():
        if sqlite:
            session.execute(text(f"PRAGMA busy_timeout={int(lock_wait_ms)}"))
        try:
            take_write_lock(session)
            customer = apply_unsubscribe(session, token)
            return session.get(Shop, customer.shop_id).name  # type: ignore[union-attr]
        finally:
            if sqlite:
                session.execute(text(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}"))


def create_app(
    session_factory: Callable[[], Session] | None = None,
    lock_wait_ms: int = LOCK_WAIT_MS,
) -> FastAPI:
    """The FastAPI app (with the open/click hot path in front, automail.tracking.web); the
    store is reached lazily (plugin import never touches it). Hits are written by a writer
    process on the store of the configuration (the api-server), or by a thread where the
    caller gives the sessions (tests)."""
    from automail.tracking.web import PublicApp, mount_tracking  # import cycle: lazily

    app = PublicApp(title="Automail unsubscribe", docs_url=None, redoc_url=None, openapi_url=None)

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

    def apply(token: str) -> HTMLResponse:
        try:
            verify_token(token)  # a bad token is refused before any store work
            with sessions() as session:
                shop_name = _write_now(session, token, lock_wait_ms)
        except BadToken as exc:
            return _error(exc)
        except DBAPIError as exc:  # locked past the wait, or the store is unreachable
            log.warning("unsubscribe: store not writable (%s); spooling", exc.orig)
            try:
                unsubscribe_spool.record(token)
            except OSError:
                log.exception("unsubscribe: spool not writable either")
                return _page(
                    "配信停止を受け付けられませんでした",
                    "<p>ただいま混み合っているため、配信停止を受け付けられませんでした。"
                    "お手数ですが、しばらくしてからもう一度お試しください。</p>",
                    503,
                )
            return _page(
                "配信停止を受け付けました",
                "<p>配信停止のお申し込みを受け付けました。ただいま混み合っているため、"
                "反映まで数分かかることがあります。もう一度お手続きいただく必要はありません。</p>",
                202,
            )
        return _page(
            "配信を停止しました",
            f"<p>{escape(shop_name)}からのメールマガジンの配信を停止しました。</p>",
        )

    @app.post("/unsubscribe", response_class=HTMLResponse)
    async def unsubscribe(request: Request) -> HTMLResponse:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token = request.query_params.get("t") or (form.get("t") or [""])[0]
        return await run_in_threadpool(apply, token)  # store work off the event loop

    app.state.tracking = mount_tracking(
        app, sessions, "thread" if session_factory is not None else "process"
    )
    return app
