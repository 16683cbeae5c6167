"""The public open pixel and click redirect, mounted next to the unsubscribe page
(/automail-public/o/… and /c/…, no login: the signed token is the only credential).

GET|HEAD /o/<token> → a 1×1 GIF; GET|HEAD /c/<token> → 302 to the link's URL as
frozen in the link table (never to a URL taken from the request: no open redirect).
A malformed, forged or altered token, a link of another campaign/step, a target that
is not a plain http(s) URL, any other path or method → 404, and nothing is recorded.

These are the hottest URLs of the system (every opened mail, every click), so they are
plain ASGI endpoints that `PublicApp` calls before its own FastAPI stack: no routing,
exception middleware, parameter parsing or dependency solving per hit — a path split,
the signature checks, a dict lookup and an append to the recorder's buffer. (Airflow's
root middleware — access log, gzip, JWT refresh — wraps every mounted app; a plugin
cannot and should not step around it.) See bench/tracking.py.

On the api-server each worker's heap holds ~700k objects of Airflow, FastAPI and
SQLAlchemy, and a full garbage collection over it took 0.3–1 s under load — every hit in
flight waited (bench p99 0.5–1.2 s). So the app freezes the heap (`gc.freeze`) once it
has started and once more after its first batch of hits is handed over (the objects its
first hits brought in: link cache, SQLAlchemy caches); a full collection then walks only
the objects made since. Cyclic garbage among frozen objects
is never collected: startup-time objects live as long as the worker anyway.
"""

from __future__ import annotations

import base64
import gc
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal

from anyio import to_thread
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette._utils import get_route_path
from starlette.types import Receive, Scope
from starlette.types import Send as ASGISend

from automail.models import TrackingLink
from automail.tracking.links import safe_target
from automail.tracking.machine import ua_class
from automail.tracking.recorder import HitRecorder
from automail.tracking.tokens import BadToken, verify_click, verify_open
from automail.tracking.writer_process import HitForwarder

HitWriter = Literal["process", "thread"]

GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = [(b"cache-control", b"no-store, private"), (b"referrer-policy", b"no-referrer")]
Send = Callable[[dict[str, Any]], Awaitable[None]]


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
        return (row[0], row[1], row[2]) if row else None

    async def get(self, link_id: int) -> tuple[str, int, str] | None:
        link = self._links.get(link_id)
        if link is None:
            link = await to_thread.run_sync(self._load, link_id)
            if link is not None:
                self._links[link_id] = link
        return link


async def _respond(send: Send, method: str, status: int, headers: list, body: bytes = b"") -> None:
    headers = [*headers, *NO_STORE, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


async def _not_found(send: Send, method: str) -> None:
    await _respond(send, method, 404, [(b"content-type", b"text/plain")], b"not found")


class _Endpoint:
    def __init__(self, recorder: HitRecorder | HitForwarder, links: LinkCache | None):
        self.recorder, self.links = recorder, links

    async def __call__(self, scope: Scope, token: str, send: Send) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD") or not token or "/" in token:
            await _not_found(send, method)
            return
        agent = b""
        for name, value in scope["headers"]:
            if name == b"user-agent":
                agent = value
                break
        client = scope.get("client")
        klass = ua_class(agent.decode("latin-1"), client[0] if client else None)
        await self.hit(token, method, klass, send)

    async def hit(self, token: str, method: str, klass: str, send: Send) -> None:
        raise NotImplementedError


class OpenPixel(_Endpoint):
    async def hit(self, token: str, method: str, klass: str, send: Send) -> None:
        try:
            ref = verify_open(token)
        except BadToken:
            await _not_found(send, method)
            return
        self.recorder.record(ref, None, method, klass)
        await _respond(send, method, 200, [(b"content-type", b"image/gif")], GIF)


class ClickRedirect(_Endpoint):
    async def hit(self, token: str, method: str, klass: str, send: Send) -> None:
        try:
            ref, link_id = verify_click(token)
        except BadToken:
            await _not_found(send, method)
            return
        link = await self.links.get(link_id) if self.links else None
        if link is None or link[:2] != (ref.scope, ref.scope_id) or not safe_target(link[2]):
            await _not_found(send, method)
            return
        self.recorder.record(ref, link_id, method, klass)
        await _respond(send, method, 302, [(b"location", link[2].encode())])


_frozen: set[str] = set()


def freeze_heap(moment: str) -> None:
    """gc.freeze() once per process and moment ("started", "warm"): see the module doc."""
    if moment in _frozen:
        return
    _frozen.add(moment)
    gc.collect()
    gc.freeze()


class PublicApp(FastAPI):
    """The public FastAPI app with /o/<token> and /c/<token> answered ahead of its stack."""

    tracking: Mapping[str, _Endpoint] = MappingProxyType({})  # path head → endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: ASGISend) -> None:
        if scope["type"] == "http" and self.tracking:
            path = get_route_path(scope)
            endpoint = self.tracking.get(path[:3])
            if endpoint is not None:
                await endpoint(scope, path[3:], send)
                return
        await super().__call__(scope, receive, send)


def mount_tracking(
    app: PublicApp, session_factory: Callable[[], Session], writer: HitWriter
) -> HitRecorder | HitForwarder:
    """Serve /o and /c on the public app; returns the recorder (closed on shutdown).
    writer "process": hits go to a writer process (automail.tracking.writer_process: the
    api-server); "thread": written by a thread of this process (tests, one-off servers)."""
    warm = lambda: freeze_heap("warm")  # noqa: E731
    recorder: HitRecorder | HitForwarder = (
        HitForwarder(on_first_write=warm)
        if writer == "process"
        else HitRecorder(session_factory, on_first_write=warm)
    )
    app.tracking = {
        "/o/": OpenPixel(recorder, None),
        "/c/": ClickRedirect(recorder, LinkCache(session_factory)),
    }
    app.router.on_startup.append(lambda: freeze_heap("started"))
    app.router.on_shutdown.append(recorder.close)
    return recorder
