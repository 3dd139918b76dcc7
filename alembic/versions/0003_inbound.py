"""inbound: unrecognized messages kept for the editor

Mail to the bounce or unsubscribe address that is no DSN, ARF report, auto-reply or unsubscribe
request is kept here (its head, cut at a fixed size) instead of being dropped.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 16:05:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unrecognized_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("sender", sa.Text(), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unrecognized_messages")),
        sa.UniqueConstraint("external_id", name=op.f("uq_unrecognized_messages_external_id")),
    )
    with op.batch_alter_table("unrecognized_messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_unrecognized_messages_received_at"), ["received_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("unrecognized_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_unrecognized_messages_received_at"))
    op.drop_table("unrecognized_messages")
