"""reports returned to the PACS; longer case states

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.alter_column(
            "state", existing_type=sa.String(16), type_=sa.String(24), existing_nullable=False
        )
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("series_instance_uid", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("file_name", sa.String(80), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("returned_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name="fk_reports_case_id_cases"),
        sa.PrimaryKeyConstraint("id", name="pk_reports"),
        sa.UniqueConstraint("sop_instance_uid", name="uq_reports_sop_instance_uid"),
    )
    op.create_index("ix_reports_case_id", "reports", ["case_id"])
    op.create_index("ix_reports_state", "reports", ["state"])


def downgrade() -> None:
    op.drop_index("ix_reports_state", table_name="reports")
    op.drop_index("ix_reports_case_id", table_name="reports")
    op.drop_table("reports")
    with op.batch_alter_table("cases") as batch:
        batch.alter_column(
            "state", existing_type=sa.String(24), type_=sa.String(16), existing_nullable=False
        )
