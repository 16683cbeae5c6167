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


# Mail references that stop being foreign keys (see models.Mail) and indexes that become
# partial (creation inserts NULL there, so it skips them).
DROPPED_FKS = {
    "fk_mails_customer_id_customers": ("customer_id", "customers"),
    "fk_mails_order_id_orders": ("order_id", "orders"),
    "fk_mails_shipment_id_shipments": ("shipment_id", "shipments"),
    "fk_mails_template_id_templates": ("template_id", "templates"),
}
PARTIAL = {
    "ix_mails_sent_at": ["sent_at"],
    "ix_mails_campaign": ["campaign_id"],
    "ix_mails_message_id": ["message_id"],
    "ix_mails_claim": ["claimed_by", "lease_until"],
}


def _where(columns: list[str]) -> dict:
    cond = sa.text(f"{columns[0]} IS NOT NULL")
    return {"postgresql_where": cond, "sqlite_where": cond}


def upgrade() -> None:
    with op.batch_alter_table("shop_mail_kinds") as batch:
        batch.add_column(sa.Column("covered_until", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("mails") as batch:
        batch.add_column(sa.Column("created_by", sa.String(length=250), nullable=True))
        for name in DROPPED_FKS:
            batch.drop_constraint(name, type_="foreignkey")
        for name, columns in PARTIAL.items():
            batch.drop_index(name)
            batch.create_index(name, columns, **_where(columns))


def downgrade() -> None:
    with op.batch_alter_table("mails") as batch:
        for name, columns in PARTIAL.items():
            batch.drop_index(name)
            batch.create_index(name, columns)
        for name, (column, table) in DROPPED_FKS.items():
            batch.create_foreign_key(name, table, [column], ["id"])
        batch.drop_column("created_by")
    with op.batch_alter_table("shop_mail_kinds") as batch:
        batch.drop_column("covered_until")
