"""The bake-off job: find the best base to fine-tune, as OpenPipe found its base for merging. Every base is
fine-tuned on every dataset with the same budget and settings; every dataset's test split is an eval of those
fine-tunes (graders, and the pairwise judge when given); the bases are ranked with Bradley-Terry over all
datasets; optionally the top two are SLERP-merged and the merge goes through the same fine-tune and eval.

The work is child jobs (`parent_id` = the bake-off), each visible through its own API, run by the worker that
runs the bake-off (or by another worker, then waited for). Their ids are recorded in the bake-off's result as
they are made, and a child made before with the same inputs (`metadata.bakeoff_key`) is reused: a requeued
bake-off (its worker died) carries on where it was, its fine-tunes resuming from their checkpoints.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.errors import NotFound, UserError
from tuneforge.evals.execute import SamplingSpec
from tuneforge.evals.models import Local, Models
from tuneforge.jobs.context import JobContext, JobStopped
from tuneforge.jobs.registry import JobKind
from tuneforge.merging import bakeoff as arithmetic
from tuneforge.store import datasets, evals, jobs, models
from tuneforge.store.tables import Job, Project

MAX_FINE_TUNES = 32  # bases x datasets (x2 with the merge)
AUTO_EPOCHS_WITH_BUDGET = 10  # with a token budget, epochs only cap it


class BakeoffSpec(BaseModel):
    bases: list[str] = Field(min_length=2, max_length=8, description="The bases to compare (any model of yours).")
    datasets: list[str] = Field(min_length=1, max_length=8, description="Dataset ids: train split fine-tunes, "
                                "test split evaluates.")
    judge: str | None = Field(None, description="A pairwise judge model; without one, the graders decide.")
    reference: str | None = Field(None, description="A model every eval also runs (e.g. the teacher), ranked too.")
    graders: list[dict[str, Any]] = Field(default_factory=lambda: [{"type": "exact", "name": "exact"}],
                                          max_length=8, description="Pointwise graders (testing criteria).")
    merge_top: int = Field(0, description="2: SLERP-merge the top two bases and put the merge through the same.")
    budget_tokens: int | None = Field(None, ge=1, description="Trained tokens per fine-tune (equal for all).")
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="The same for every fine-tune.")
    sampling: SamplingSpec = Field(default_factory=SamplingSpec, description="How the evals generate.")
    seed: int = 0


class BakeoffKind(JobKind):
    name = "bakeoff"
    noun = "bake-off"
    Spec = BakeoffSpec
    id_prefix = "bakeoff-"
    event_prefix = "bakeoffevent-"
    id_param = "bakeoff_id"
    created_message = "Bake-off created"
    queued_message = "Bases, datasets and graders checked, bake-off queued"

    def accept(self, s: Session, project: Project, request: Any, **where: str) -> Job:
        spec = BakeoffSpec.model_validate(request.model_dump() if hasattr(request, "model_dump") else request)
        if spec.merge_top not in (0, 2):
            raise UserError("merge_top is 0 (no merge) or 2 (merge the top two bases)", param="merge_top")
        if len(set(spec.bases)) != len(spec.bases) or len(set(spec.datasets)) != len(spec.datasets):
            raise UserError("a base or dataset is named twice", param="bases")
        if spec.reference in spec.bases:
            raise UserError(f"the reference {spec.reference} is also a base: it is compared through its fine-tunes "
                            "already; name another reference (the teacher, or `answers`)", param="reference")
        fine_tunes = len(spec.bases) * len(spec.datasets) + (len(spec.datasets) if spec.merge_top else 0)
        if fine_tunes > MAX_FINE_TUNES:
            raise UserError(f"this bake-off needs {fine_tunes} fine-tunes; one may run at most {MAX_FINE_TUNES}",
                            param="bases")
        for base in spec.bases:
            if models.find(s, base, project.id) is None:
                raise models.model_not_found(base)
        for ds_id in spec.datasets:
            ds = datasets.get(s, ds_id, project.id)
            if not (ds.counts or {}).get("train") or not (ds.counts or {}).get("test"):
                raise UserError(f"dataset {ds_id} needs train and test entries (it has {ds.counts}): make it with a "
                                "test fraction above 0", param="datasets")
        criteria = self.criteria(spec)
        from tuneforge.evals import criteria as checks

        checks.check(criteria)
        checker = Models(locate=lambda name: Local(name) if models.find(s, name, project.id) else None,
                         hosted=models.is_hosted)
        checker.check([spec.reference] if spec.reference else [])
        checker.check_judges([spec.judge] if spec.judge else [])
        _check_hyperparameters(self.hyperparameters(spec), spec.seed)
        return jobs.submit(s, project_id=project.id, kind=self.name, spec=spec.model_dump(mode="json"))

    def criteria(self, spec: BakeoffSpec) -> list[dict]:
        judge = [{"type": "judge", "name": "judge", "model": spec.judge}] if spec.judge else []
        return [*spec.graders, *judge]

    def hyperparameters(self, spec: BakeoffSpec) -> dict:
        hyper = dict(spec.hyperparameters)
        if spec.budget_tokens:
            hyper["token_budget"] = spec.budget_tokens
            hyper.setdefault("n_epochs", AUTO_EPOCHS_WITH_BUDGET)
        return hyper

    def run(self, ctx: JobContext) -> dict:
        return _Run(ctx, self.spec(ctx.job)).run()


KIND = BakeoffKind()


class _Run:
    """One attempt at a bake-off: each step finds or makes its child job, then runs or waits for it."""

    def __init__(self, ctx: JobContext, spec: BakeoffSpec):
        self.ctx, self.spec, self.job = ctx, spec, ctx.job
        self.state: dict = dict(ctx.job.result or {})

    def run(self) -> dict:
        spec = self.spec
        tuned = {base: {ds: self.fine_tune(base, ds) for ds in spec.datasets} for base in spec.bases}
        first = self.compare(tuned, phase="bases")
        ranking = arithmetic.rank(first["games"], first["names"], seed=spec.seed)
        report = {"id": self.job.id, "bases": spec.bases, "judge": spec.judge, "reference": spec.reference,
                  "budget_tokens": spec.budget_tokens, "hyperparameters": KIND.hyperparameters(spec),
                  "ranking": ranking, "tasks": first["tasks"], "merge": None}
        self.ctx.event("Bases ranked: " + ", ".join(f"{r['name']} {r['rating']:.0f}" for r in ranking),
                       data={"ranking": ranking})
        if spec.merge_top:
            report["merge"] = self.merge_top(tuned, [r["name"] for r in ranking if r["name"] in spec.bases][:2])
        report["children"] = self.state
        folder = Path(self.job.out_dir)
        arithmetic.write(report, folder)
        self.ctx.event("Report written", data={"report": str(folder / "report.json")})
        return {**self.state, "ranking": ranking, "merge": {k: v for k, v in (report["merge"] or {}).items()
                                                            if k in ("model", "place", "skipped")}}

    # --- steps
    def fine_tune(self, base: str, ds: str) -> str:
        """The fine-tuned model of `base` on the dataset's train split."""
        key = _key("fine_tune", base, ds, KIND.hyperparameters(self.spec), self.spec.seed)

        def make(s: Session, project: Project) -> Job:
            from tuneforge.jobs.fine_tune import KIND as FINE_TUNE
            from tuneforge.server.protocol import FineTuningJobCreate

            request = FineTuningJobCreate(model=base, training_file=ds, suffix="bakeoff", seed=self.spec.seed,
                                          hyperparameters=KIND.hyperparameters(self.spec),
                                          metadata={"bakeoff": self.job.id, "bakeoff_key": key})
            return FINE_TUNE.accept(s, project, request)

        done = self.child(f"fine_tune {base} {ds}", "fine_tune", key, make)
        return done.result["fine_tuned_model"]

    def compare(self, tuned: dict[str, dict[str, str]], phase: str) -> dict:
        """One eval per dataset over the fine-tunes (and the reference); the games between entrants."""
        all_games, tasks = [], []
        for ds in self.spec.datasets:
            entrants = {tuned[name][ds]: name for name in tuned}
            if self.spec.reference:
                entrants[self.spec.reference] = self.spec.reference
            run = self.eval(ds, list(entrants), phase)
            report = json.loads((Path(run.out_dir) / "report.json").read_text())
            section = {**arithmetic.task_section(report, entrants, ds, run.id), "name": self.dataset_name(ds)}
            all_games += arithmetic.games(report, entrants, ds)
            tasks.append(section)
        names = [*tuned, *([self.spec.reference] if self.spec.reference else [])]
        return {"games": all_games, "names": names, "tasks": tasks}

    def dataset_name(self, ds: str) -> str:
        with self.ctx.db.session() as s:
            return datasets.get(s, ds, self.job.project_id).name

    def eval(self, ds: str, names: list[str], phase: str) -> Job:
        key = _key("eval", ds, names, KIND.criteria(self.spec), self.spec.sampling.model_dump())

        def make(s: Session, project: Project) -> Job:
            from tuneforge.jobs.eval import KIND as EVAL
            from tuneforge.server.evals_protocol import RunCreate

            ev = evals.get(s, self.eval_id(s), project.id)
            request = RunCreate(name=f"bake-off {self.job.id}: {phase} on {ds}", metadata={"bakeoff_key": key},
                                data_source={"type": "tuneforge", "models": names, "sampling_params":
                                             self.spec.sampling.model_dump(), "source": {"type": "dataset", "id": ds}})
            return EVAL.accept(s, project, request, eval=ev)

        return self.child(f"eval {phase} {ds}", "eval", key, make)

    def eval_id(self, s: Session) -> str:
        if "eval_id" not in self.state:
            ev = evals.create(s, self.job.project_id, name=f"bake-off {self.job.id}", data_source_config={
                "type": "custom", "item_schema": {"type": "object"}}, testing_criteria=KIND.criteria(self.spec),
                metadata={"bakeoff": self.job.id})
            self.remember(s, "eval_id", ev.id)
        return self.state["eval_id"]

    def merge_top(self, tuned: dict[str, dict[str, str]], top: list[str]) -> dict:
        why = _unmergeable(top, [models.resolve(self.ctx.db, n, self.job.project_id).base for n in top])
        if why:
            self.ctx.event(f"Not merging {' and '.join(top)}: {why}", level="warn")
            return {"of": top, "skipped": f"Not merged: {why}"}
        name = f"merge:{self.job.id.removeprefix(KIND.id_prefix)[:12]}-top2"
        merged = self.merge(name, top)
        tuned = {**tuned, name: {ds: self.fine_tune(merged, ds) for ds in self.spec.datasets}}
        final = self.compare(tuned, phase="merge")
        ranking = arithmetic.rank(final["games"], final["names"], seed=self.spec.seed)
        place = [r["name"] for r in ranking].index(name) + 1
        self.ctx.event(f"The merge of {' and '.join(top)} places {place} of {len(ranking)}",
                       data={"ranking": ranking})
        return {"model": merged, "of": top, "ranking": ranking, "tasks": final["tasks"], "place": place}

    def merge(self, name: str, top: list[str]) -> str:
        layers = _layers(models.resolve(self.ctx.db, top[0], self.job.project_id).base)
        config = {"merge_method": "slerp", "base_model": top[0], "parameters": {"t": 0.5}, "dtype": "float32",
                  "slices": [{"sources": [{"model": m, "layer_range": [0, layers]} for m in top]}]}
        key = _key("merge", config, self.spec.seed)

        def make(s: Session, project: Project) -> Job:
            from tuneforge.jobs.merge import KIND as MERGE
            from tuneforge.server.merges_protocol import MergeCreate

            return MERGE.accept(s, project, MergeCreate(name=name.removeprefix(models.MERGE_PREFIX), config=config,
                                                        metadata={"bakeoff_key": key}))

        return self.child(f"merge {' + '.join(top)}", "merge", key, make).result["model"]

    # --- children
    def child(self, what: str, kind: str, key: str, make, *, fresh: bool = False) -> Job:
        """Find (this bake-off's record, or an earlier job with the same key) or make the child, then run it
        here or wait for it; its row once it has succeeded. A reused child of another job that did not succeed
        is made again, once."""
        with self.ctx.db.session() as s:
            me = s.get(Job, self.job.id)
            if me.status != "running" or me.worker_id != self.ctx.worker_id:
                raise JobStopped()  # cancelled (or taken over) since: make no more children
            job_id = None if fresh else (self.state.get("children", {}).get(key)
                                         or _reusable(s, self.job.project_id, kind, key))
            verb = "Using"
            if job_id is None:
                made = make(s, s.get(Project, self.job.project_id))
                made.parent_id, job_id, verb = self.job.id, made.id, "Started"
            self.remember(s, "children", {**self.state.get("children", {}), key: job_id})
        self.ctx.event(f"{verb} {what}: {job_id}", data={"child": job_id})
        self.ctx.check()
        done = self.ctx.wait_for(job_id)
        if done.status != "succeeded":
            if done.parent_id != self.job.id and not fresh:
                return self.child(what, kind, key, make, fresh=True)
            message = (done.error or {}).get("message", "")
            raise UserError(f"the bake-off's {what} ({job_id}) {done.status}{': ' + message if message else ''}")
        with self.ctx.db.session() as s:
            jobs.made_progress(s, self.job.id, self.ctx.worker_id)
        return done

    def remember(self, s: Session, field: str, value: Any) -> None:
        self.state[field] = value
        jobs.set_result(s, self.job.id, self.ctx.worker_id, **{field: value})


def _check_hyperparameters(hyper: dict, seed: int) -> None:
    """As a fine-tuning job would check them (its request's bounds, then TrainConfig's): now, not in a child."""
    from pydantic import ValidationError

    from tuneforge.jobs.fine_tune import train_config
    from tuneforge.server.protocol import Hyperparameters

    try:
        Hyperparameters.model_validate(hyper)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise UserError(f"Invalid hyperparameter '{field}': {err['msg']}", param=f"hyperparameters.{field}") from None
    train_config(hyper, seed)


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _reusable(s: Session, project_id: str, kind: str, key: str) -> str | None:
    """An earlier child with the same inputs that has not failed, nor had its model deleted since."""
    rows = s.scalars(select(Job).where(Job.project_id == project_id, Job.kind == kind,
                                       Job.status.not_in(("failed", "cancelled"))).order_by(Job.created_at.desc()))
    for job in rows:
        if (job.spec.get("metadata") or {}).get("bakeoff_key") != key:
            continue
        made = (job.result or {}).get("fine_tuned_model") or (job.result or {}).get("model")
        if job.status != "succeeded" or made is None or models.find(s, made, project_id) is not None:
            return job.id
    return None


def _layers(folder: str) -> int:
    cfg = json.loads((Path(folder) / "config.json").read_text())
    return int(cfg.get("num_hidden_layers") or cfg.get("text_config", {}).get("num_hidden_layers"))


SHAPE_KEYS = ("architectures", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "vocab_size")


def _unmergeable(names: list[str], folders: list[str]) -> str | None:
    """Why two bases cannot be SLERP-merged tensor by tensor (another architecture or shape), or None."""
    try:
        shapes = [{k: json.loads((Path(f) / "config.json").read_text()).get(k) for k in SHAPE_KEYS} for f in folders]
    except (OSError, ValueError) as exc:
        raise NotFound(f"cannot read a base's config.json: {exc}") from None
    if shapes[0] != shapes[1]:
        diff = [k for k in SHAPE_KEYS if shapes[0][k] != shapes[1][k]]
        return f"{names[0]} and {names[1]} differ in {', '.join(diff)} (a merge needs one architecture and shape)"
    return None
