"""deliverability options of seed 002: Cc and Reply-To lists, charset, DKIM key connection

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shops") as batch:
        batch.add_column(sa.Column("cc", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("charset", sa.String(16), nullable=False, server_default="utf-8")
        )
        batch.add_column(sa.Column("dkim_conn_id", sa.String(250), nullable=True))
        batch.alter_column("reply_to", type_=sa.String(1000), existing_nullable=False)
    with op.batch_alter_table("mails") as batch:
        batch.alter_column("reply_to", type_=sa.String(1000), existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("mails") as batch:
        batch.alter_column("reply_to", type_=sa.String(320), existing_nullable=True)
    with op.batch_alter_table("shops") as batch:
        batch.alter_column("reply_to", type_=sa.String(320), existing_nullable=False)
        batch.drop_column("dkim_conn_id")
        batch.drop_column("charset")
        batch.drop_column("cc")
