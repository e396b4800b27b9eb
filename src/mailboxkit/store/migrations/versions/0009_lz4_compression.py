"""lz4 compression of the large text columns on PostgreSQL

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 15:30:00

PostgreSQL compresses large values (TOAST) with pglz unless told otherwise; for a 100 KiB
message, whose text is stored as its text, its new text and its event's payload, that cost
the backend more than the rest of the delivery. lz4 (PostgreSQL 14 and later, when the server
is built with it, as Debian's and the official images are) compresses several times faster.
Only values written from now on use it; nothing is rewritten. SQLite and servers without lz4
are left as they are.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

COLUMNS = {
    "messages": ("text", "html", "extracted_text", "headers"),
    "events": ("payload",),
}


def _lz4_available() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    found = bind.execute(
        sa.text(
            "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
            "AND 'lz4' = ANY(enumvals)"
        )
    ).first()
    return found is not None


def _set(method: str) -> None:
    if not _lz4_available():
        return
    for table, columns in COLUMNS.items():
        for column in columns:
            op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION {method}")


def upgrade() -> None:
    _set("lz4")


def downgrade() -> None:
    _set("pglz")
