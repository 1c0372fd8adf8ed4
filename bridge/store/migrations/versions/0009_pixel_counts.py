"""instances: what the burned-in text scan did (frames scanned, frames with text, regions masked)

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("px_scanned", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("px_text", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("px_regions", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("px_regions")
        batch.drop_column("px_text")
        batch.drop_column("px_scanned")
