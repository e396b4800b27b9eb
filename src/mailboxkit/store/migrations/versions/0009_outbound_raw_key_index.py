"""outbound_messages.raw_key index: the store sweep asks whether a queued message names a blob

Revision ID: 0009
Revises: 0005
Create Date: 2026-12-01 09:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_outbound_messages_raw_key", "outbound_messages", ["raw_key"])


def downgrade() -> None:
    op.drop_index("ix_outbound_messages_raw_key", table_name="outbound_messages")
