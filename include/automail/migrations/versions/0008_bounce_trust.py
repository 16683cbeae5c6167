"""bounces: how far a bounce's link to its mail can be trusted

`trust` is `signed` (a valid per-mail token in the return path or Message-ID),
`unsigned` (linked by something anyone can forge: X-Automail-Id, a plain Message-ID,
an unsigned return path, the recipient) or `bad_signature` (a token that does not
verify); only `signed` bounces change a mail or an address. NULL on rows recorded
before this revision and on rows with no link at all.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bounces", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trust", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bounces", schema=None) as batch_op:
        batch_op.drop_column("trust")
