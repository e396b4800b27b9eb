"""quotas: per-account limits, the stored-bytes counter and the daily send count

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 17:30:00

``accounts.storage_used`` is backfilled with the sum of ``messages.size`` over each account's
entries (a message in two folders counts twice; one in no folder counts nothing), as
``store/quota.py`` keeps it from now on. Existing accounts get no limits.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BACKFILL = """
UPDATE accounts SET storage_used = COALESCE((
    SELECT SUM(messages.size)
    FROM entries
    JOIN messages ON messages.id = entries.message_id
    JOIN folders ON folders.id = entries.folder_id
    JOIN inboxes ON inboxes.id = folders.inbox_id
    WHERE inboxes.account_id = accounts.id
), 0)
"""


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(
            sa.Column("storage_used", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch.add_column(sa.Column("storage_limit", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("inbox_limit", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("daily_send_limit", sa.Integer(), nullable=True))
    with op.batch_alter_table("usage_counters") as batch:
        batch.add_column(sa.Column("sends", sa.BigInteger(), server_default="0", nullable=False))
    op.execute(BACKFILL)


def downgrade() -> None:
    with op.batch_alter_table("usage_counters") as batch:
        batch.drop_column("sends")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("daily_send_limit")
        batch.drop_column("inbox_limit")
        batch.drop_column("storage_limit")
        batch.drop_column("storage_used")
