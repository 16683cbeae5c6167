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

import ipaddress
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
APPLE_NETWORK = ipaddress.ip_network("17.0.0.0/8")
MACHINE_CLASSES = {
    "empty": "no_user_agent",
    "scanner": "scanner_agent",
    "apple_mpp": "apple_privacy_proxy",
}


def ua_class(user_agent: str | None, client_ip: str | None = None) -> str:
    """A short class of the agent: what is stored instead of the agent and the address."""
    ua = (user_agent or "").strip()[:UA_MAX].lower()
    if client_ip:
        try:
            if ipaddress.ip_address(client_ip) in APPLE_NETWORK:
                return "apple_mpp"
        except ValueError:
            pass
    if not ua:
        return "empty"
    if ua == "mozilla/5.0":  # Apple MPP's prefetch agent: nothing after the product token
        return "apple_mpp"
    if any(p in ua for p in IMAGE_PROXIES):
        return "image_proxy"
    if any(w in ua for w in SCANNER_WORDS):
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


def classify(hits: list[Hit], sent_at: datetime | None, rules: Rules = Rules()) -> list[Hit]:
    """Set each hit's `machine` reason from the mail's hits; returns them in time order."""
    hits = sorted(hits, key=lambda h: (h.at, h.id))
    for h in hits:
        h.machine = None
        if h.method == "HEAD":
            h.machine = "head_request"
        elif h.ua_class in MACHINE_CLASSES:
            h.machine = MACHINE_CLASSES[h.ua_class]
        elif h.kind == "click" and sent_at is not None and h.at - sent_at < rules.after_delivery:
            h.machine = "click_right_after_delivery"
    clicks = [h for h in hits if h.kind == "click"]
    for i, first in enumerate(clicks):
        window = [h for h in clicks[i:] if h.at - first.at <= rules.burst_window]
        if len({h.link_id for h in window}) >= rules.burst_links:
            for h in window:
                h.machine = h.machine or "link_burst"
    human_opens = [h.at for h in hits if h.kind == "open" and h.machine is None]
    if human_opens:
        first_open = min(human_opens)
        for h in clicks:
            if h.machine is None and h.at < first_open:
                h.machine = "click_before_open"
    return hits
