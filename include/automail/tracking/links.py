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

from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from automail import settings
from automail.campaigns.unsubscribe import secret_key
from automail.models import TrackingLink
from automail.tracking.tokens import MailRef, link_part, mail_token, ref_from_source_key

PUBLIC_PREFIX = "/automail-public"
_HREF = re.compile(
    r"""<a\b[^>]*?(?P<attr>\shref\s*=\s*(?P<q>["']))(?P<url>.*?)(?P=q)""",
    re.IGNORECASE | re.DOTALL,
)
_TEXT_URL = re.compile(r"https?://[A-Za-z0-9\-._~:/?#@!$&'()*+,;=%]+")
_TRAILING = ".,;:!?')"
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
MAX_URL = 2000
# Where a mail's own token goes in the rewritten template: plain template text, so
# rendering passes it through untouched and `Tracker.fill` puts the token in with one
# str.replace per body after rendering (no merge field per link: bench/tracking.py).
# NUL never comes from an author's editor; should a merge field's value hold a mark, it
# becomes that same recipient's own tracking URL, which is in their mail anyway.
CLICK_MARK = "\x00automail-click\x00"
OPEN_MARK = "\x00automail-open\x00"


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
            raw = m.group("url")
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
    """Tracking for one campaign / step: its template with the links rewritten.

    Done once, on the template source: each literal link becomes
    `CLICK_MARK.<link id>.<mac>` (the link's part, signed here once) and the HTML body
    gets `<img src="OPEN_MARK">`. Per mail, `fill` replaces the marks in the rendered
    bodies with the base URL and the mail's token: one signature and one str.replace
    per mark kind (bench/tracking.py)."""

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
        # Escaped once here for the HTML body (an http(s) base has nothing to escape in
        # practice); the tokens themselves are URL-safe characters only.
        self.click_base = str(escape(f"{base}{PUBLIC_PREFIX}/c/"))
        self.open_base = str(escape(f"{base}{PUBLIC_PREFIX}/o/"))
        html_body = body_format == "html"
        links = (
            static_links(source, html_body=html_body, text_links=options.text_links)
            if options.clicks
            else {}
        )
        ids = freeze_links(session, scope, scope_id, list(links.values()))
        # raw href / URL as written in the template → ".<link id>.<mac>" (signed once)
        parts = {
            raw: "." + link_part(scope, scope_id, ids[url], self.key) for raw, url in links.items()
        }
        self.link_ids = {url: ids[url] for url in links.values()}
        self.template = self._rewrite(source, html_body, parts)

    def _rewrite(self, source: str, html_body: bool, parts: dict[str, str]) -> str:
        if html_body:

            def href(m: re.Match) -> str:
                part = parts.get(m.group("url"))
                if part is None:
                    return m.group(0)
                head = m.group(0)[: m.start("url") - m.start(0)]
                return f"{head}{CLICK_MARK}{part}{m.group('q')}"

            source = _HREF.sub(href, source)
            if self.options.opens:
                pixel = (
                    f'<img src="{OPEN_MARK}" width="1" height="1" alt="" '
                    'style="display:block;width:1px;height:1px;border:0">'
                )
                ends = list(_BODY_END.finditer(source))
                at = ends[-1].start() if ends else len(source.rstrip("\n"))
                source = source[:at] + pixel + source[at:]
        elif parts:

            def url(m: re.Match) -> str:
                raw = m.group(0).rstrip(_TRAILING)
                part = parts.get(raw)
                if part is None:
                    return m.group(0)
                return CLICK_MARK + part + m.group(0)[len(raw) :]

            source = _TEXT_URL.sub(url, source)
        return source

    def fill(self, ref: MailRef | str, *bodies: str | None) -> tuple[str | None, ...]:
        """One mail's rendered bodies (None stays None) with its token in place of the
        marks; ref is a MailRef or the mail's source_key. One signature."""
        mail = mail_token(ref if isinstance(ref, MailRef) else ref_from_source_key(ref), self.key)
        click, pixel = self.click_base + mail, self.open_base + mail
        return tuple(
            b.replace(CLICK_MARK, click).replace(OPEN_MARK, pixel) if b else b for b in bodies
        )


def tracker_for(
    session: Session, scope: str, scope_id: int, source: str, body_format: str, owner: object
) -> Tracker | None:
    """The Tracker of a campaign/step whose owner (Campaign/StepSequence) tracks anything."""
    options = TrackingOptions.of(owner)
    if not options.any:
        return None
    return Tracker(session, scope, scope_id, source, body_format, options)
