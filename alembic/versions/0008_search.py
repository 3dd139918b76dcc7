"""search: indexes for prefix searches of the address and the name (text_pattern_ops on PostgreSQL)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 21:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_subscribers_email_key_pattern",
            ["email_key"],
            unique=False,
            postgresql_ops={"email_key": "text_pattern_ops"},
        )
        batch_op.create_index(
            "ix_subscribers_name_pattern", ["name"], unique=False, postgresql_ops={"name": "text_pattern_ops"}
        )


def downgrade() -> None:
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.drop_index("ix_subscribers_name_pattern")
        batch_op.drop_index("ix_subscribers_email_key_pattern")
