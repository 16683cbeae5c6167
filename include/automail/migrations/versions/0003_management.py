"""management schema changes: trigram indexes for the screen's body substring search

On PostgreSQL, `body ILIKE '%…%'` over millions of mails needs pg_trgm GIN indexes on
the text and HTML bodies (the search ORs both). SQLite has no equivalent: nothing there.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

INDEXES = {"ix_mails_body_text_trgm": "body_text", "ix_mails_body_html_trgm": "body_html"}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, column in INDEXES.items():
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON mails USING gin ({column} gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
