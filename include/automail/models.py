"""The mail store's schema (SQLAlchemy 2.x declarative).

One `mails` table is both the queue and the history: a mail row is never removed,
so its idempotency key keeps a deleted or cancelled mail from being created again,
and `mail_events` + `send_attempts` answer "what happened to mail X".
The schema itself is created by alembic migrations (automail/migrations), never by
`create_all` in production paths.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from automail.states import (
    ATTEMPT_OUTCOMES,
    CAMPAIGN_STATUSES,
    DELIVERY_MODES,
    DEVICES,
    MAIL_KINDS,
    MAIL_STATUSES,
)

# Stable constraint names so alembic migrations can drop/alter them on both stores.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; BigInteger elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every store: SQLite keeps no zone, so store naive UTC there."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _not_null(column: str) -> dict:
    """Partial index over set values only: rows start with NULL there, so inserts skip it."""
    return {
        "postgresql_where": text(f"{column} IS NOT NULL"),
        "sqlite_where": text(f"{column} IS NOT NULL"),
    }


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    __table__: ClassVar[Table]  # every model here is one plain table (typing: .insert())


DEFAULT_RELAY = "automail_smtp"  # the Airflow connection of shops that name no relay


class Shop(Base):
    """A shop and its sender settings (A7), caps and notice addresses (B7, B8)."""

    __tablename__ = "shops"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    from_address: Mapped[str] = mapped_column(String(320))
    from_name: Mapped[str | None] = mapped_column(String(200))
    reply_to: Mapped[str] = mapped_column(String(1000))  # comma list (seed 002, 0012)
    bcc: Mapped[str | None] = mapped_column(Text)  # comma-separated addresses
    return_path: Mapped[str | None] = mapped_column(String(320))  # envelope sender, bounces
    admin_address: Mapped[str] = mapped_column(String(320))
    status_notice_address: Mapped[str | None] = mapped_column(String(320))
    signature_pc: Mapped[str] = mapped_column(Text, default="")
    signature_mobile: Mapped[str] = mapped_column(Text, default="")
    coupon_url: Mapped[str | None] = mapped_column(String(1000))
    address_check: Mapped[bool] = mapped_column(Boolean, default=True)  # B9 switch
    notify_pending: Mapped[bool] = mapped_column(Boolean, default=False)  # B8 switch
    repeat_stage_from: Mapped[int] = mapped_column(Integer, default=2)  # A5 stage 2 from Nth
    monthly_quota: Mapped[int | None] = mapped_column(Integer)  # C9; None = unlimited
    # H1: the Airflow connection of the shop's relay (None = automail_smtp) and the
    # marketplace whose relay rules apply (seed 003: "rakuten" forbids mask addresses).
    smtp_conn_id: Mapped[str | None] = mapped_column(String(250))
    marketplace: Mapped[str | None] = mapped_column(String(32))
    # 0012 (seed 002 deliverability): Cc list (header + envelope, applied at send time),
    # the mail's charset (automail.charset) and the Airflow connection of its DKIM key.
    cc: Mapped[str | None] = mapped_column(Text)
    charset: Mapped[str] = mapped_column(String(16), default="utf-8", server_default="utf-8")
    dkim_conn_id: Mapped[str | None] = mapped_column(String(250))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), server_default=func.now())

    @property
    def relay(self) -> str:
        return self.smtp_conn_id or DEFAULT_RELAY

    @property
    def contact_address(self) -> str:
        """The first Reply-To address, where one address is wanted (the shop_email merge
        field, List-Unsubscribe's mailto:); Reply-To itself may be a list (seed 002)."""
        return (self.reply_to or "").split(",")[0].strip()


class Customer(Base):
    """A shop's customer; address health flags follow E3."""

    __tablename__ = "customers"
    __table_args__ = (
        Index("ix_customers_shop_email", "shop_id", "email"),
        Index("ix_customers_email", "email"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id"))
    name: Mapped[str] = mapped_column(String(200))
    name_kana: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    prefecture: Mapped[str | None] = mapped_column(String(20))
    address: Mapped[str | None] = mapped_column(String(500))
    phone: Mapped[str | None] = mapped_column(String(40))
    signed_up_at: Mapped[datetime] = mapped_column(UtcDateTime())
    marketing_opt_in: Mapped[bool] = mapped_column(Boolean, default=True)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    address_valid: Mapped[bool] = mapped_column(Boolean, default=True)
    address_cleaned: Mapped[bool] = mapped_column(Boolean, default=False)
    address_reason: Mapped[str | None] = mapped_column(Text)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    coupon_code: Mapped[str | None] = mapped_column(String(64))
    # 0007 (import): the shop system's customer id, or the lower-cased email (see imports).
    source_id: Mapped[str | None] = mapped_column(String(320))


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("shop_id", "order_number"),
        Index("ix_orders_shop_ordered_at", "shop_id", "ordered_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    order_number: Mapped[str] = mapped_column(String(64))
    ordered_at: Mapped[datetime] = mapped_column(UtcDateTime())
    purchase_count: Mapped[int] = mapped_column(Integer, default=1)  # nth purchase, A5 stages
    subtotal: Mapped[int] = mapped_column(Integer, default=0)  # yen
    shipping_fee: Mapped[int] = mapped_column(Integer, default=0)
    tax: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    payment_method: Mapped[str | None] = mapped_column(String(100))
    ship_to_name: Mapped[str | None] = mapped_column(String(200))
    ship_to_address: Mapped[str | None] = mapped_column(String(500))

    lines: Mapped[list[OrderLine]] = relationship(order_by="OrderLine.id")


class OrderLine(Base):
    __tablename__ = "order_lines"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    sku: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(300))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[int] = mapped_column(Integer)


class Shipment(Base):
    __tablename__ = "shipments"
    __table_args__ = (Index("ix_shipments_confirmed_at", "confirmed_at", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    carrier: Mapped[str] = mapped_column(String(64))
    tracking_number: Mapped[str | None] = mapped_column(String(64))
    confirmed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # 0007 (import): the shop system's shipment id (default: its order number).
    shop_id: Mapped[int | None] = mapped_column(ForeignKey("shops.id"))
    source_id: Mapped[str | None] = mapped_column(String(100))


class ShopMailKind(Base):
    """Per-shop switch of a mail kind (A1), its delivery mode (B6) and lookback state (A3)."""

    __tablename__ = "shop_mail_kinds"
    __table_args__ = (
        UniqueConstraint("shop_id", "kind"),
        CheckConstraint(_in("kind", MAIL_KINDS), name="kind"),
        CheckConstraint(_in("mode", DELIVERY_MODES), name="mode"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id"))
    kind: Mapped[str] = mapped_column(String(32))
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    mode: Mapped[str] = mapped_column(String(16), default="auto")
    enabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Set once the first run after switching on has covered the lookback window.
    lookback_done_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Events before this are covered without gaps: a run after a pause starts here.
    covered_until: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Template(Base):
    """A mail template: shop_id NULL is the common default a shop may override (A5)."""

    __tablename__ = "templates"
    __table_args__ = (
        CheckConstraint(_in("kind", MAIL_KINDS), name="kind"),
        CheckConstraint(_in("device", DEVICES), name="device"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int | None] = mapped_column(ForeignKey("shops.id"))
    kind: Mapped[str] = mapped_column(String(32))
    device: Mapped[str] = mapped_column(String(8), default="pc")
    stage: Mapped[int] = mapped_column(Integer, default=0)
    carrier: Mapped[str] = mapped_column(String(64), default="")
    name: Mapped[str] = mapped_column(String(200), default="")
    subject: Mapped[str] = mapped_column(Text)
    body_text: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime(), server_default=func.now(), onupdate=func.now()
    )


# One template per slot; stage 0 / carrier '' mean "any", and the common default
# (shop_id NULL) is folded to 0 because NULLs never collide in a unique index.
Index(
    "uq_templates_slot",
    func.coalesce(Template.shop_id, 0),
    Template.kind,
    Template.device,
    Template.stage,
    Template.carrier,
    unique=True,
)


class Mail(Base):
    """One mail: queue entry while unsent/held/error, history once sent/cancelled/deleted."""

    __tablename__ = "mails"
    __table_args__ = (
        # The idempotency key (A2, D1, F1): one mail per (shop, kind, source).
        UniqueConstraint("shop_id", "kind", "source_key", name="uq_mails_source"),
        CheckConstraint(_in("status", MAIL_STATUSES), name="status"),
        CheckConstraint(_in("kind", MAIL_KINDS), name="kind"),
        Index("ix_mails_due", "status", "next_attempt_at", "id"),
        Index("ix_mails_shop_created", "shop_id", "created_at"),
        Index("ix_mails_sent_at", "sent_at", **_not_null("sent_at")),
        Index("ix_mails_to", "to_address"),
        Index("ix_mails_campaign", "campaign_id", **_not_null("campaign_id")),
        Index("ix_mails_customer", "customer_id"),
        Index("ix_mails_message_id", "message_id", **_not_null("message_id")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id"))
    kind: Mapped[str] = mapped_column(String(32))
    source_key: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="unsent")
    mode: Mapped[str] = mapped_column(String(16), default="auto")  # manual: sent by hand only
    # References, not foreign keys: a mail is a self-contained snapshot that must outlive
    # a purged order or customer, and four FK checks doubled the cost of every insert.
    customer_id: Mapped[int | None] = mapped_column(BigId)
    order_id: Mapped[int | None] = mapped_column(BigId)
    shipment_id: Mapped[int | None] = mapped_column(BigId)
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"))
    template_id: Mapped[int | None] = mapped_column(Integer)
    copied_from_id: Mapped[int | None] = mapped_column(ForeignKey("mails.id"))
    device: Mapped[str] = mapped_column(String(8), default="pc")
    to_address: Mapped[str] = mapped_column(String(320))
    from_address: Mapped[str] = mapped_column(String(320))
    from_name: Mapped[str | None] = mapped_column(String(200))
    reply_to: Mapped[str | None] = mapped_column(String(1000))  # comma list (0012)
    bcc: Mapped[str | None] = mapped_column(Text)
    return_path: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text, default="")
    body_text: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    extra_headers: Mapped[dict | None] = mapped_column(JSON)
    message_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime(), server_default=func.now(), onupdate=func.now()
    )
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    rendered_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    # Lease (F3): the claimer's id and when the claim lapses if the worker dies.
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    bounce_outcome: Mapped[str | None] = mapped_column(String(8))  # hard/soft after a DSN (E1)
    created_by: Mapped[str | None] = mapped_column(String(250))  # DAG run id or staff actor
    # 0003 (management): false on insert, so inserts skip the partial trigram indexes;
    # automail.search_index.index_pending flips it in the background.
    search_indexed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    attempts: Mapped[list[SendAttempt]] = relationship(order_by="SendAttempt.id")
    events: Mapped[list[MailEvent]] = relationship(order_by="MailEvent.id")


# 0002 (sending): lease recovery finds lapsed claims without scanning the queue.
Index("ix_mails_claim", Mail.claimed_by, Mail.lease_until, **_not_null("claimed_by"))

# 0003 (management): the search screen's page, count and sent range (see that migration;
# the trigram GIN indexes `WHERE search_indexed` are PostgreSQL-only DDL there).
Index("ix_mails_status_created", Mail.status, Mail.created_at, Mail.id)
Index("ix_mails_created", Mail.created_at, Mail.id)
Index(
    "ix_mails_status_sent",
    Mail.status,
    Mail.sent_at,
    postgresql_include=["created_at", "id"],
    **_not_null("sent_at"),
)
Index(
    "ix_mails_search_pending",
    Mail.id,
    postgresql_where=text("NOT search_indexed"),
    sqlite_where=text("NOT search_indexed"),
)
# Body search on PostgreSQL: trigram GIN indexes over indexed mails (pg_trgm, made by
# 0003). Declared so alembic's compare sees them; PostgreSQL-only DDL (ddl_if), which
# migrate.include_object_for honours when comparing a SQLite store.
for _column in (Mail.body_text, Mail.body_html):
    Index(
        f"ix_mails_{_column.key}_trgm",
        _column,
        postgresql_using="gin",
        postgresql_ops={_column.key: "gin_trgm_ops"},
        postgresql_where=text("search_indexed"),
    ).ddl_if(dialect="postgresql")


class SendAttempt(Base):
    """Every SMTP try (A8, E2): written before the transaction and completed after it."""

    __tablename__ = "send_attempts"
    __table_args__ = (
        CheckConstraint(_in("outcome", ATTEMPT_OUTCOMES), name="outcome"),
        Index("ix_send_attempts_mail", "mail_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    mail_id: Mapped[int] = mapped_column(ForeignKey("mails.id"))
    attempt_no: Mapped[int] = mapped_column(Integer)
    claim_id: Mapped[str | None] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    outcome: Mapped[str] = mapped_column(String(16), default="in_flight")
    smtp_code: Mapped[int | None] = mapped_column(Integer)
    enhanced_code: Mapped[str | None] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text)


class MailEvent(Base):
    """The audit trail: every status change and staff action on a mail."""

    __tablename__ = "mail_events"
    __table_args__ = (Index("ix_mail_events_mail", "mail_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    mail_id: Mapped[int] = mapped_column(ForeignKey("mails.id"))
    at: Mapped[datetime] = mapped_column(UtcDateTime(), server_default=func.now())
    event: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(100), default="system")
    detail: Mapped[str | None] = mapped_column(Text)


class StaffAction(Base):
    """A bulk staff action (e.g. reviewers deleting pending mails): who, when, how many."""

    __tablename__ = "staff_actions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), server_default=func.now())
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(32))
    count: Mapped[int] = mapped_column(Integer)
    detail: Mapped[dict | None] = mapped_column(JSON)


class CampaignCategory(Base):
    """Newsletter category with its allowed sending hours (C8), local shop time."""

    __tablename__ = "campaign_categories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    allowed_from_hour: Mapped[int] = mapped_column(Integer, default=0)
    allowed_to_hour: Mapped[int] = mapped_column(Integer, default=24)


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint(_in("status", CAMPAIGN_STATUSES), name="status"),
        Index("ix_campaigns_status_scheduled", "status", "scheduled_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id"))
    category_id: Mapped[int | None] = mapped_column(ForeignKey("campaign_categories.id"))
    template_id: Mapped[int | None] = mapped_column(ForeignKey("templates.id"))
    name: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(Text)
    body_format: Mapped[str] = mapped_column(String(8), default="text")  # text | html
    body: Mapped[str] = mapped_column(Text)
    signature: Mapped[str | None] = mapped_column(Text)
    scheduled_at: Mapped[datetime] = mapped_column(UtcDateTime())
    status: Mapped[str] = mapped_column(String(16), default="scheduled")
    audience_mode: Mapped[str] = mapped_column(String(8), default="filter")  # filter | fixed
    audience_filter: Mapped[dict | None] = mapped_column(JSON)
    send_to: Mapped[str] = mapped_column(String(8), default="all")  # all | checked
    dedupe_newest: Mapped[bool] = mapped_column(Boolean, default=True)
    skip_already_received: Mapped[bool] = mapped_column(Boolean, default=False)
    targets: Mapped[int] = mapped_column(Integer, default=0)
    succeeded: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    unsent: Mapped[int] = mapped_column(Integer, default=0)
    status_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime(), server_default=func.now(), onupdate=func.now()
    )
    # 0004: content fingerprint at send time (C4 skip-already-received, C5), 配信開始時間.
    content_hash: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    status_changed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # 0007 (tracking): opens/clicks, off by default (automail.tracking).
    track_opens: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    track_clicks: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    track_text_links: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


Index("ix_campaigns_content_hash", Campaign.content_hash)


class CampaignEvent(Base):
    """One campaign status transition (C7): when, from, to, who and why."""

    __tablename__ = "campaign_events"
    __table_args__ = (Index("ix_campaign_events_campaign", "campaign_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    at: Mapped[datetime] = mapped_column(UtcDateTime(), server_default=func.now())
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(100), default="system")
    reason: Mapped[str | None] = mapped_column(Text)


class CampaignRecipient(Base):
    """A frozen or checked audience member (C3); links to the mail created for it."""

    __tablename__ = "campaign_recipients"
    __table_args__ = (UniqueConstraint("campaign_id", "customer_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    checked: Mapped[bool] = mapped_column(Boolean, default=True)
    mail_id: Mapped[int | None] = mapped_column(ForeignKey("mails.id"))


class StepSequence(Base):
    """Step mails (D1): a start event, a customer filter and offset steps."""

    __tablename__ = "step_sequences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id"))
    name: Mapped[str] = mapped_column(String(200))
    start_event: Mapped[str] = mapped_column(String(16))  # signup | first_order
    audience_filter: Mapped[dict | None] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), server_default=func.now())
    # 0004: start events before this are ignored (no mass mail to old customers).
    starts_from: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # 0007 (tracking): opens/clicks of its mails; start on a click of this tracked link;
    # allow_restart: one start per event instead of one per customer (seed 002 送信済も含める).
    track_opens: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    track_clicks: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    track_text_links: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    start_link_id: Mapped[int | None] = mapped_column(Integer)
    allow_restart: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    steps: Mapped[list[StepSequenceStep]] = relationship(order_by="StepSequenceStep.position")


class StepSequenceStep(Base):
    __tablename__ = "step_sequence_steps"
    __table_args__ = (UniqueConstraint("sequence_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sequence_id: Mapped[int] = mapped_column(ForeignKey("step_sequences.id"))
    position: Mapped[int] = mapped_column(Integer)
    offset_minutes: Mapped[int] = mapped_column(Integer)
    subject: Mapped[str] = mapped_column(Text)
    body_text: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)


class Bounce(Base):
    """A received bounce/DSN, kept whether or not it matched a mail (E1)."""

    __tablename__ = "bounces"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)  # re-ingest is a no-op
    received_at: Mapped[datetime] = mapped_column(UtcDateTime(), server_default=func.now())
    source: Mapped[str | None] = mapped_column(String(500))
    kind: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str | None] = mapped_column(String(320))
    outcome: Mapped[str] = mapped_column(String(8))  # hard | soft | none
    smtp_code: Mapped[int | None] = mapped_column(Integer)
    enhanced_code: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    diagnostic: Mapped[str | None] = mapped_column(Text)
    mail_id: Mapped[int | None] = mapped_column(ForeignKey("mails.id"))
    # 0005: x-automail-id | message-id | verp | recipient (last resort) | NULL (unmatched)
    matched_by: Mapped[str | None] = mapped_column(String(16))
    # 0005: applied | recorded | ignored | other_recipient (see automail.bounces.ingest);
    # 0007: untrusted | no_recipient (recorded, not applied)
    effect: Mapped[str | None] = mapped_column(String(16))
    original_message_id: Mapped[str | None] = mapped_column(String(255))
    # 0007: signed | unsigned | bad_signature; NULL: no link, or recorded before 0007
    trust: Mapped[str | None] = mapped_column(String(16))


# 0005 (bounces): a mail's bounces, the newest first, by recipient (addresses show).
Index("ix_bounces_mail", Bounce.mail_id)
Index("ix_bounces_received", Bounce.received_at, Bounce.id)
Index("ix_bounces_recipient", Bounce.recipient)


class Setting(Base):
    """Global settings (mail server stopped, caps, windows): see automail.settings."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)  # JSON
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime(), server_default=func.now(), onupdate=func.now()
    )
    updated_by: Mapped[str] = mapped_column(String(100), default="system")


# Exact queue counts per shop and kind, index-only (migration 0009).
Index("ix_mails_status_shop_kind", Mail.status, Mail.shop_id, Mail.kind, Mail.created_at, Mail.id)


class DomainBackoff(Base):
    """A recipient domain that answered 4xx: its mails wait until `until` (H2 pacing)."""

    __tablename__ = "domain_backoffs"

    domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    since: Mapped[datetime] = mapped_column(UtcDateTime())
    until: Mapped[datetime] = mapped_column(UtcDateTime())
    reason: Mapped[str] = mapped_column(Text)


# 0010 (import): imported rows are upserted by (shop, source id); NULLs never collide,
# so rows made without a source id (tests, staff) are unaffected.
Index("uq_customers_source", Customer.shop_id, Customer.source_id, unique=True)
Index("uq_shipments_source", Shipment.shop_id, Shipment.source_id, unique=True)
# A customer's orders in time order: purchase_count (A5 stage) at import.
Index("ix_orders_customer", Order.customer_id, Order.ordered_at, Order.id)


class ImportFile(Base):
    """One import of a file or of a SQL source pull: what, from where, with what result.

    `status` is `running` until the last chunk is committed, then `done` (or `failed`
    with `error`); a re-drop of a file whose checksum is `done` imports nothing and is
    recorded as `skipped`, so the next scan of the drop folder does not read it again.
    """

    __tablename__ = "import_files"
    __table_args__ = (
        Index("ix_import_files_checksum", "kind", "checksum"),
        Index("ix_import_files_source", "source", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shop_id: Mapped[int | None] = mapped_column(ForeignKey("shops.id"))
    kind: Mapped[str] = mapped_column(String(16))  # orders | customers | shipments
    source: Mapped[str] = mapped_column(String(1000))  # path, URL or sql:<conn id>
    checksum: Mapped[str | None] = mapped_column(String(64))  # sha256 of the bytes
    size: Mapped[int | None] = mapped_column(BigInteger)
    modified_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    mapping: Mapped[str | None] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(16), default="running")
    error: Mapped[str | None] = mapped_column(Text)
    rows_read: Mapped[int] = mapped_column(Integer, default=0)
    inserted: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    rejects_path: Mapped[str | None] = mapped_column(String(1000))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class ImportReject(Base):
    """A row an import refused: where (file, line, column), what value and why."""

    __tablename__ = "import_rejects"
    __table_args__ = (Index("ix_import_rejects_file", "import_file_id", "line"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    import_file_id: Mapped[int] = mapped_column(ForeignKey("import_files.id"))
    line: Mapped[int] = mapped_column(Integer)
    column: Mapped[str | None] = mapped_column(String(200))
    value: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)


class ImportSqlSource(Base):
    """A shop's SQL source: an Airflow connection and a query, pulled incrementally."""

    __tablename__ = "import_sql_sources"
    __table_args__ = (UniqueConstraint("shop_id", "kind", "conn_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id"))
    kind: Mapped[str] = mapped_column(String(16))
    conn_id: Mapped[str] = mapped_column(String(250))
    query: Mapped[str] = mapped_column(Text)
    watermark_column: Mapped[str] = mapped_column(String(100), default="updated_at")
    watermark: Mapped[str | None] = mapped_column(String(64))  # ISO value last seen
    mapping: Mapped[str | None] = mapped_column(String(1000))  # preset name or file
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_pulled_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


# ---------------------------------------------------------------- 0007 (tracking)


class TrackingLink(Base):
    """A tracked link of one campaign or step, frozen when its mails are created: rows are
    only ever added, so editing the template later never breaks an old redirect."""

    __tablename__ = "tracking_links"
    __table_args__ = (
        UniqueConstraint("scope", "scope_id", "url_hash", name="uq_tracking_links_url"),
        CheckConstraint("scope IN ('campaign', 'step')", name="scope"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(8))  # campaign | step
    scope_id: Mapped[int] = mapped_column(Integer)  # campaigns.id | step_sequence_steps.id
    url: Mapped[str] = mapped_column(Text)
    url_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), server_default=func.now())


class TrackingHit(Base):
    """One open (link_id NULL) or click: mail, link, time, user agent class — no IP, no
    raw user agent. `machine` names why a hit is a machine's (NULL = a person's)."""

    __tablename__ = "tracking_hits"
    __table_args__ = (
        CheckConstraint("kind IN ('open', 'click')", name="kind"),
        Index("ix_tracking_hits_scope", "scope", "scope_id", "kind", "at"),
        Index("ix_tracking_hits_mail", "mail_id", "at"),
        Index("ix_tracking_hits_link", "link_id", "customer_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    mail_id: Mapped[int] = mapped_column(BigId)
    scope: Mapped[str] = mapped_column(String(8))
    scope_id: Mapped[int] = mapped_column(Integer)
    customer_id: Mapped[int | None] = mapped_column(BigId)
    link_id: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(8))
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    method: Mapped[str] = mapped_column(String(8), default="GET")
    ua_class: Mapped[str] = mapped_column(String(16))
    machine: Mapped[str | None] = mapped_column(String(32))


# A customer's address's newest sent mails: the bounce failure streak (migration 0012).
Index("ix_mails_customer_sent", Mail.customer_id, Mail.to_address, Mail.sent_at)
