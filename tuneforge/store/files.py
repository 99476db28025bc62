"""Uploaded files: bytes in the data dir (files/{id}.jsonl), a row per file; written once, never modified."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge import paths
from tuneforge.data.validate import validate_file
from tuneforge.errors import Conflict, NotFound, UserError
from tuneforge.store.db import new_id, now
from tuneforge.store.tables import File, Job

ACTIVE = ("validating_files", "queued", "running")

PURPOSES = ("fine-tune", "batch", "evals", "user_data")
MAX_PROBLEMS_SHOWN = 20


def files_dir() -> Path:
    return paths.data_dir() / "files"


def create(s: Session, *, project_id: str, filename: str, purpose: str, content: bytes) -> File:
    """Store an upload. A fine-tune file must pass the same checks as `tuneforge data validate`."""
    if purpose not in PURPOSES:
        raise UserError(f"purpose '{purpose}' is not supported: use one of {', '.join(PURPOSES)}", param="purpose")
    file_id = new_id("file-")
    files_dir().mkdir(parents=True, exist_ok=True)
    final = files_dir() / f"{file_id}.jsonl"
    tmp = final.with_suffix(".tmp")
    tmp.write_bytes(content)
    if purpose == "fine-tune":
        _check_training_file(tmp, filename)
    os.replace(tmp, final)
    row = File(
        id=file_id, project_id=project_id, filename=filename, purpose=purpose, bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(), path=str(final), created_at=now(), deleted=False,
    )
    s.add(row)
    return row


def _check_training_file(path: Path, filename: str) -> None:
    try:
        report = validate_file(path)
    except UserError:
        path.unlink(missing_ok=True)
        raise
    if report.ok:
        return
    path.unlink(missing_ok=True)
    lines = [p.format(filename) for p in report.problems[:MAX_PROBLEMS_SHOWN]]
    more = len(report.problems) - MAX_PROBLEMS_SHOWN
    if more > 0:
        lines.append(f"... and {more} more")
    raise UserError(
        f"Invalid file format for fine-tuning: {len(report.problems)} bad lines.\n" + "\n".join(lines),
        param="file", code="invalid_file_format",
    )


def get(s: Session, file_id: str, *, project_id: str) -> File:
    row = s.get(File, file_id)
    if row is None or row.deleted or row.project_id != project_id:
        raise NotFound(f"No such File object: {file_id}", param="file_id", code="file_not_found")
    return row


def list_(s: Session, *, project_id: str, purpose: str | None = None, after: str | None = None,
          limit: int = 10000, order: str = "desc") -> list[File]:
    q = select(File).where(File.project_id == project_id, File.deleted.is_(False))
    if purpose:
        q = q.where(File.purpose == purpose)
    desc = order != "asc"
    q = q.order_by(File.created_at.desc() if desc else File.created_at, File.id.desc() if desc else File.id)
    rows = list(s.scalars(q))
    if after:
        ids = [r.id for r in rows]
        rows = rows[ids.index(after) + 1:] if after in ids else rows
    return rows[:limit]


def delete(s: Session, file_id: str, *, project_id: str) -> File:
    """Mark deleted and remove the bytes; jobs that already read the file keep their own copy of its result."""
    row = get(s, file_id, project_id=project_id)
    active = s.scalars(select(Job).where(Job.project_id == project_id, Job.status.in_(ACTIVE)))
    users = [j.id for j in active if file_id in (j.spec.get("training_file"), j.spec.get("validation_file"))]
    if users:
        raise Conflict(f"File {file_id} is in use by {', '.join(users)}: delete it after the job finishes "
                       "or cancel the job first", param="file_id", code="file_in_use")
    row.deleted = True
    Path(row.path).unlink(missing_ok=True)
    return row
