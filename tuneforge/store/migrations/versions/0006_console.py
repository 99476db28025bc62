"""The web console's sessions, projects' own model prices, and an index for a model's logs in time order (the
console's log page filtered by model walks it newest first).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("project_id", sa.String(64), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("key_id", sa.String(64), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Integer, nullable=False),
    )
    op.create_index("ix_console_sessions_project_id", "console_sessions", ["project_id"])
    op.create_index("ix_console_sessions_key_id", "console_sessions", ["key_id"])
    op.create_table(
        "project_prices",
        sa.Column("project_id", sa.String(64), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("model", sa.String(300), nullable=False),
        sa.Column("input", sa.Float, nullable=False),
        sa.Column("output", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("project_id", "model"),
    )
    op.create_index("ix_request_logs_project_model_started", "request_logs", ["project_id", "model", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_request_logs_project_model_started", "request_logs")
    op.drop_table("project_prices")
    op.drop_index("ix_console_sessions_key_id", "console_sessions")
    op.drop_index("ix_console_sessions_project_id", "console_sessions")
    op.drop_table("console_sessions")
