"""newest sent mails of a customer's address: the failure streak read per bounce

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Without it SQLite walks every sent mail in sent_at order (ix_mails_status_sent) to
    # find one customer's newest fifty: bounce ingestion slowed with the store's size.
    op.create_index(
        "ix_mails_customer_sent", "mails", ["customer_id", "to_address", "sent_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_mails_customer_sent", table_name="mails")
