"""mail data screen: exact queue counts per shop and kind (issue 13 item 6)

An index-only count(*) for status + shop + kind (the reviewer's queue views), and the
same order as the page (created_at, id) so that page is an ordered index walk too.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

INDEX = "ix_mails_status_shop_kind"


def upgrade() -> None:
    op.create_index(INDEX, "mails", ["status", "shop_id", "kind", "created_at", "id"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="mails")
