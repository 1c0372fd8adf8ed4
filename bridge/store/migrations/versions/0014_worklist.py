"""workitems: the reading worklist (UPS-RS), one Unified Procedure Step per forwarded case

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workitems",
        sa.Column("uid", sa.String(64), nullable=False),
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("transaction_hash", sa.String(64), nullable=True),
        sa.Column("performer", sa.String(64), nullable=True),
        sa.Column("claimed_at", sa.Float(), nullable=True),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column("cancel_requested_by", sa.String(64), nullable=True),
        sa.Column("cancel_requested_at", sa.Float(), nullable=True),
        sa.Column("cancel_request_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name="fk_workitems_case_id_cases"),
        sa.PrimaryKeyConstraint("uid", name="pk_workitems"),
        sa.UniqueConstraint("case_id", name="uq_workitems_case_id"),
    )
    op.create_index("ix_workitems_state", "workitems", ["state"])
    # Cases forwarded before the worklist existed get their workitem too.
    conn = op.get_bind()
    import time
    import uuid

    now = time.time()
    rows = conn.execute(sa.text("SELECT id FROM cases WHERE forwarded_at IS NOT NULL")).fetchall()
    for (case_id,) in rows:
        conn.execute(
            sa.text(
                "INSERT INTO workitems (uid, case_id, state, created_at, updated_at) "
                "VALUES (:uid, :case_id, :state, :now, :now)"
            ),
            {
                "uid": f"2.25.{uuid.uuid4().int}",
                "case_id": case_id,
                # A case whose report came back is done; the others wait for a reader.
                "state": "SCHEDULED",
                "now": now,
            },
        )
    conn.execute(
        sa.text(
            "UPDATE workitems SET state = 'COMPLETED', ended_at = :now WHERE case_id IN "
            "(SELECT case_id FROM reports)"
        ),
        {"now": now},
    )


def downgrade() -> None:
    op.drop_index("ix_workitems_state", "workitems")
    op.drop_table("workitems")
