"""cases: who reviewed the free text (question, original report) before it left, and when

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("text_reviewed_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("text_reviewed_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("text_reviewed_at")
        batch.drop_column("text_reviewed_by")
