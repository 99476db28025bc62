"""`tuneforge keys`: create, list and revoke API keys, straight on the store (no server needed)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich import box
from rich.table import Column, Table

from tuneforge.cli.app import DataDir, app, console, out, use
from tuneforge.cli.serve_cmd import DatabaseUrl, _database

keys_app = typer.Typer(help="API keys: each belongs to a project, and a project sees only its own things.")
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def create_key(
    project: Annotated[str, typer.Option(help="Project the key belongs to (created if new).")] = "default",
    admin: Annotated[bool, typer.Option("--admin", help="Also let the key list, create and revoke every "
                                        "project's keys over the API (/v1/admin/keys).")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key; it is printed once, as the last line, and stored only as a hash."""
    from tuneforge.store import projects

    use(data_dir)
    with _database(database_url).session() as s:
        key = projects.create_key(s, project=project, admin=admin)
    kind = "admin key" if admin else "key"
    console.print(f"new {kind} for project '{project}' (shown once; keep it secret):")
    print(key)


@keys_app.command("list")
def list_keys(
    project: Annotated[str | None, typer.Option(help="Only this project's keys.", show_default=False)] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Every key, revoked ones too (never the key itself: its first characters tell keys apart)."""
    from tuneforge.store import projects

    use(data_dir)
    with _database(database_url).session() as s:
        rows = projects.list_keys(s, project=project)
    # ids whole (they are copied); times as date over time, so that the table fits 80 columns
    table = Table(Column("id", no_wrap=True), Column("project", overflow="fold"), Column("prefix", no_wrap=True),
                  Column("admin", no_wrap=True), Column("created", width=10), Column("revoked", width=10),
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for row, name in rows:
        table.add_row(row.id, name, row.prefix, "yes" if row.admin else "", _when(row.created_at),
                      _when(row.revoked_at))
    out.print(table)


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key's id (`tuneforge keys list`), not the key itself.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Refuse a key from now on: its next request gets 401 (through the proxy: within a second)."""
    from tuneforge.store import projects

    use(data_dir)
    with _database(database_url).session() as s:
        row, name = projects.revoke_key(s, key_id)
    console.print(f"revoked {row.id} ({row.prefix}…, project '{name}') at {_when(row.revoked_at)}")


def _when(t: int | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")
