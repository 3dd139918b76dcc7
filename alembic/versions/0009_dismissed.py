"""dismissed: a kept message the editor dismissed stays marked, so the same mail read again is not kept again

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 05:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("unrecognized_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dismissed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Before this revision a dismissed message was deleted: do that to the ones marked, then drop the mark.
    op.execute("DELETE FROM unrecognized_messages WHERE dismissed_at IS NOT NULL")
    with op.batch_alter_table("unrecognized_messages", schema=None) as batch_op:
        batch_op.drop_column("dismissed_at")
