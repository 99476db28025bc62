"""Revocable and admin API keys; request log ids unique per project, not across the platform.

Log ids were the table's primary key, so a tenant could pre-claim another tenant's ids and have their logs
dropped as redeliveries. The key is now (project_id, id), and tags point at a log by both. Existing rows keep
their ids. Tags are set aside in a plain table while the logs' key changes (on SQLite the logs table is
rebuilt, and dropping it would cascade into tags that still pointed at it), then put back.

Revision ID: 0005
Revises: 0004
"""

import warnings

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()))
    op.add_column("api_keys", sa.Column("revoked_at", sa.Integer, nullable=True))
    _set_tags_aside("SELECT r.project_id AS project_id, t.log_id AS log_id, t.key AS key, t.value AS value "
                    "FROM log_tags t JOIN request_logs r ON r.id = t.log_id")
    _log_primary_key(["project_id", "id"])
    op.create_table(
        "log_tags",
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("log_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.String(500), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "log_id", "key"),
        sa.ForeignKeyConstraint(["project_id", "log_id"], ["request_logs.project_id", "request_logs.id"],
                                ondelete="CASCADE"),
    )
    op.create_index("ix_log_tags_key_value", "log_tags", ["key", "value"])
    op.execute("INSERT INTO log_tags (project_id, log_id, key, value) "
               "SELECT project_id, log_id, key, value FROM _log_tags_aside")
    op.drop_table("_log_tags_aside")


def downgrade() -> None:
    """Fails if two projects use the same log id (the old key cannot hold both)."""
    _set_tags_aside("SELECT project_id, log_id, key, value FROM log_tags")
    _log_primary_key(["id"])
    op.create_table(
        "log_tags",
        sa.Column("log_id", sa.String(64), sa.ForeignKey("request_logs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(500), nullable=False),
    )
    op.create_index("ix_log_tags_key_value", "log_tags", ["key", "value"])
    op.execute("INSERT INTO log_tags (log_id, key, value) SELECT log_id, key, value FROM _log_tags_aside")
    op.drop_table("_log_tags_aside")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("revoked_at")
        batch.drop_column("admin")


def _set_tags_aside(select: str) -> None:
    """Copy the tags (project_id, log_id, key, value) into a table without constraints; drop `log_tags`."""
    op.execute(f"CREATE TABLE _log_tags_aside AS {select}")
    op.drop_index("ix_log_tags_key_value", "log_tags")
    op.drop_table("log_tags")


def _log_primary_key(columns: list[str]) -> None:
    if op.get_bind().dialect.name == "sqlite":  # no ALTER for a primary key: the table is rebuilt
        with warnings.catch_warnings():  # SQLAlchemy notes that the rebuilt table's key differs: it is meant to
            warnings.filterwarnings("ignore", "Table '_alembic_tmp_request_logs' specifies columns")
            with op.batch_alter_table("request_logs", recreate="always") as batch:
                batch.create_primary_key("pk_request_logs", columns)
    else:
        op.drop_constraint("request_logs_pkey", "request_logs", type_="primary")
        op.create_primary_key("request_logs_pkey", "request_logs", columns)
