"""management schema changes: search indexes that creation does not pay for

- `mails.search_indexed` (false on insert): the trigram GIN indexes on the bodies are
  PARTIAL (`WHERE search_indexed`), so an insert skips them; the background step
  `automail.search_index.index_pending` flips new mails to true in batches. The search
  reads the not-yet-indexed remainder through the small partial btree
  `ix_mails_search_pending` (`WHERE NOT search_indexed`).
- btree indexes for the screen's page: `(status, created_at, id)` serves "status X,
  newest first" and `(created_at, id)` serves "all statuses, newest first" with LIMIT;
  `(status, sent_at) INCLUDE (created_at, id)` (only rows with a sent_at, so inserts
  skip it) serves the sent range, index-only.
SQLite gets the btree indexes; it has no trigram indexes (its search is a scan).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TRGM = {"ix_mails_body_text_trgm": "body_text", "ix_mails_body_html_trgm": "body_html"}
BTREE = {
    "ix_mails_status_created": (["status", "created_at", "id"], None, []),
    "ix_mails_created": (["created_at", "id"], None, []),
    # INCLUDE (PostgreSQL): a sent range's (created_at, id) come index-only for the sort.
    "ix_mails_status_sent": (["status", "sent_at"], "sent_at IS NOT NULL", ["created_at", "id"]),
    "ix_mails_search_pending": (["id"], "NOT search_indexed", []),
}


def upgrade() -> None:
    with op.batch_alter_table("mails") as batch:
        batch.add_column(
            sa.Column("search_indexed", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("mails") as batch:
        for name, (columns, where, include) in BTREE.items():
            cond = sa.text(where) if where else None
            batch.create_index(
                name, columns, postgresql_where=cond, sqlite_where=cond, postgresql_include=include
            )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, column in TRGM.items():
        op.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON mails USING gin ({column} gin_trgm_ops) "
            "WHERE search_indexed"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in TRGM:
            op.execute(f"DROP INDEX IF EXISTS {name}")
    with op.batch_alter_table("mails") as batch:
        for name in BTREE:
            batch.drop_index(name)
        batch.drop_column("search_indexed")
