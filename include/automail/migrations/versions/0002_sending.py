"""sending schema changes: an index for lease recovery (claimed_by, lease_until)

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mails") as batch:
        batch.create_index("ix_mails_claim", ["claimed_by", "lease_until"])


def downgrade() -> None:
    with op.batch_alter_table("mails") as batch:
        batch.drop_index("ix_mails_claim")
