"""ses feedback: provider message ids on deliveries, per-account suppressions, content retention

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbound_recipients") as batch:
        batch.add_column(sa.Column("provider_message_id", sa.String(length=255), nullable=True))
        batch.create_index("ix_outbound_recipients_provider", ["provider_message_id"])
    with op.batch_alter_table("outbound_messages") as batch:
        batch.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_outbound_messages_purge", ["purged_at", "created_at"])
        batch.create_index("ix_outbound_messages_raw_key", ["raw_key"])
    op.create_table(
        "suppressions",
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_suppressions_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "address", name=op.f("pk_suppressions")),
    )
    op.create_index(
        "ix_suppressions_account_created", "suppressions", ["account_id", "created_at", "address"]
    )


def downgrade() -> None:
    op.drop_index("ix_suppressions_account_created", table_name="suppressions")
    op.drop_table("suppressions")
    with op.batch_alter_table("outbound_messages") as batch:
        batch.drop_index("ix_outbound_messages_raw_key")
        batch.drop_index("ix_outbound_messages_purge")
        batch.drop_column("purged_at")
    with op.batch_alter_table("outbound_recipients") as batch:
        batch.drop_index("ix_outbound_recipients_provider")
        batch.drop_column("provider_message_id")
