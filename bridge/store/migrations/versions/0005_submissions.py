"""cases submitted from the bridge (pulled from the PACS or imported): expected instance count,
the scrubbed original report, who submitted

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("expected_instances", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("original_report", sa.Text(), nullable=True))
        batch.add_column(sa.Column("submitted_by", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("submitted_by")
        batch.drop_column("original_report")
        batch.drop_column("expected_instances")
