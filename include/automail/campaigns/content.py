"""Merge fields for newsletters and step mails (C1, C5, C10, F4).

Subject/body are Jinja2 templates run in a sandbox (autoescaped for HTML bodies, so
customer data cannot inject markup); the shop-system tags of the seeds are accepted
too and mapped onto variables: [TENPO_NAME], [SIGN], [SIGN_M], [CUSTOMER_NAME],
<#クーポンURL>, <#配信停止URL> / [UNSUBSCRIBE_URL]. Unknown variables render empty.
Every body gets the unsubscribe link: appended unless the body already places it.
Tags are translated by the shared `automail.rendering.tags` table when it is
installed (fallback: the same table here); the environment is this module's own
small sandbox because newsletters have no order/shipment context.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

# The seeds' tags (same fields as automail.rendering's tag table, which wins when present).
TAGS = {
    "[TENPO_NAME]": "shop_name",
    "[SIGN]": "sign_pc",
    "[SIGN_M]": "sign_mobile",
    "[CUSTOMER_NAME]": "customer_name",
    "[CUSTOMER_MAIL]": "customer_email",
    "[CUSTOMER_PREF]": "customer_prefecture",
    "<#クーポンURL>": "coupon_url",
    "<#配信停止URL>": "unsubscribe_url",
    "[UNSUBSCRIBE_URL]": "unsubscribe_url",
}
UNSUBSCRIBE_TEXT = "\n\n―――\n配信停止をご希望の方はこちら: {url}\n"
UNSUBSCRIBE_HTML = (
    '\n<p style="font-size:small">配信停止をご希望の方は<a href="{url}">こちら</a></p>\n'
)


def _br(value: object) -> object:
    if value is None or value == "":
        return value
    return Markup("<br>\n").join(escape(str(value)).split("\n"))


def _env(html: bool) -> SandboxedEnvironment:
    env = SandboxedEnvironment(autoescape=html, undefined=ChainableUndefined)
    env.filters["br"] = _br
    return env


_ENVS = {"text": _env(False), "html": _env(True)}


def tags_to_jinja(source: str, html: bool = False) -> str:
    try:  # the shared tag table, so newsletters accept exactly the tags templates do
        from automail.rendering.tags import to_jinja
    except ImportError:
        to_jinja = None
    if to_jinja is not None:
        return to_jinja(source, html=html)
    for tag, var in TAGS.items():
        source = source.replace(tag, "{{ " + var + " }}")
    return source


def content_hash(body_format: str, subject: str, body: str, signature: str | None) -> str:
    """Fingerprint of a newsletter's content (C4 'already got this one')."""
    h = hashlib.sha256()
    for part in (body_format, subject, body, signature or ""):
        h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()


def _places_unsubscribe(source: str) -> bool:
    return bool(re.search(r"unsubscribe_url", tags_to_jinja(source)))


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
        body = body.rstrip("\n")
        if signature:
            if body_format == "html":
                body += "\n<br><br>" + signature.replace("\n", "<br>\n")
            else:
                body += "\n\n" + signature
        if not _places_unsubscribe(body):
            block = UNSUBSCRIBE_HTML if body_format == "html" else UNSUBSCRIBE_TEXT
            body += block.replace("{url}", "{{ unsubscribe_url }}")
        try:
            self._subject = _ENVS["text"].from_string(tags_to_jinja(subject))
            html = body_format == "html"
            self._body = _ENVS[body_format].from_string(tags_to_jinja(body, html))
        except Exception as exc:  # TemplateSyntaxError: name the field and the line
            raise ValueError(f"subject/body: template error: {exc}") from exc

    def render(self, context: dict[str, Any]) -> Content:
        # F4: a subject is one header line; newlines from data must not split it.
        subject = re.sub(r"[\r\n]+", " ", self._subject.render(context)).strip()
        body = self._body.render(context)
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
