"""bounces and address health schema changes

Bounce rows say how they were matched to their mail (X-Automail-Id, Message-ID, VERP,
or the documented last resort: the newest sent mail to the recipient) and what they
did (applied to mail and address, or recorded only), keep the returned Message-ID for
unmatched ones, and are found by mail (detail screen) and newest first (CLI list).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bounces", schema=None) as batch_op:
        batch_op.add_column(sa.Column("matched_by", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("effect", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("original_message_id", sa.String(length=255), nullable=True))
        batch_op.create_index("ix_bounces_mail", ["mail_id"], unique=False)
        batch_op.create_index("ix_bounces_received", ["received_at", "id"], unique=False)
        batch_op.create_index("ix_bounces_recipient", ["recipient"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("bounces", schema=None) as batch_op:
        batch_op.drop_index("ix_bounces_recipient")
        batch_op.drop_index("ix_bounces_received")
        batch_op.drop_index("ix_bounces_mail")
        batch_op.drop_column("original_message_id")
        batch_op.drop_column("effect")
        batch_op.drop_column("matched_by")
