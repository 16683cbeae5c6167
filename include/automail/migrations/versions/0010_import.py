"""import of orders, customers and shipments (issue 15)

Customers and shipments get the shop system's id, unique per shop, so imports upsert
by (shop, source id); orders already are unique by (shop, order number). Import runs,
their rejected rows and SQL sources get their own tables.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("source_id", sa.String(length=320), nullable=True))
        batch.create_index("uq_customers_source", ["shop_id", "source_id"], unique=True)
    with op.batch_alter_table("shipments") as batch:
        batch.add_column(sa.Column("shop_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("source_id", sa.String(length=100), nullable=True))
        batch.create_foreign_key("fk_shipments_shop_id_shops", "shops", ["shop_id"], ["id"])
        batch.create_index("uq_shipments_source", ["shop_id", "source_id"], unique=True)
    op.create_index("ix_orders_customer", "orders", ["customer_id", "ordered_at", "id"])
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "import_files",
        sa.Column("id", big_id, nullable=False),
        sa.Column("shop_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=1000), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("mapping", sa.String(length=1000), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("rows_read", sa.Integer(), nullable=False),
        sa.Column("inserted", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("rejects_path", sa.String(length=1000), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_import_files"),
        sa.ForeignKeyConstraint(["shop_id"], ["shops.id"], name="fk_import_files_shop_id_shops"),
    )
    op.create_index("ix_import_files_checksum", "import_files", ["kind", "checksum"])
    op.create_index("ix_import_files_source", "import_files", ["source", "id"])
    op.create_table(
        "import_rejects",
        sa.Column("id", big_id, nullable=False),
        sa.Column("import_file_id", big_id, nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("column", sa.String(length=200), nullable=True),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_import_rejects"),
        sa.ForeignKeyConstraint(
            ["import_file_id"],
            ["import_files.id"],
            name="fk_import_rejects_import_file_id_import_files",
        ),
    )
    op.create_index("ix_import_rejects_file", "import_rejects", ["import_file_id", "line"])
    op.create_table(
        "import_sql_sources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shop_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("conn_id", sa.String(length=250), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("watermark_column", sa.String(length=100), nullable=False),
        sa.Column("watermark", sa.String(length=64), nullable=True),
        sa.Column("mapping", sa.String(length=1000), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("last_pulled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_import_sql_sources"),
        sa.ForeignKeyConstraint(
            ["shop_id"], ["shops.id"], name="fk_import_sql_sources_shop_id_shops"
        ),
        sa.UniqueConstraint("shop_id", "kind", "conn_id", name="uq_import_sql_sources_shop_id"),
    )


def downgrade() -> None:
    op.drop_table("import_sql_sources")
    op.drop_index("ix_import_rejects_file", table_name="import_rejects")
    op.drop_table("import_rejects")
    op.drop_index("ix_import_files_source", table_name="import_files")
    op.drop_index("ix_import_files_checksum", table_name="import_files")
    op.drop_table("import_files")
    op.drop_index("ix_orders_customer", table_name="orders")
    with op.batch_alter_table("shipments") as batch:
        batch.drop_index("uq_shipments_source")
        batch.drop_constraint("fk_shipments_shop_id_shops", type_="foreignkey")
        batch.drop_column("source_id")
        batch.drop_column("shop_id")
    with op.batch_alter_table("customers") as batch:
        batch.drop_index("uq_customers_source")
        batch.drop_column("source_id")
