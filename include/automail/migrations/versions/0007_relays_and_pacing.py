"""per-shop relays (connection, marketplace) and per-domain backoffs

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shops") as batch:
        batch.add_column(sa.Column("smtp_conn_id", sa.String(250), nullable=True))
        batch.add_column(sa.Column("marketplace", sa.String(32), nullable=True))
    op.create_table(
        "domain_backoffs",
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("domain", name=op.f("pk_domain_backoffs")),
    )


def downgrade() -> None:
    op.drop_table("domain_backoffs")
    with op.batch_alter_table("shops") as batch:
        batch.drop_column("marketplace")
        batch.drop_column("smtp_conn_id")
