"""reasons: why a delivery failed on each event, the report's own date, unverified reports kept apart

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 21:05:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reason_name", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("unrecognized_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="unrecognized"))
        batch_op.add_column(sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_unrecognized_messages_kind"), ["kind"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("unrecognized_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_unrecognized_messages_kind"))
        batch_op.drop_column("applied_at")
        batch_op.drop_column("kind")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("reported_at")
        batch_op.drop_column("reason_name")
