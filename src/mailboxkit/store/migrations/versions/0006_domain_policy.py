"""domain policy: catch-all inbox, DNS re-check state, sender allow and block lists

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("domains", schema=None) as batch_op:
        batch_op.add_column(sa.Column("catch_all_inbox_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("dns_checked_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("dns_failing_since", sa.DateTime(timezone=True), nullable=True)
        )
    op.create_table(
        "sender_rules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("inbox_id", sa.String(length=36), nullable=True),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_sender_rules_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["inboxes.id"],
            name=op.f("fk_sender_rules_inbox_id_inboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sender_rules")),
    )
    op.create_index("ix_sender_rules_account", "sender_rules", ["account_id", "sender"])


def downgrade() -> None:
    op.drop_index("ix_sender_rules_account", table_name="sender_rules")
    op.drop_table("sender_rules")
    with op.batch_alter_table("domains", schema=None) as batch_op:
        batch_op.drop_column("dns_failing_since")
        batch_op.drop_column("dns_checked_at")
        batch_op.drop_column("catch_all_inbox_id")
