"""reports.source_uid: the reader's own SOP Instance UID of a returned object

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("source_uid", sa.String(64), nullable=True))
        batch.create_index("ix_reports_source_uid", ["source_uid"])


def downgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.drop_index("ix_reports_source_uid")
        batch.drop_column("source_uid")
