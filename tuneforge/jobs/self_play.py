"""The self-play job: preference pairs from a model's own answers, graded, into a new preference dataset.

Accepted from `POST /v1/datasets/self_play`: the prompts (an uploaded fine-tune file, or a dataset's split) are
copied into the job's folder and the new dataset (kind `preference`, status `generating`) is made with the job.
The worker samples k answers per prompt at a temperature from the model (a bundled base or the project's
`ft:` model, loaded as evals load it), grades them against the row's reference (`exact`, `json`), and pairs a
passing answer with a failing one (`tuneforge.evals.pairs`). Pairs are stored chunk by chunk with the count of
prompts done, so a requeued job (its worker died) or a rerun starts after the last stored chunk; answers are
seeded per prompt, so the redone prompts get the same answers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from tuneforge.data.prune import prune
from tuneforge.errors import UserError
from tuneforge.evals import graders, pairs
from tuneforge.evals.outputs import prompt_of, reference_of
from tuneforge.jobs.context import JobContext, load_rows, save_rows
from tuneforge.jobs.registry import JobKind
from tuneforge.store import datasets, jobs, models
from tuneforge.store.tables import Job, Project

MAX_PROMPTS = 2000
MAX_GENERATIONS = 20_000  # prompts x k
MAX_TOKENS = 2048  # one answer
CHUNK = 32  # prompts sampled (x k) between two stores of pairs


class SelfPlaySpec(BaseModel):
    """A self-play job as accepted."""

    dataset: str = Field(description="The preference dataset the job fills.")
    model: str = Field(description="The model that answers: a bundled base or the project's ft: model.")
    grader: Literal["exact", "json"] = Field(description="Grades each answer against the row's reference.")
    k: int = Field(description="Answers sampled per prompt.")
    temperature: float = Field(description="Sampling temperature.")
    max_tokens: int | None = Field(description="Tokens per answer (None: a margin over the longest reference).")
    seed: int = Field(description="Answer j of every prompt is sampled with seed + j.")
    use_reference: bool = Field(description="When no answer passes, prefer the row's reference to the worst one.")
    prompts: int = Field(description="Prompts in the job's rows.jsonl.")


class SelfPlay(JobKind):
    name = "self_play"
    noun = "self-play job"
    Spec = SelfPlaySpec
    id_prefix = "selfplayjob-"

    def accept(self, s: Session, project: Project, request: Any, **where: str) -> Job:
        """Start self-play from a SelfPlayCreate request: the model, the prompts and the work are checked here."""
        found = models.find(s, request.model, project.id, checkpoints=True)
        if found is None:
            raise models.model_not_found(request.model)
        rows, rules = datasets.prompt_rows(s, project.id, file_id=request.training_file, dataset_id=request.dataset,
                                           split_=request.split)
        rows = rows[: request.limit] if request.limit else rows
        _check_work(rows, request.k)
        source = {"self_play": {"model": request.model, "grader": request.grader, "k": request.k,
                                "temperature": request.temperature}}
        source.update({"file": request.training_file} if request.training_file else
                      {"dataset": request.dataset, "split": request.split})
        params = {"k": request.k, "temperature": request.temperature, "grader": request.grader,
                  "max_tokens": request.max_tokens, "seed": request.seed, "limit": request.limit,
                  "use_reference": request.use_reference}
        name = request.name or f"self-play of {request.model} ({request.grader}, k={request.k})"
        ds = datasets.start_preference(s, project.id, name=name, source=source, params=params,
                                       pruning_rules=_union(rules, found.pruning_rules), prompts=len(rows))
        spec = SelfPlaySpec(dataset=ds.id, model=request.model, grader=request.grader, k=request.k,
                            temperature=request.temperature, max_tokens=request.max_tokens, seed=request.seed,
                            use_reference=request.use_reference, prompts=len(rows))
        job = jobs.submit(s, project_id=project.id, kind=self.name, spec=spec.model_dump())
        ds.job_id = job.id
        save_rows(job, rows)
        return job

    def run(self, ctx: JobContext) -> dict:
        spec: SelfPlaySpec = self.spec(ctx.job)
        rows = load_rows(ctx.job)
        with ctx.db.session() as s:
            ds = datasets.get(s, spec.dataset, ctx.job.project_id)
            done, made, rules = ds.counts.get("sampled", 0), ds.counts.get("pairs", 0), list(ds.pruning_rules or [])
        ctx.event(f"Self-play: {spec.k} answers from {spec.model} to each of {len(rows) - done} prompts "
                  f"(of {len(rows)}), graded by {spec.grader}", data={"total": len(rows), "todo": len(rows) - done})
        if done < len(rows):
            made = _play(ctx, spec, rows, done, made, rules)
        return {"dataset": spec.dataset, "prompts": len(rows), "pairs": made}

    def on_success(self, s: Session, job: Job, result: dict) -> None:
        datasets.finish_filling(s, self.spec(job).dataset, "ready")

    def on_failure(self, s: Session, job: Job, error: dict) -> None:
        datasets.finish_filling(s, self.spec(job).dataset, "failed")


KIND = SelfPlay()


def _check_work(rows: list[dict], k: int) -> None:
    if not rows:
        raise UserError("no prompts: the training file or dataset split is empty", param="training_file")
    if len(rows) > MAX_PROMPTS or len(rows) * k > MAX_GENERATIONS:
        raise UserError(f"{len(rows)} prompts x k={k}: a self-play job takes at most {MAX_PROMPTS} prompts and "
                        f"{MAX_GENERATIONS:,} answers (set limit)", param="limit")
    missing = next((n for n, r in enumerate(rows, 1) if reference_of(r["row"]) is None), None)
    if missing is not None:
        raise UserError(f"row {missing} does not end with an assistant answer: the grader compares answers with "
                        "it", param="training_file")


def _union(*rule_sets) -> list[str]:
    return list(dict.fromkeys(r for rules in rule_sets for r in rules))


def _play(ctx: JobContext, spec: SelfPlaySpec, rows: list[dict], done: int, made: int, rules: list[str]) -> int:
    """Sample, grade and pair the prompts from `done` on, a chunk at a time: the pairs the dataset holds after."""
    from tuneforge.evals.task import answer_budget
    from tuneforge.inference.generate import Generator

    weights = models.resolve(ctx.db, spec.model, ctx.job.project_id)
    grader = graders.make(spec.grader)
    lineage_of = {"model": spec.model, "temperature": spec.temperature, "k": spec.k, "grader": spec.grader}
    with Generator(weights.base, adapter=str(weights.adapter) if weights.adapter else None) as generator:
        budget = spec.max_tokens or answer_budget(generator.tokenizer,
                                                  [reference_of(r["row"]).shown() for r in rows])
        for start in range(done, len(rows), CHUNK):
            ctx.check()
            chunk = rows[start:start + CHUNK]
            prompts = [_pruned(prompt_of(r["row"]), rules) for r in chunk]
            samples = pairs.sample(generator, prompts, k=spec.k, temperature=spec.temperature, max_tokens=budget,
                                   seed=spec.seed)
            found = []
            for n, (r, answers) in enumerate(zip(chunk, samples)):
                grades = pairs.grade(grader, r["row"], answers, check=ctx.check)
                for p in pairs.pairs_from_samples(r["row"], answers, grades, use_reference=spec.use_reference):
                    found.append((start + n, p.row, {**r["lineage"], "self_play": {**lineage_of, **p.lineage}}))
            ctx.check()
            sampled = start + len(chunk)
            with ctx.db.session() as s:
                made = datasets.add_pairs(s, spec.dataset, found, sampled=sampled, answer_model=spec.model)
            ctx.event(f"{sampled}/{len(rows)} prompts sampled, {made} pairs", type="metrics",
                      data={"sampled": sampled, "total": len(rows), "pairs": made})
    return made


def _pruned(prompt: dict, rules: list[str]) -> dict:
    """The prompt as the model sees it when served: the texts its rules cut, cut."""
    return {**prompt, "messages": prune(prompt["messages"], rules)} if rules else prompt
