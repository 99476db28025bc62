"""A project's quotas on the job queue and the disk (`tuneforge.limits`), checked where jobs are submitted and run.

One project must not fill the queue, or the disk that every project writes to: a job is refused at submission
when its project already has `project_queued_jobs` waiting or has used `project_disk_gb`, and a running job
fails when its checkpoints take its project over the disk quota (the worker checks before each one). The limit
on running jobs is in the queue's claim (`store.jobs.claim`), where a worker picks its next job.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuneforge import limits
from tuneforge.errors import RateLimited
from tuneforge.store.tables import File, Job

GB = 1 << 30


def check_queued(s: Session, project_id: str) -> None:
    """RateLimited when the project has as many top-level jobs waiting as it may (a job's children, which run
    inside it, do not count)."""
    cap = limits.current().project_queued_jobs
    waiting = s.scalar(select(func.count()).select_from(Job).where(
        Job.project_id == project_id, Job.status.in_(("validating_files", "queued")), Job.parent_id.is_(None)))
    if waiting >= cap:
        raise RateLimited(f"This project already has {waiting} jobs waiting to run (its limit is {cap}): wait for "
                          "some to start, or cancel some, then retry.", retry_after=limits.current().retry_after_s,
                          code="too_many_queued_jobs")


def check_disk(s: Session, project_id: str) -> None:
    """RateLimited when the project's files and job folders (checkpoints, fine-tuned and merged models) take
    its disk quota or more."""
    cap_gb = limits.current().project_disk_gb
    used = disk_used(s, project_id)
    if used >= cap_gb * GB:
        raise RateLimited(f"This project uses {used / GB:.2f} GB of disk, over its quota of {cap_gb:g} GB: delete "
                          "files it no longer needs, or ask the operator to raise TUNEFORGE_PROJECT_DISK_GB.",
                          retry_after=limits.current().retry_after_s, code="disk_quota_exceeded")


def disk_used(s: Session, project_id: str) -> int:
    """Bytes on disk of the project's uploaded files and its jobs' folders (where its models are)."""
    files = s.scalar(select(func.coalesce(func.sum(File.bytes), 0))
                     .where(File.project_id == project_id, File.deleted.is_(False)))
    folders = s.scalars(select(Job.out_dir).where(Job.project_id == project_id))
    return int(files) + sum(_tree_bytes(Path(folder)) for folder in folders)


def _tree_bytes(root: Path) -> int:
    total = 0
    for folder, _dirs, names in os.walk(root):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:  # removed while we looked (a pruned checkpoint)
                pass
    return total
