"""Rendering mails from templates: the fast per-run Renderer, re-render and preview.

A Renderer is made once per creation run (or request) on a session. It loads the
candidate templates of a (shop, kind) once, keeps compiled Jinja per
(template id, updated_at), and renders each mail without any query: the caller hands
in rows it already read (ORM instances or SQLAlchemy Row objects with column names).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from automail.devices import device_for_address
from automail.models import Customer, Mail, MailEvent, Order, OrderLine, Shipment, Shop, Template
from automail.rendering.context import Sources
from automail.rendering.environment import CompiledTemplate, compile_template
from automail.rendering.resolve import candidates, choose, stage_for
from automail.rendering.samples import (
    SAMPLE_CUSTOMER,
    SAMPLE_EXTRA,
    SAMPLE_LINES,
    SAMPLE_ORDER,
    SAMPLE_SHIPMENT,
    SAMPLE_SHOP,
)
from automail.states import (
    ERROR,
    HELD,
    ORDER_CONFIRMATION,
    SHIPPING_NOTICE,
    TRANSACTIONAL_KINDS,
    UNSENT,
)

_SHOP_COLUMNS = (
    "id",
    "name",
    "from_name",
    "reply_to",
    "contact_address",
    "signature_pc",
    "signature_mobile",
    "coupon_url",
    "repeat_stage_from",
)

# A stored mail may be re-rendered while it has not gone out (sent mails are history).
RERENDER_FROM = (UNSENT, HELD, ERROR)


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    body_text: str | None
    body_html: str | None
    template_id: int | None
    device: str


def slot_for(
    kind: str, shop: Any, customer: Any, order: Any = None, shipment: Any = None
) -> tuple[str, int, str]:
    """(device, stage, carrier) of a mail: device by address, stage by purchase count."""
    email = getattr(customer, "email", None) if customer is not None else None
    device = device_for_address(email) if email else "pc"
    stage = 0
    if kind == ORDER_CONFIRMATION and order is not None:
        stage = stage_for(
            getattr(order, "purchase_count", None), getattr(shop, "repeat_stage_from", None)
        )
    carrier = ""
    if kind == SHIPPING_NOTICE and shipment is not None:
        carrier = getattr(shipment, "carrier", None) or ""
    return device, stage, carrier


class Renderer:
    """Caches templates and compiled Jinja per session/run."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._candidates: dict[tuple[int | None, str], list[Template]] = {}
        self._chosen: dict[tuple[int | None, str, str, int, str], Template] = {}
        self._compiled: dict[tuple[int, datetime | None, bool], CompiledTemplate] = {}
        self._shops: dict[int, tuple[Any, SimpleNamespace]] = {}

    def _shop_view(self, shop: Any) -> Any:
        """A plain copy of the shop's columns, made once per run: ORM attribute reads cost
        more than the rest of a field. A Renderer lives for one run, so edits to the
        shop during the run are not seen (make a new Renderer after editing a shop)."""
        hit = self._shops.get(id(shop))
        if hit is not None and hit[0] is shop:
            return hit[1]
        view = SimpleNamespace(**{name: getattr(shop, name, None) for name in _SHOP_COLUMNS})
        self._shops[id(shop)] = (shop, view)
        return view

    def template_for(
        self, shop_id: int | None, kind: str, device: str, stage: int, carrier: str
    ) -> Template:
        """The template of a slot (resolve_template's rules), cached for this run."""
        key = (shop_id, kind, device, stage, carrier)
        hit = self._chosen.get(key)
        if hit is None:
            rows = self._candidates.get((shop_id, kind))
            if rows is None:
                rows = self._candidates[(shop_id, kind)] = candidates(self.session, shop_id, kind)
            hit = self._chosen[key] = choose(rows, shop_id, kind, device, stage, carrier)
        return hit

    def compiled(self, template: Template, preview: bool = False) -> CompiledTemplate:
        key = (template.id, template.updated_at, preview)
        hit = self._compiled.get(key)
        if hit is None:
            hit = self._compiled[key] = compile_template(
                template.subject, template.body_text, template.body_html, preview
            )
        return hit

    def render(
        self,
        kind: str,
        shop: Any,
        customer: Any,
        *,
        order: Any = None,
        lines: Sequence[Any] | None = None,
        shipment: Any = None,
        extra: Mapping[str, object] | None = None,
        preview: bool = False,
    ) -> RenderedMail:
        """Render one mail of `kind` for `customer` (None for mails to the shop itself).

        Raises TemplateNotFound when no template fits, RenderError when a stored
        template fails (e.g. the sandbox refused it).
        """
        device, stage, carrier = slot_for(kind, shop, customer, order, shipment)
        template = self.template_for(shop.id, kind, device, stage, carrier)
        return self.render_with(
            template,
            shop,
            customer,
            order=order,
            lines=lines,
            shipment=shipment,
            extra=extra,
            preview=preview,
            device=device,
        )

    def render_with(
        self,
        template: Template,
        shop: Any,
        customer: Any,
        *,
        order: Any = None,
        lines: Sequence[Any] | None = None,
        shipment: Any = None,
        extra: Mapping[str, object] | None = None,
        preview: bool = False,
        device: str | None = None,
    ) -> RenderedMail:
        """Render with a given template (no resolution): previews, campaign templates."""
        if device is None:
            email = getattr(customer, "email", None) if customer is not None else None
            device = device_for_address(email) if email else "pc"
        src = Sources(self._shop_view(shop), customer, order, lines, shipment, extra, device)
        subject, text, html = self.compiled(template, preview).render(src, preview)
        return RenderedMail(subject, text, html, template.id, device)


def _source_rows(
    session: Session, mail: Mail
) -> tuple[Shop, Customer | None, Order | None, list[OrderLine] | None, Shipment | None]:
    shop = session.get(Shop, mail.shop_id)
    if shop is None:
        raise LookupError(f"mail {mail.id}: its shop {mail.shop_id} no longer exists")
    customer = session.get(Customer, mail.customer_id) if mail.customer_id else None
    order = session.get(Order, mail.order_id) if mail.order_id else None
    shipment = session.get(Shipment, mail.shipment_id) if mail.shipment_id else None
    if order is None and shipment is not None:
        order = session.get(Order, shipment.order_id)
    lines = None
    if order is not None:
        lines = list(
            session.scalars(
                select(OrderLine).where(OrderLine.order_id == order.id).order_by(OrderLine.id)
            )
        )
    return shop, customer, order, lines, shipment


def rerender_mail(
    session: Session,
    mail: Mail,
    *,
    actor: str = "system",
    extra: Mapping[str, object] | None = None,
) -> Mail:
    """Render a stored, not yet sent mail again from its current template and source rows.

    The template is resolved afresh (an edited or reset template applies). Records a
    MailEvent(event="rerendered") with what changed. Sent, cancelled and deleted mails
    are history and are refused.
    """
    if mail.status not in RERENDER_FROM:
        raise ValueError(
            f"mail {mail.id}: cannot re-render a mail whose status is {mail.status!r} "
            f"(allowed from: {', '.join(RERENDER_FROM)})"
        )
    if mail.kind not in TRANSACTIONAL_KINDS:
        raise ValueError(
            f"mail {mail.id}: kind {mail.kind!r} is not re-rendered from a template here "
            f"(only {', '.join(TRANSACTIONAL_KINDS)})"
        )
    shop, customer, order, lines, shipment = _source_rows(session, mail)
    if customer is None:
        raise LookupError(f"mail {mail.id}: it has no customer to render for")
    if customer.email != mail.to_address:
        # The stored To may have been corrected by staff: keep device from the mail.
        customer_view: Any = _WithEmail(customer, mail.to_address)
    else:
        customer_view = customer
    rendered = Renderer(session).render(
        mail.kind, shop, customer_view, order=order, lines=lines, shipment=shipment, extra=extra
    )
    changed = [
        name
        for name in ("subject", "body_text", "body_html", "template_id", "device")
        if getattr(mail, name) != getattr(rendered, name)
    ]
    mail.subject = rendered.subject
    mail.body_text = rendered.body_text
    mail.body_html = rendered.body_html
    mail.template_id = rendered.template_id
    mail.device = rendered.device
    mail.rendered_at = datetime.now(UTC)
    session.add(
        MailEvent(
            mail_id=mail.id,
            event="rerendered",
            from_status=mail.status,
            to_status=mail.status,
            actor=actor,
            detail=(f"template {rendered.template_id}; changed: {', '.join(changed) or 'nothing'}"),
        )
    )
    session.flush()
    return mail


def preview_mail(session: Session, mail: Mail) -> RenderedMail:
    """A stored mail as the detail view shows it (seed 000, B3): rendered from its
    template and source rows with empty tags left visible, e.g. `[SIGN_M]` where the
    shop has no mobile signature; the mail that is (or was) sent has them empty.

    Uses the mail's own template when it still exists, else resolves the slot again.
    Writes nothing.
    """
    if mail.kind not in TRANSACTIONAL_KINDS and mail.template_id is None:
        raise ValueError(f"mail {mail.id}: kind {mail.kind!r} has no template to preview")
    shop, customer, order, lines, shipment = _source_rows(session, mail)
    customer_view: Any = _WithEmail(customer, mail.to_address) if customer else None
    renderer = Renderer(session)
    template = session.get(Template, mail.template_id) if mail.template_id else None
    if template is None:
        return renderer.render(
            mail.kind, shop, customer_view, order=order, lines=lines, shipment=shipment,
            preview=True,
        )  # fmt: skip
    return renderer.render_with(
        template, shop, customer_view, order=order, lines=lines, shipment=shipment,
        preview=True, device=mail.device,
    )  # fmt: skip


class _WithEmail:
    """A customer seen with another address (the mail's To), other fields unchanged."""

    def __init__(self, customer: Any, email: str) -> None:
        self._customer = customer
        self.email = email

    def __getattr__(self, name: str) -> Any:
        return getattr(self._customer, name)


def preview(
    session: Session,
    template_id: int,
    *,
    shop_id: int | None = None,
    customer_id: int | None = None,
    order_id: int | None = None,
    shipment_id: int | None = None,
    extra: Mapping[str, object] | None = None,
    sent: bool = False,
) -> RenderedMail:
    """Render template `template_id` for a look before saving or sending.

    Real rows are used where ids are given (the shop defaults to the template's own
    shop); everything else comes from built-in sample rows. Empty values show their tag
    as written (A6) unless `sent=True`, which shows exactly what would go out.
    """
    template = session.get(Template, template_id)
    if template is None:
        raise LookupError(f"template_id: no template with id {template_id}")
    shop_id = shop_id if shop_id is not None else template.shop_id
    shop: Any = SAMPLE_SHOP
    if shop_id is not None:
        shop = session.get(Shop, shop_id)
        if shop is None:
            raise LookupError(f"shop_id: no shop with id {shop_id}")
    customer: Any = SAMPLE_CUSTOMER
    if customer_id is not None:
        customer = session.get(Customer, customer_id)
        if customer is None:
            raise LookupError(f"customer_id: no customer with id {customer_id}")
    shipment: Any = SAMPLE_SHIPMENT
    if shipment_id is not None:
        shipment = session.get(Shipment, shipment_id)
        if shipment is None:
            raise LookupError(f"shipment_id: no shipment with id {shipment_id}")
        order_id = order_id if order_id is not None else shipment.order_id
    order: Any = SAMPLE_ORDER
    lines: Any = SAMPLE_LINES
    if order_id is not None:
        order = session.get(Order, order_id)
        if order is None:
            raise LookupError(f"order_id: no order with id {order_id}")
        lines = None  # an ORM Order brings its own lines
    merged = {**SAMPLE_EXTRA, **(extra or {})}
    return Renderer(session).render_with(
        template,
        shop,
        customer,
        order=order,
        lines=lines,
        shipment=shipment,
        extra=merged,
        preview=not sent,
        device=template.device,
    )
