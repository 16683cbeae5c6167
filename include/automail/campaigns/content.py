"""Merge fields for newsletters and step mails (C1, C5, C10, F4).

Subject/body are Jinja2 templates run in a sandbox (autoescaped for HTML bodies, so
customer data cannot inject markup); the seeds' shop tags ([TENPO_NAME], [SIGN],
[CUSTOMER_NAME], <#クーポンURL>, <#配信停止URL> ...) are translated by the templates'
tag table (automail.rendering.tags). Unknown variables render empty. The environment
is this module's own (newsletters have no order/shipment context) but the same
resource-limited sandbox as templates (automail.rendering.limits); a sample render at
construction catches expression errors and resource bombs when a campaign or step is
saved, not at send time.
Every mail shows the unsubscribe link: after rendering, a body whose output does not
show the recipient's link (a text body: the URL; an HTML body: a link to it outside
comments) gets the standard block appended, so `{# unsubscribe_url #}` or a false
`{% if %}` around it cannot send a mail without one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined
from markupsafe import Markup, escape

from automail.rendering.limits import MAX_SOURCE_CHARS, LimitedSandbox
from automail.rendering.samples import SAMPLE_CUSTOMER, SAMPLE_EXTRA, SAMPLE_SHOP
from automail.rendering.tags import to_jinja

UNSUBSCRIBE_TEXT = "\n\n―――\n配信停止をご希望の方はこちら: {url}\n"
UNSUBSCRIBE_HTML = (
    '\n<p style="font-size:small">配信停止をご希望の方は<a href="{url}">こちら</a></p>\n'
)


def _br(value: object) -> object:
    if value is None or value == "":
        return value
    return Markup("<br>\n").join(escape(str(value)).split("\n"))


def _env(html: bool) -> LimitedSandbox:
    env = LimitedSandbox(autoescape=html, undefined=ChainableUndefined)
    env.filters["br"] = _br
    return env


_ENVS = {"text": _env(False), "html": _env(True)}


def tags_to_jinja(source: str, html: bool = False) -> str:
    """The shared tag table, so newsletters accept exactly the tags templates do."""
    return to_jinja(source, html=html)


def content_hash(body_format: str, subject: str, body: str, signature: str | None) -> str:
    """Fingerprint of a newsletter's content (C4 'already got this one')."""
    h = hashlib.sha256()
    for part in (body_format, subject, body, signature or ""):
        h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()


_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.S)


def shows_link(body: str, url: str, html: bool) -> bool:
    """Whether a rendered body shows `url`: as text, or as an HTML link outside comments."""
    if not html:
        return url in body
    visible = _COMMENT.sub("", body)
    for form in {url, str(escape(url))}:
        if re.search(r"""href\s*=\s*["']?""" + re.escape(form) + r"""(?:["'\s>]|$)""", visible):
            return True
    return False


@dataclass
class Content:
    subject: str
    body_text: str | None
    body_html: str | None


class CompiledContent:
    """A newsletter/step content compiled once, rendered per recipient."""

    def __init__(self, subject: str, body: str, body_format: str, signature: str | None = None):
        if body_format not in ("text", "html"):
            raise ValueError(f"body_format: {body_format!r} is not 'text' or 'html'")
        self.body_format = body_format
        html = body_format == "html"
        body = body.rstrip("\n")
        if signature:
            if html:
                body += "\n<br><br>" + signature.replace("\n", "<br>\n")
            else:
                body += "\n\n" + signature
        for field, source in (("subject", subject), ("body", body)):
            if len(source) > MAX_SOURCE_CHARS:
                raise ValueError(
                    f"{field}: too long: {len(source):,} characters (limit {MAX_SOURCE_CHARS:,})"
                )
        block = UNSUBSCRIBE_HTML if html else UNSUBSCRIBE_TEXT
        field = "subject"
        try:
            self._subject = _ENVS["text"].from_string(tags_to_jinja(subject))
            field = "body"
            self._body = _ENVS[body_format].from_string(tags_to_jinja(body, html))
            self._block = _ENVS[body_format].from_string(
                block.replace("{url}", "{{ unsubscribe_url }}")
            )
        except RecursionError:
            raise ValueError(f"{field}: template error: nested too deeply") from None
        except Exception as exc:  # TemplateSyntaxError: name the field and the line
            raise ValueError(f"{field}: template error: {exc}") from exc
        # A sample render, so expression errors and resource bombs are refused now.
        for customer in (SAMPLE_CUSTOMER, None):
            self.render(context_for(SAMPLE_SHOP, customer, str(SAMPLE_EXTRA["unsubscribe_url"])))

    def render(self, context: dict[str, Any]) -> Content:
        field = "subject"
        try:
            # F4: a subject is one header line; newlines from data must not split it.
            subject = re.sub(r"[\r\n]+", " ", self._subject.render(context)).strip()
            field = "body"
            body = self._body.render(context)
            url = str(context.get("unsubscribe_url") or "")
            if not url or not shows_link(body, url, self.body_format == "html"):
                if self.body_format == "html" and body.rfind("<!--") > body.rfind("-->"):
                    body += "-->"  # an unclosed comment would hide the block too
                body += self._block.render(context)
        except RecursionError:
            raise ValueError(f"{field}: template failed to render: nested too deeply") from None
        except Exception as exc:  # sandbox refusal or limit, errors in expressions
            raise ValueError(f"{field}: template failed to render: {exc}") from exc
        if self.body_format == "html":
            return Content(subject, None, body)
        return Content(subject, body, None)


def context_for(shop, customer, unsubscribe_url: str) -> dict[str, Any]:  # noqa: ANN001
    """Merge fields of one recipient (customer may be None: fields render empty)."""
    return {
        "shop_name": shop.name,
        "sign_pc": shop.signature_pc or "",
        "sign_mobile": shop.signature_mobile or "",
        "signature": shop.signature_pc or "",
        "shop_email": shop.contact_address,
        "coupon_url": shop.coupon_url or "",
        "unsubscribe_url": unsubscribe_url,
        "customer_name": getattr(customer, "name", "") or "",
        "customer_email": getattr(customer, "email", "") or "",
        "customer_prefecture": getattr(customer, "prefecture", "") or "",
        "coupon_code": getattr(customer, "coupon_code", "") or "",
    }
