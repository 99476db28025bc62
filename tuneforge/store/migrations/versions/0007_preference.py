"""Preference datasets, for DPO: a dataset's kind ("chat", the default every existing dataset keeps, or
"preference") and a preference entry's non-preferred answer (`messages` ends in the preferred one, so whatever
shows or exports a chat entry still reads a pair's input and its better answer).

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
    op.add_column("datasets", sa.Column("kind", sa.String(16), nullable=False, server_default="chat"))
    op.add_column("dataset_entries", sa.Column("rejected", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dataset_entries") as batch:
        batch.drop_column("rejected")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("kind")
