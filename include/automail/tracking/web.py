"""The public open pixel and click redirect, mounted next to the unsubscribe page
(/automail-public, no login: the signed token is the only credential).

GET|HEAD /o/<token> → a 1×1 GIF; GET|HEAD /c/<token> → 302 to the link's URL as
frozen in the link table (never to a URL taken from the request: no open redirect).
A malformed, forged or altered token, a link of another campaign/step, or a target
that is not a plain http(s) URL → 404, and nothing is recorded.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from automail.models import TrackingLink
from automail.tracking.links import safe_target
from automail.tracking.machine import ua_class
from automail.tracking.recorder import HitRecorder
from automail.tracking.tokens import BadToken, verify_click, verify_open

GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}


def not_found() -> Response:
    return Response("not found", status_code=404, media_type="text/plain", headers=NO_STORE)


class LinkCache:
    """Link id → (scope, scope_id, url). Rows never change once written, so caching is safe."""

    def __init__(self, session_factory: Callable[[], Session]):
        self.session_factory = session_factory
        self._links: dict[int, tuple[str, int, str]] = {}

    def _load(self, link_id: int) -> tuple[str, int, str] | None:
        with self.session_factory() as session:
            row = session.execute(
                select(TrackingLink.scope, TrackingLink.scope_id, TrackingLink.url).where(
                    TrackingLink.id == link_id
                )
            ).first()
        return tuple(row) if row else None  # type: ignore[return-value]

    async def get(self, link_id: int) -> tuple[str, int, str] | None:
        link = self._links.get(link_id)
        if link is None:
            link = await run_in_threadpool(self._load, link_id)
            if link is not None:
                self._links[link_id] = link
        return link


def tracking_router(session_factory: Callable[[], Session]) -> APIRouter:
    router = APIRouter()
    recorder = HitRecorder(session_factory)
    links = LinkCache(session_factory)
    router.recorder = recorder  # type: ignore[attr-defined]  (tests flush it)
    router.add_event_handler("shutdown", recorder.close)

    def agent(request: Request) -> str:
        client = request.client.host if request.client else None
        return ua_class(request.headers.get("user-agent"), client)

    @router.api_route("/o/{token}", methods=["GET", "HEAD"], include_in_schema=False)
    async def opened(token: str, request: Request) -> Response:
        try:
            ref = verify_open(token)
        except BadToken:
            return not_found()
        recorder.record(ref, None, request.method, agent(request))
        return Response(GIF, media_type="image/gif", headers=NO_STORE)

    @router.api_route("/c/{token}", methods=["GET", "HEAD"], include_in_schema=False)
    async def clicked(token: str, request: Request) -> Response:
        try:
            ref, link_id = verify_click(token)
        except BadToken:
            return not_found()
        link = await links.get(link_id)
        if link is None or link[:2] != (ref.scope, ref.scope_id) or not safe_target(link[2]):
            return not_found()
        recorder.record(ref, link_id, request.method, agent(request))
        return RedirectResponse(link[2], status_code=302, headers=NO_STORE)

    return router
