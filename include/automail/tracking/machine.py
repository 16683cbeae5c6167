"""Telling machine opens and clicks from people's (never counted as engagement).

Per hit, without context: HEAD requests, link-checker / security-scanner / preview
user agents, no user agent, Apple Mail Privacy Protection's prefetch (its bare
`Mozilla/5.0` agent, or a request from Apple's 17.0.0.0/8 — checked at request time,
the address itself is never stored). Per mail, with context: clicks within seconds of
delivery (scanners follow every link on arrival), clicks before the mail's first human
open (a scanner clicked, the person opened later), and bursts (several different links
clicked within a second: nobody reads that fast).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

UA_MAX = 512  # longer agents are cut before matching (and never stored)
SCANNER_WORDS = (
    "bot",
    "crawl",
    "spider",
    "scan",
    "curl/",
    "wget/",
    "python-",
    "httpx",
    "go-http-client",
    "java/",
    "libwww",
    "okhttp",
    "headlesschrome",
    "phantomjs",
    "barracuda",
    "mimecast",
    "proofpoint",
    "symantec",
    "trendmicro",
    "forcepoint",
    "sophos",
    "fortiguard",
    "ironport",
    "safelinks",
    "protocol discovery",
    "preview",
    "facebookexternalhit",
    "whatsapp",
    "slack",
    "validator",
    "monitor",
    "check",
)
IMAGE_PROXIES = ("googleimageproxy", "yahoomailproxy", "ymailproxy")  # fetch when a person opens
APPLE_IPV4_PREFIX = "17."  # 17.0.0.0/8 in dotted-quad form
MACHINE_CLASSES = {
    "empty": "no_user_agent",
    "scanner": "scanner_agent",
    "apple_mpp": "apple_privacy_proxy",
}


_SCANNER = re.compile("|".join(re.escape(w) for w in SCANNER_WORDS))
_PROXY = re.compile("|".join(re.escape(w) for w in IMAGE_PROXIES))


def ua_class(user_agent: str | None, client_ip: str | None = None) -> str:
    """A short class of the agent: what is stored instead of the agent and the address."""
    if client_ip and client_ip.startswith(APPLE_IPV4_PREFIX):
        return "apple_mpp"
    ua = (user_agent or "").strip()[:UA_MAX].lower()
    if not ua:
        return "empty"
    if ua == "mozilla/5.0":  # Apple MPP's prefetch agent: nothing after the product token
        return "apple_mpp"
    if _PROXY.search(ua):
        return "image_proxy"
    if _SCANNER.search(ua):
        return "scanner"
    if "outlook" in ua or "thunderbird" in ua or "microsoft office" in ua:
        return "mail_client"
    if "mobile" in ua or "android" in ua or "iphone" in ua:
        return "mobile"
    if "mozilla/" in ua:
        return "browser"
    return "other"


@dataclass
class Hit:
    """What the rules look at; `machine` is their verdict (None = a person)."""

    id: int
    kind: str  # open | click
    link_id: int | None
    at: datetime
    method: str
    ua_class: str
    machine: str | None = None


@dataclass(frozen=True)
class Rules:
    after_delivery: timedelta = timedelta(seconds=15)
    burst_window: timedelta = timedelta(seconds=1)
    burst_links: int = 3


RULES = Rules()


def hit_verdict(hit: Hit, sent_at: datetime | None, rules: Rules = RULES) -> str | None:
    """The rules that need no other hit of the mail."""
    if hit.method == "HEAD":
        return "head_request"
    if hit.ua_class in MACHINE_CLASSES:
        return MACHINE_CLASSES[hit.ua_class]
    if hit.kind == "click" and sent_at is not None and hit.at - sent_at < rules.after_delivery:
        return "click_right_after_delivery"
    return None


def burst_ids(clicks: list[Hit], rules: Rules = RULES) -> set[int]:
    """Clicks (of one mail, time order) in a window holding `burst_links` distinct links.

    One pass with two pointers (linear: a token hammered thousands of times a second must
    not make the writer quadratic): the window starting at click i is clicks[i:j], the
    clicks at most `burst_window` after it; `counts` holds its links."""
    found: set[int] = set()
    counts: dict[int | None, int] = {}
    j = marked = 0
    for i, first in enumerate(clicks):
        while j < len(clicks) and clicks[j].at - first.at <= rules.burst_window:
            counts[clicks[j].link_id] = counts.get(clicks[j].link_id, 0) + 1
            j += 1
        if len(counts) >= rules.burst_links:
            found.update(h.id for h in clicks[max(i, marked) : j])
            marked = j
        counts[first.link_id] -= 1
        if not counts[first.link_id]:
            del counts[first.link_id]
    return found


def classify(hits: list[Hit], sent_at: datetime | None, rules: Rules = RULES) -> list[Hit]:
    """Every rule over one mail's hits (the definition; the recorder applies the same
    rules incrementally). Sets each hit's `machine`; returns them in time order."""
    hits = sorted(hits, key=lambda h: (h.at, h.id))
    for h in hits:
        h.machine = hit_verdict(h, sent_at, rules)
    clicks = [h for h in hits if h.kind == "click"]
    in_burst = burst_ids(clicks, rules)
    for h in clicks:
        if h.id in in_burst:
            h.machine = h.machine or "link_burst"
    human_opens = [h.at for h in hits if h.kind == "open" and h.machine is None]
    if human_opens:
        first_open = min(human_opens)
        for h in clicks:
            if h.machine is None and h.at < first_open:
                h.machine = "click_before_open"
    return hits
