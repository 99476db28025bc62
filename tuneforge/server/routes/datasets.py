"""Datasets: create (from a log filter or an uploaded file), list, show, entries, export, relabel; preference
datasets from an eval run's verdicts or from self-play."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from tuneforge.errors import Conflict
from tuneforge.jobs import relabel as relabel_job
from tuneforge.jobs import self_play as self_play_job
from tuneforge.server.capture_protocol import (
    DatasetCreate,
    DatasetEntryList,
    DatasetEntryObject,
    DatasetJob,
    DatasetList,
    DatasetObject,
    FromEvalCreate,
    FromEvalDataset,
    RelabelCreate,
    SelfPlayCreate,
)
from tuneforge.server.deps import ProjectDep, StateDep
from tuneforge.store import datasets, from_eval, jobs, logs
from tuneforge.store.tables import Dataset, Job

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def to_api(s, ds: Dataset) -> DatasetObject:
    job = s.get(Job, ds.job_id) if ds.job_id else None
    counts = dict(ds.counts or {})
    if ds.status == "relabeling":
        counts["answered"] = datasets.entry_count(s, ds.id)
    return DatasetObject(
        id=ds.id, name=ds.name, kind=ds.kind or datasets.CHAT, created_at=ds.created_at, status=ds.status,
        source=ds.source, params=ds.params, pruning_rules=ds.pruning_rules or [], counts=counts, parent_id=ds.parent_id,
        job=DatasetJob(id=job.id, status=job.status, error=job.error) if job else None,
    )


@router.post("", response_model=DatasetObject)
def create(state: StateDep, project: ProjectDep, body: DatasetCreate):
    recipe = datasets.Recipe(
        sample=body.sample, dedupe=body.dedupe, near_threshold=body.near_threshold,
        test_fraction=body.test_fraction, label=body.label, seed=body.seed, pruning_rules=body.pruning_rules,
    )
    flt = logs.LogFilter(**body.logs.model_dump()) if body.logs is not None else None
    if flt is None and body.file_id is None:
        flt = logs.LogFilter()  # no source named: every successful call
    with state.db.session() as s:
        return to_api(s, datasets.create(s, project.id, name=body.name, recipe=recipe, log_filter=flt,
                                         file_id=body.file_id))


@router.get("", response_model=DatasetList)
def list_datasets(state: StateDep, project: ProjectDep):
    with state.db.session() as s:
        return DatasetList(data=[to_api(s, ds) for ds in datasets.list_(s, project.id)])


@router.get("/{dataset_id}", response_model=DatasetObject)
def get(state: StateDep, project: ProjectDep, dataset_id: str):
    with state.db.session() as s:
        return to_api(s, datasets.get(s, dataset_id, project.id))


@router.get("/{dataset_id}/entries", response_model=DatasetEntryList)
def entries(state: StateDep, project: ProjectDep, dataset_id: str, split: Literal["train", "test"] | None = None,
            offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100):
    with state.db.session() as s:
        datasets.get(s, dataset_id, project.id)
        rows = datasets.entries(s, dataset_id, split, offset=offset, limit=limit + 1)
        data = [DatasetEntryObject(id=e.id, position=e.position, split=e.split, messages=e.messages,
                                   rejected=e.rejected, tools=e.tools, label=e.label, lineage=e.lineage,
                                   answer_model=e.answer_model)
                for e in rows[:limit]]
    return DatasetEntryList(data=data, has_more=len(rows) > limit)


@router.get("/{dataset_id}/export", response_class=PlainTextResponse)
def export(state: StateDep, project: ProjectDep, dataset_id: str, split: Literal["train", "test"] | None = None):
    """OpenAI fine-tuning JSONL (preference JSONL for a preference dataset), with the dataset's pruning rules
    applied."""
    with state.db.session() as s:
        lines = datasets.export_lines(s, datasets.get(s, dataset_id, project.id), split)
    return PlainTextResponse("".join(line + "\n" for line in lines), media_type="application/jsonl")


@router.post("/{dataset_id}/cancel", response_model=DatasetObject)
def cancel(state: StateDep, project: ProjectDep, dataset_id: str):
    """Stop the job filling this dataset (relabel, self-play); what it made so far stays, the dataset is
    `cancelled`."""
    with state.db.session() as s:
        ds = datasets.get(s, dataset_id, project.id)
        if ds.status not in datasets.FILLING or ds.job_id is None:
            raise Conflict(f"dataset {dataset_id} is {ds.status}: only a dataset being relabeled can be cancelled, "
                           "or one a self-play job is filling", param="dataset_id", code="invalid_state")
        jobs.cancel(s, ds.job_id, project_id=project.id, kind=datasets.FILLING[ds.status])
        ds.status = "cancelled"
        return to_api(s, ds)


@router.post("/{dataset_id}/relabel", response_model=DatasetObject)
def relabel(state: StateDep, project: ProjectDep, dataset_id: str, body: RelabelCreate):
    """A new dataset with every answer re-written by a teacher model, filled by a relabel job."""
    with state.db.session() as s:
        job = relabel_job.KIND.accept(s, project, body, dataset_id=dataset_id)
        return to_api(s, datasets.get(s, relabel_job.KIND.spec(job).dataset, project.id))


@router.post("/from_eval", response_model=FromEvalDataset)
def create_from_eval(state: StateDep, project: ProjectDep, body: FromEvalCreate):
    """A preference dataset from an eval run: each row where the judge (or a grader) preferred one model's
    answer to another's is a pair. With a warning when the run's rows are held out."""
    with state.db.session() as s:
        ds, warnings = from_eval.from_eval(s, project.id, run_id=body.run_id, by=body.by, min_gap=body.min_gap,
                                           name=body.name)
        return FromEvalDataset(**to_api(s, ds).model_dump(), warnings=warnings)


@router.post("/self_play", response_model=DatasetObject)
def self_play(state: StateDep, project: ProjectDep, body: SelfPlayCreate):
    """A preference dataset from the model's own answers, sampled k times per prompt and graded; filled by a
    self-play job (`job` in the answer)."""
    with state.db.session() as s:
        job = self_play_job.KIND.accept(s, project, body)
        return to_api(s, datasets.get(s, self_play_job.KIND.spec(job).dataset, project.id))
