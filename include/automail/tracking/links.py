"""Link rewriting and the open pixel, applied to each rendered marketing mail.

Only links written literally in the template are tracked (an href holding a merge field,
e.g. the unsubscribe link or a per-customer coupon URL, is left alone): so a campaign's
link table has one row per link of its template, created once when its mails are made,
and rows are only ever added — a later template edit adds rows and never breaks a
redirect already in someone's inbox. Only http(s) URLs are tracked; the redirect
endpoint sends people nowhere else (no open redirect).
"""

from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from automail import settings
from automail.campaigns.content import Content
from automail.campaigns.unsubscribe import secret_key
from automail.models import TrackingLink
from automail.tracking.tokens import MailRef, link_part, mail_token

PUBLIC_PREFIX = "/automail-public"
_HREF = re.compile(r"""(<a\b[^>]*?\shref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_TEXT_URL = re.compile(r"https?://[A-Za-z0-9\-._~:/?#@!$&'()*+,;=%]+")
_TRAILING = ".,;:!?')"
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
MAX_URL = 2000


def safe_target(url: str) -> bool:
    """An absolute http(s) URL with a host and no control characters (header injection)."""
    if not url or len(url) > MAX_URL or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and "\\" not in url


def _text_urls(source: str) -> list[str]:
    return [m.group(0).rstrip(_TRAILING) for m in _TEXT_URL.finditer(source)]


def static_links(source: str, *, html_body: bool, text_links: bool) -> dict[str, str]:
    """{raw attribute/text as written: real URL} of the literal links of a template."""
    found: dict[str, str] = {}
    if html_body:
        for m in _HREF.finditer(source):
            raw = m.group(3)
            url = html.unescape(raw).strip()
            if "{" not in raw and "[" not in raw and "<" not in raw and safe_target(url):
                found[raw] = url
    elif text_links:
        for raw in _text_urls(source):
            if safe_target(raw):
                found[raw] = raw
    return found


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def freeze_links(session: Session, scope: str, scope_id: int, urls: list[str]) -> dict[str, int]:
    """{url: link id}, inserting the missing rows (idempotent; concurrent runs agree)."""
    wanted = {url_hash(u): u for u in dict.fromkeys(urls)}
    if wanted:
        module = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        session.execute(
            module.insert(TrackingLink).on_conflict_do_nothing(
                index_elements=["scope", "scope_id", "url_hash"]
            ),
            [
                {"scope": scope, "scope_id": scope_id, "url": u, "url_hash": h}
                for h, u in wanted.items()
            ],
        )
    rows = session.execute(
        select(TrackingLink.id, TrackingLink.url).where(
            TrackingLink.scope == scope,
            TrackingLink.scope_id == scope_id,
            TrackingLink.url_hash.in_(list(wanted)),
        )
    )
    return {url: link_id for link_id, url in rows}


@dataclass(frozen=True)
class TrackingOptions:
    opens: bool = False
    clicks: bool = False
    text_links: bool = False

    @classmethod
    def of(cls, owner: object) -> TrackingOptions:
        """From a Campaign or StepSequence row's switches."""
        return cls(
            bool(getattr(owner, "track_opens", False)),
            bool(getattr(owner, "track_clicks", False)),
            bool(getattr(owner, "track_text_links", False)),
        )

    @property
    def any(self) -> bool:
        return self.opens or self.clicks


class Tracker:
    """Rewrites one campaign's / step's rendered mails: links → signed redirects, + pixel.

    Per mail: one signature (the mail token) and one regex pass over the hrefs the
    template wrote literally; each link's own signed part is made once, here."""

    def __init__(
        self,
        session: Session,
        scope: str,
        scope_id: int,
        source: str,
        body_format: str,
        options: TrackingOptions,
    ):
        self.scope, self.scope_id, self.options = scope, scope_id, options
        self.key = secret_key()
        base = str(settings.get(session, "public_base_url")).rstrip("/")
        self.click_base = f"{base}{PUBLIC_PREFIX}/c/"
        self.open_base = f"{base}{PUBLIC_PREFIX}/o/"
        html_body = body_format == "html"
        links = (
            static_links(source, html_body=html_body, text_links=options.text_links)
            if options.clicks
            else {}
        )
        ids = freeze_links(session, scope, scope_id, list(links.values()))
        # raw href / URL as written in the template → ".<link id>.<mac>" (signed once)
        self.parts = {
            raw: "." + link_part(scope, scope_id, ids[url], self.key) for raw, url in links.items()
        }
        alternatives = "|".join(re.escape(raw) for raw in sorted(self.parts, key=len, reverse=True))
        self._href = (
            re.compile(rf"""(\shref\s*=\s*)(["'])({alternatives})\2""", re.IGNORECASE)
            if self.parts and html_body
            else None
        )
        # In text, a URL must not run on (…/new must not match …/new2); a final '.' may follow.
        self._text = (
            re.compile(rf"({alternatives})(?![A-Za-z0-9_~/?#@$&*+=%-]|\.[A-Za-z0-9])")
            if self.parts
            else None
        )

    def apply(self, content: Content, ref: MailRef) -> Content:
        body_html, body_text = content.body_html, content.body_text
        mail = mail_token(ref, self.key)
        if body_html is not None:
            if self._href is not None:
                click = self.click_base + mail
                body_html = self._href.sub(
                    lambda m: (
                        f"{m.group(1)}{m.group(2)}{click}{self.parts[m.group(3)]}{m.group(2)}"
                    ),
                    body_html,
                )
            if self.options.opens:
                pixel = (
                    f'<img src="{self.open_base}{mail}" width="1" height="1" alt="" '
                    'style="display:block;width:1px;height:1px;border:0">'
                )
                at = body_html.rfind("</body>")
                if at < 0:
                    ends = list(_BODY_END.finditer(body_html))
                    at = ends[-1].start() if ends else len(body_html)
                body_html = body_html[:at] + pixel + body_html[at:]
        if body_text is not None and self._text is not None and self.options.text_links:
            click = self.click_base + mail
            body_text = self._text.sub(lambda m: click + self.parts[m.group(1)], body_text)
        return Content(content.subject, body_text, body_html)


def tracker_for(
    session: Session, scope: str, scope_id: int, source: str, body_format: str, owner: object
) -> Tracker | None:
    """The Tracker of a campaign/step whose owner (Campaign/StepSequence) tracks anything."""
    options = TrackingOptions.of(owner)
    if not options.any:
        return None
    return Tracker(session, scope, scope_id, source, body_format, options)
