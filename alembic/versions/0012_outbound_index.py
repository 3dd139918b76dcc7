"""outbound index: one-off messages by status and age (unsent at start-up, failed or waiting on the desk)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 02:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_outbound_messages_status_created_at", "outbound_messages", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_outbound_messages_status_created_at", table_name="outbound_messages")
