"""Uploaded files: bytes in the data dir (files/{id}.jsonl), a row per file; written once, never modified.

An upload streams into a private temp file beside them (`incoming`), which any failure removes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge import paths
from tuneforge.data.validate import Problem, validate_file
from tuneforge.errors import Conflict, NotFound, UserError
from tuneforge.store import quotas
from tuneforge.store.db import new_id, now
from tuneforge.store.tables import File, Job

ACTIVE = ("validating_files", "queued", "running")

PURPOSES = ("fine-tune", "batch", "evals", "user_data")
MAX_PROBLEMS_SHOWN = 20
INCOMING_PREFIX = "incoming-"
STALE_INCOMING_S = 24 * 3600  # an upload's temp file untouched this long was left by a process that died
_swept: set[Path] = set()  # data dirs whose stale temp files this process has removed


def files_dir() -> Path:
    path = paths.data_dir() / "files"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


class Incoming:
    """An upload on its way in: a private temp file in files/, hashed as it is written."""

    def __init__(self):
        fd, name = tempfile.mkstemp(dir=files_dir(), prefix=INCOMING_PREFIX, suffix=".tmp")  # 0600
        self.path = Path(name)
        self.size = 0
        self.kept = False  # stored, and its row committed: no longer ours to remove
        self._file = os.fdopen(fd, "wb")
        self._sha256 = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._sha256.update(data)
        self.size += len(data)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def close(self) -> None:
        self._file.close()


@contextmanager
def incoming() -> Iterator[Incoming]:
    """A temp file for an upload, removed (wherever it was moved) on any failure before its row is committed.

    Set `kept` once the row is committed. Temp files a killed process left behind are swept on the way in."""
    _sweep()
    part = Incoming()
    try:
        yield part
    except BaseException:
        part.close()
        if not part.kept:
            part.path.unlink(missing_ok=True)
        raise
    part.close()


def _sweep() -> None:
    folder = files_dir()
    if folder in _swept:
        return
    _swept.add(folder)
    stale = time.time() - STALE_INCOMING_S
    for path in folder.glob("*.tmp"):  # older versions named theirs file-….tmp
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < stale:
                path.unlink()


def create(s: Session, *, project_id: str, filename: str, purpose: str, content: bytes) -> File:
    """Store bytes as an upload (see `create_from`); the row is the caller's to commit."""
    with incoming() as part:
        part.write(content)
        row = create_from(s, part, project_id=project_id, filename=filename, purpose=purpose)
        part.kept = True
    return row


def create_from(s: Session, part: Incoming, *, project_id: str, filename: str, purpose: str) -> File:
    """Keep an upload under a new file id. A fine-tune file must pass the same checks as `tuneforge data validate`."""
    if purpose not in PURPOSES:
        raise UserError(f"purpose '{purpose}' is not supported: use one of {', '.join(PURPOSES)}", param="purpose")
    part.close()
    quotas.check_disk(s, project_id)  # the upload itself may be what takes the project over: it is on disk now
    if purpose == "fine-tune":
        _check_training_file(part.path, filename)
    file_id = new_id("file-")
    final = files_dir() / f"{file_id}.jsonl"
    os.replace(part.path, final)
    part.path = final
    row = File(
        id=file_id, project_id=project_id, filename=filename, purpose=purpose, bytes=part.size,
        sha256=part.sha256, path=str(final), created_at=now(), deleted=False,
    )
    s.add(row)
    return row


class InvalidTrainingFile(UserError):
    """A fine-tune upload with bad lines. The message lists them as `FILE:LINE: field: what is wrong`; `problems`
    keeps them as found (at most MAX_PROBLEMS_SHOWN) and `more` counts the rest, for a caller that shows each
    beside its form field (the web console)."""

    def __init__(self, message: str, problems: list[Problem], more: int):
        super().__init__(message, param="file", code="invalid_file_format")
        self.problems, self.more = problems, more


def _check_training_file(path: Path, filename: str) -> None:
    report = validate_file(path, keep_rows=False, max_problems=MAX_PROBLEMS_SHOWN,  # memory: not the file's size
                           preferences=True)  # chat rows or preference pairs: the job checks it has the right kind
    if report.ok:
        return
    lines = [p.format(filename) for p in report.problems]
    total = len(report.problems) + report.more_problems
    if report.more_problems:
        lines.append(f"... and {report.more_problems} more")
    raise InvalidTrainingFile(f"Invalid file format for fine-tuning: {total} bad lines.\n" + "\n".join(lines),
                              report.problems, report.more_problems)


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
    anchor = s.get(File, after) if after else None
    if anchor is not None and anchor.project_id == project_id:  # keyset: the page after `after`, by the same order
        at = anchor.created_at
        q = q.where(File.created_at <= at, (File.created_at < at) | (File.id < anchor.id)) if desc else \
            q.where(File.created_at >= at, (File.created_at > at) | (File.id > anchor.id))
    return list(s.scalars(q.limit(limit)))


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
