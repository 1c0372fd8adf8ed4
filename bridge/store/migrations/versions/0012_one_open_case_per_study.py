"""cases: at most one open case per study, enforced by a partial unique index

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# the open states of bridge.domain.states.OPEN_CASE_STATES, as they are on this revision
WHERE = "state IN ('retrieving', 'receiving', 'received', 'deidentified', 'forwarding')"


def upgrade() -> None:
    conn = op.get_bind()
    doubles = conn.execute(
        sa.text(
            f"SELECT original_study_uid FROM cases WHERE {WHERE} "  # noqa: S608 - constant
            "GROUP BY original_study_uid HAVING COUNT(*) > 1"
        )
    ).all()
    if doubles:
        ids = conn.execute(
            sa.text(
                f"SELECT id FROM cases WHERE {WHERE} AND original_study_uid IN "  # noqa: S608
                "(SELECT original_study_uid FROM cases "
                f"WHERE {WHERE} GROUP BY original_study_uid HAVING COUNT(*) > 1)"
            )
        ).scalars()
        raise RuntimeError(
            f"{len(doubles)} studies have more than one open case (cases "
            f"{', '.join(sorted(ids))}): let them be forwarded or discard the extra ones in the "
            "quarantine, then run `bridge migrate` again"
        )
    op.create_index(
        "uq_cases_open_study",
        "cases",
        ["original_study_uid"],
        unique=True,
        sqlite_where=sa.text(WHERE),
        postgresql_where=sa.text(WHERE),
    )


def downgrade() -> None:
    op.drop_index("uq_cases_open_study", table_name="cases")
