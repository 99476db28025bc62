"""A preference dataset from an eval run's verdicts: the run's report is read, its rows paired by the judge or by
a grader (`tuneforge.evals.pairs.pairs_from_report`), and the pairs stored at once (no job: nothing is generated).

An eval's rows are usually held out: pairs made from them and trained on make a later eval on the same rows no
longer a held-out one. The source is recorded, and `leak_warnings` says so unless the rows were a dataset's
train split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from tuneforge.errors import Conflict
from tuneforge.evals.pairs import pairs_from_report
from tuneforge.jobs import registry as kinds
from tuneforge.store import datasets, jobs
from tuneforge.store.tables import Dataset, Job


def eval_run(s: Session, project_id: str, run_id: str) -> Job:
    """A finished, undeleted eval run of the project, with its report on disk."""
    job = jobs.get(s, run_id, project_id=project_id, kind="eval")
    if (job.result or {}).get("deleted"):
        raise kinds.get("eval").not_found(run_id)
    if job.status != "succeeded" or not (Path(job.out_dir) / "report.json").exists():
        raise Conflict(f"eval run {run_id} is {job.status}: make pairs from it once it has completed",
                       param="run_id", code="report_not_ready")
    return job


def leak_warnings(spec: dict[str, Any]) -> list[str]:
    """Why training on these pairs may spoil later evals: the run's rows are (probably) a held-out split."""
    src = (spec.get("data_source") or {}).get("source") or {}
    if src.get("type") == "dataset" and src.get("split") == "train":
        return []
    rows = f"the test split of {src.get('id')}" if src.get("type") == "dataset" else f"'{spec.get('test_set')}'"
    return [f"these pairs come from the eval's rows ({rows}): an eval on the same rows after training on them is "
            "not held out; make pairs from a run over a dataset's train split (source type dataset, split train) "
            "and keep the test split for evals"]


def from_eval(s: Session, project_id: str, *, run_id: str, by: str = "judge", min_gap: float | None = None,
              name: str | None = None) -> tuple[Dataset, list[str]]:
    """A ready preference dataset of the run's pairs, each entry's lineage naming the run, its row and the two
    models; and the warnings to show with it."""
    job = eval_run(s, project_id, run_id)
    report = json.loads((Path(job.out_dir) / "report.json").read_text(encoding="utf-8"))
    found = pairs_from_report(report, by, min_gap=min_gap)
    if not found:
        raise Conflict(f"eval run {run_id} has no row where {by} prefers one usable answer to another (ties, "
                       "errors and identical answers make no pair)", param="by", code="no_pairs")
    spec = job.spec
    source = {"eval_run": run_id, "by": by, "eval": spec.get("eval_id"), "test_set": spec.get("test_set"),
              "data_source": (spec.get("data_source") or {}).get("source")}
    ds = datasets.create_preference(
        s, project_id, name=name or f"pairs from {run_id} by {by}", source=source,
        pairs=((p.row, {"eval_run": run_id, **p.lineage}) for p in found),
        params={"by": by, "min_gap": min_gap}, counts={"rows": len(report.get("rows") or []), "pairs": len(found)})
    return ds, leak_warnings(spec)
