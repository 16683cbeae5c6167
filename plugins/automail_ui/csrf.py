"""CSRF defence for the screen's forms.

The Airflow session is the `_token` cookie, which a browser attaches to cross-site
form posts too. Every acting form therefore carries a token: HMAC(secret, user|time),
valid for `MAX_AGE`, checked with the logged-in user; and a request whose Origin or
Referer names another host is refused outright. JSON calls must be
`application/json`, which a cross-site page cannot send without a CORS preflight.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from functools import cache
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, status

MAX_AGE = 12 * 3600


@cache
def _secret() -> bytes:
    try:
        from airflow.configuration import conf

        value = conf.get("api", "secret_key", fallback=None)
    except Exception:  # outside Airflow: tokens are valid for this process only
        value = None
    return (value or secrets.token_hex(32)).encode()


def _sign(user: str, issued: int) -> str:
    msg = f"automail-ui|{user}|{issued}".encode()
    return hmac.new(_secret(), msg, hashlib.sha256).hexdigest()


def make_token(user: str, now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    return f"{issued}.{_sign(user, issued)}"


def token_ok(token: str | None, user: str, now: float | None = None) -> bool:
    if not token or "." not in token:
        return False
    issued_text, mac = token.split(".", 1)
    try:
        issued = int(issued_text)
    except ValueError:
        return False
    age = (now if now is not None else time.time()) - issued
    return 0 <= age <= MAX_AGE and hmac.compare_digest(mac, _sign(user, issued))


def check_same_origin(request: Request) -> None:
    """Refuse a state-changing request that a page on another origin sent."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        if source == "null":
            raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-site request refused")
        return
    host = request.headers.get("host", "")
    if urlsplit(source).netloc.lower() != host.lower():
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"cross-site request refused: origin {urlsplit(source).netloc!r} is not {host!r}",
        )


def check_form(request: Request, token: str | None, user: str) -> None:
    check_same_origin(request)
    if not token_ok(token, user):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "form token missing or expired: reload the page and try again",
        )


def check_json(request: Request) -> None:
    check_same_origin(request)
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != "application/json":
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"content-type: {ctype!r} is not application/json",
        )
