"""Eval definitions (their runs are `eval` jobs).

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
    op.create_table(
        "evals",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("project_id", sa.String(64), sa.ForeignKey("projects.id"), nullable=False, index=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("data_source_config", sa.JSON, nullable=False),
        sa.Column("testing_criteria", sa.JSON, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=True),
        sa.Column("created_at", sa.Integer, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("evals")
