"""relays: a relay that refused our session, where every process sees it

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 05:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "relay_refusals",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("relay", sa.String(length=300), nullable=False),
        sa.Column("reply", sa.Text(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relay_refusals")),
        sa.UniqueConstraint("relay", name=op.f("uq_relay_refusals_relay")),
    )


def downgrade() -> None:
    op.drop_table("relay_refusals")
