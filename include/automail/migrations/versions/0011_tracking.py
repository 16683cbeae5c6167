"""opens and clicks (issue 18): tracking switches, link table, hits, event-started steps

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SWITCHES = ("track_opens", "track_clicks", "track_text_links")


def _flag(name: str) -> sa.Column:
    return sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.false())


def upgrade() -> None:
    with op.batch_alter_table("campaigns") as batch:
        for name in SWITCHES:
            batch.add_column(_flag(name))
    with op.batch_alter_table("step_sequences") as batch:
        for name in SWITCHES:
            batch.add_column(_flag(name))
        batch.add_column(sa.Column("start_link_id", sa.Integer(), nullable=True))
        batch.add_column(_flag("allow_restart"))
    op.create_table(
        "tracking_links",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("scope_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("url_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("scope IN ('campaign', 'step')", name="ck_tracking_links_scope"),
        sa.PrimaryKeyConstraint("id", name="pk_tracking_links"),
        sa.UniqueConstraint("scope", "scope_id", "url_hash", name="uq_tracking_links_url"),
    )
    big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "tracking_hits",
        sa.Column("id", big, primary_key=True),
        sa.Column("mail_id", big, nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("scope_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", big, nullable=True),
        sa.Column("link_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("ua_class", sa.String(length=16), nullable=False),
        sa.Column("machine", sa.String(length=32), nullable=True),
        sa.CheckConstraint("kind IN ('open', 'click')", name="ck_tracking_hits_kind"),
        sa.PrimaryKeyConstraint("id", name="pk_tracking_hits"),
    )
    op.create_index("ix_tracking_hits_scope", "tracking_hits", ["scope", "scope_id", "kind", "at"])
    op.create_index("ix_tracking_hits_mail", "tracking_hits", ["mail_id", "at"])
    op.create_index("ix_tracking_hits_link", "tracking_hits", ["link_id", "customer_id"])


def downgrade() -> None:
    op.drop_table("tracking_hits")
    op.drop_table("tracking_links")
    with op.batch_alter_table("step_sequences") as batch:
        batch.drop_column("allow_restart")
        batch.drop_column("start_link_id")
        for name in reversed(SWITCHES):
            batch.drop_column(name)
    with op.batch_alter_table("campaigns") as batch:
        for name in reversed(SWITCHES):
            batch.drop_column(name)
