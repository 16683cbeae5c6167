"""transactional creation schema changes

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shop_mail_kinds") as batch:
        batch.add_column(sa.Column("covered_until", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("mails") as batch:
        batch.add_column(sa.Column("created_by", sa.String(length=250), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mails") as batch:
        batch.drop_column("created_by")
    with op.batch_alter_table("shop_mail_kinds") as batch:
        batch.drop_column("covered_until")
