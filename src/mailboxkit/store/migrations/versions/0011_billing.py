"""billing: Stripe customers, subscriptions and the Stripe events applied

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _account_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["account_id"],
        ["accounts.id"],
        name=op.f(f"fk_{table}_account_id_accounts"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "billing_customers",
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _account_fk("billing_customers"),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_billing_customers")),
        sa.UniqueConstraint("customer_id", name=op.f("uq_billing_customers_customer_id")),
    )
    op.create_table(
        "billing_subscriptions",
        sa.Column("subscription_id", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("price_id", sa.String(length=255), nullable=True),
        sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("state_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _account_fk("billing_subscriptions"),
        sa.PrimaryKeyConstraint("subscription_id", name=op.f("pk_billing_subscriptions")),
    )
    op.create_index("ix_billing_subscriptions_account", "billing_subscriptions", ["account_id"])
    op.create_table(
        "billing_events",
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        _account_fk("billing_events"),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_billing_events")),
    )
    op.create_index("ix_billing_events_account", "billing_events", ["account_id"])
    op.create_index("ix_billing_events_received", "billing_events", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_billing_events_received", table_name="billing_events")
    op.drop_index("ix_billing_events_account", table_name="billing_events")
    op.drop_table("billing_events")
    op.drop_index("ix_billing_subscriptions_account", table_name="billing_subscriptions")
    op.drop_table("billing_subscriptions")
    op.drop_table("billing_customers")
