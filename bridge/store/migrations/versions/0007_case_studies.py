"""case_studies: the studies of a case (its own and the priors sent with it); instances.study_uid

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "case_studies",
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("pseudo_study_uid", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name="fk_case_studies_case_id_cases"),
        sa.PrimaryKeyConstraint("case_id", "study_uid", name="pk_case_studies"),
    )
    op.create_index("ix_case_studies_study_uid", "case_studies", ["study_uid"])
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("study_uid", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("study_uid")
    op.drop_index("ix_case_studies_study_uid", table_name="case_studies")
    op.drop_table("case_studies")
