"""Which template a mail uses, and storing templates (A5).

A slot is (shop or common default, kind, device, stage, carrier). Lookup order:
  1. the recipient's device, then PC as the last resort for a mobile address;
  2. the shop's own template, then the common default (shop_id NULL);
  3. the exact stage (order confirmation: 1 first purchase, 2 repeat), then stage 0 (any);
  4. the exact carrier (shipping notice), then carrier '' (any).
So a shop override of "any stage" beats the common default's stage-2 template: a shop
that wrote its own confirmation mail gets it for every customer until it adds more.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from automail.charset import UTF8, describe, unencodable
from automail.models import Campaign, Mail, Shop, Template
from automail.rendering.environment import validate_template
from automail.rendering.errors import TemplateError, TemplateNotFound
from automail.states import DEVICES, MAIL_KINDS, ORDER_CONFIRMATION, SHIPPING_NOTICE

STAGES = (0, 1, 2)  # 0 = any, 1 = first purchase, 2 = repeat customer
_CARRIER_CODE = re.compile(r"^[a-z0-9_-]{1,64}$")


def stage_for(purchase_count: int | None, repeat_stage_from: int | None) -> int:
    """Order confirmation stage: 2 (repeat) from the shop's Nth purchase on, else 1."""
    switch = repeat_stage_from or 2
    return 2 if (purchase_count or 1) >= switch else 1


def check_slot(kind: str, device: str, stage: int, carrier: str) -> None:
    """Clear errors for a slot that cannot exist (named field and value)."""
    if kind not in MAIL_KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(MAIL_KINDS)}")
    if device not in DEVICES:
        raise ValueError(f"device: {device!r} is not one of {', '.join(DEVICES)}")
    if stage not in STAGES:
        raise ValueError(f"stage: {stage!r} is not 0 (any), 1 (first purchase) or 2 (repeat)")
    if stage and kind != ORDER_CONFIRMATION:
        raise ValueError(f"stage: {stage} is only for {ORDER_CONFIRMATION}; use 0 for {kind}")
    if carrier and kind != SHIPPING_NOTICE:
        raise ValueError(f"carrier: {carrier!r} is only for {SHIPPING_NOTICE}; use '' for {kind}")
    if carrier and not _CARRIER_CODE.match(carrier):
        raise ValueError(f"carrier: {carrier!r} is not a carrier code like yamato, sagawa")


def candidates(session: Session, shop_id: int | None, kind: str) -> list[Template]:
    """Every template that could serve this shop and kind (its own and the defaults)."""
    owner: ColumnElement[bool] = Template.shop_id.is_(None)
    if shop_id is not None:
        owner = or_(Template.shop_id == shop_id, owner)
    return list(session.scalars(select(Template).where(Template.kind == kind, owner)))


def choose(
    rows: Iterable[Template], shop_id: int | None, kind: str, device: str, stage: int, carrier: str
) -> Template:
    index = {(r.shop_id, r.device, r.stage, r.carrier): r for r in rows}
    devices = (device,) if device == "pc" else (device, "pc")
    owners: Sequence[int | None] = (shop_id, None) if shop_id is not None else (None,)
    stages = (stage, 0) if stage else (0,)
    carriers = (carrier, "") if carrier else ("",)
    for dev in devices:
        for owner in owners:
            for st in stages:
                for ca in carriers:
                    hit = index.get((owner, dev, st, ca))
                    if hit is not None:
                        return hit
    raise TemplateNotFound(shop_id, kind, device, stage, carrier)


def resolve_template(
    session: Session, shop_id: int | None, kind: str, device: str, stage: int, carrier: str
) -> Template:
    """The template a mail of this slot uses (see the module doc for the fallback order)."""
    return choose(candidates(session, shop_id, kind), shop_id, kind, device, stage, carrier)


def get_slot(
    session: Session, shop_id: int | None, kind: str, device: str, stage: int, carrier: str
) -> Template | None:
    """The template stored in exactly this slot (no fallback)."""
    owner = Template.shop_id.is_(None) if shop_id is None else Template.shop_id == shop_id
    return session.scalar(
        select(Template).where(
            owner,
            Template.kind == kind,
            Template.device == device,
            Template.stage == stage,
            Template.carrier == carrier,
        )
    )


def save_template(
    session: Session,
    shop_id: int | None,
    kind: str,
    device: str,
    stage: int,
    carrier: str,
    subject: str,
    body_text: str | None,
    body_html: str | None,
    *,
    name: str | None = None,
) -> Template:
    """Validate and store a template in its slot (insert or replace); shop_id None = default."""
    check_slot(kind, device, stage, carrier)
    body_text = body_text or None
    body_html = body_html or None
    validate_template(subject, body_text, body_html)
    texts = {"subject": subject, "body_text": body_text, "body_html": body_html}
    if problems := _charset_problems(session, shop_id, texts):
        raise TemplateError(problems[0][0], None, "; ".join(f"{f}: {p}" for f, p in problems))
    row = get_slot(session, shop_id, kind, device, stage, carrier)
    if row is None:
        row = Template(shop_id=shop_id, kind=kind, device=device, stage=stage, carrier=carrier)
        session.add(row)
    row.subject = subject.strip()
    row.body_text = body_text
    row.body_html = body_html
    if name is not None or not row.name:
        row.name = name or _default_name(shop_id, kind, device, stage, carrier)
    # Set here, not by the server's now(): compiled templates are cached by
    # (id, updated_at), and now() is the same for two saves in one transaction.
    row.updated_at = datetime.now(UTC)
    session.flush()
    return row


def _charset_problems(
    session: Session, shop_id: int | None, texts: dict[str, str | None]
) -> list[tuple[str, str]]:
    """At template save time, (field, problem) for each character of `texts` the charset
    of a shop using the template cannot carry: its shop's; a common default is checked
    against every ISO-2022-JP shop (any of them may fall back to it)."""
    query = select(Shop.code, Shop.charset).where(Shop.charset != UTF8)
    if shop_id is not None:
        query = query.where(Shop.id == shop_id)
    problems = []
    for code, charset in session.execute(query.order_by(Shop.code)):
        for field, text in texts.items():
            if chars := unencodable(text, charset):
                problem = f"{describe(chars)} cannot be written in {charset} (shop {code})"
                problems.append((field, problem))
    return problems


def _default_name(shop_id: int | None, kind: str, device: str, stage: int, carrier: str) -> str:
    parts = [kind, device]
    if stage:
        parts.append({1: "first purchase", 2: "repeat"}[stage])
    if carrier:
        parts.append(carrier)
    owner = "common default" if shop_id is None else f"shop {shop_id}"
    return f"{' / '.join(parts)} ({owner})"


def reset_to_default(
    session: Session, shop_id: int, kind: str, device: str, stage: int, carrier: str
) -> bool:
    """Remove the shop's own template of a slot so the common default applies again.

    Returns False when the shop had no override there. Mails and campaigns that were
    made from the removed template keep their stored text; their template link is
    cleared (the row is gone), and re-rendering them picks the default.
    """
    if shop_id is None:
        raise ValueError("shop_id: reset needs a shop; the common default itself cannot be reset")
    check_slot(kind, device, stage, carrier)
    row = get_slot(session, shop_id, kind, device, stage, carrier)
    if row is None:
        return False
    session.execute(update(Mail).where(Mail.template_id == row.id).values(template_id=None))
    session.execute(update(Campaign).where(Campaign.template_id == row.id).values(template_id=None))
    session.delete(row)
    session.flush()
    return True


def list_templates(
    session: Session, shop_id: int | None = None, kind: str | None = None, *, all_: bool = False
) -> list[Template]:
    """Templates of a shop plus the common defaults (all_=True: every shop's)."""
    q = select(Template)
    if not all_:
        owner: ColumnElement[bool] = Template.shop_id.is_(None)
        if shop_id is not None:
            owner = or_(Template.shop_id == shop_id, owner)
        q = q.where(owner)
    if kind is not None:
        q = q.where(Template.kind == kind)
    q = q.order_by(
        Template.kind,
        Template.shop_id.is_(None),
        Template.shop_id,
        Template.device,
        Template.stage,
        Template.carrier,
    )
    return list(session.scalars(q))
