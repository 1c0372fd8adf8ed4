"""uid_map keyed by (case, pseudonymized UID); how a case's priors were matched to the patient

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("uid_map") as batch:
        batch.drop_constraint("pk_uid_map", type_="primary")
        batch.create_primary_key("pk_uid_map", ["case_id", "pseudo_uid"])
    with op.batch_alter_table("case_studies") as batch:
        batch.add_column(sa.Column("matched_by", sa.String(length=32), nullable=True))
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("priors_unmatched", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("priors_unmatched")
    with op.batch_alter_table("case_studies") as batch:
        batch.drop_column("matched_by")
    with op.batch_alter_table("uid_map") as batch:
        batch.drop_constraint("pk_uid_map", type_="primary")
        batch.create_primary_key("pk_uid_map", ["pseudo_uid"])
