"""The merge job: a mergekit config run on a project's models, or LoRA adapters combined into one, registered
as the model `merge:{name}` when it succeeds.

Accepting checks everything that can be checked without reading weights: the name is free, every model the
config names is one the project can use (a tenant names models, never server folders), the config is valid
for mergekit, an adapter merge's inputs are adapters. Running writes into the job's folder (`model/`); a
requeued attempt starts the merge again (minutes), unless the previous one had finished writing.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.errors import Conflict, NotFound, TuneforgeError, UserError
from tuneforge.jobs.context import JobContext, JobStopped, ProgressEvents
from tuneforge.jobs.registry import JobKind
from tuneforge.merging import config as configs
from tuneforge.merging import manifest
from tuneforge.merging.search import check_space, fill, placeholders
from tuneforge.models import registry
from tuneforge.store import datasets, jobs, models, quotas
from tuneforge.store.db import Database
from tuneforge.store.tables import Job, Project

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
DISK_MARGIN = 1.2  # free space needed, as a multiple of the estimated output
MAX_LAYER_GROWTH = 2  # a slices config may stack at most this many times its inputs' layers


class SearchSpec(BaseModel):
    """A merge search: the config's `$name` values tried, each candidate scored on held-out rows of the tasks."""

    params: dict[str, list[float]] = Field(min_length=1, max_length=8, description="$name -> the values to try.")
    datasets: list[str] = Field(min_length=1, max_length=8, description="Tasks: the first `rows` of each "
                                "dataset's test split score a candidate.")
    rows: int = Field(20, ge=1, le=500)
    grader: dict[str, Any] = Field(default_factory=lambda: {"type": "exact", "name": "exact"})
    strategy: Literal["grid", "coordinate"] = "grid"
    trials: int = Field(16, ge=1, le=64, description="At most this many candidates merged and scored.")
    max_tokens: int | None = Field(None, ge=1, le=4096)


class MergeSpec(BaseModel):
    """A merge as accepted."""

    model: str = Field(description="`merge:{name}`: the model it registers.")
    type: Literal["model", "adapter"]
    config: dict[str, Any] | None = None
    adapters: list[str] | None = None
    weights: list[float] | None = None
    method: str
    density: float | None = None
    svd_rank: int | None = None
    seed: int = 0
    search: SearchSpec | None = None
    metadata: dict[str, str] | None = None


class MergeKind(JobKind):
    name = "merge"
    noun = "merge"
    Spec = MergeSpec
    id_prefix = "merge-"
    event_prefix = "mergeevent-"
    id_param = "merge_id"
    created_message = "Merge created"
    queued_message = "Models and config checked, merge queued"

    def accept(self, s: Session, project: Project, request: Any, **where: str) -> Job:
        model = models.MERGE_PREFIX + _name(request.name)
        _name_free(s, project.id, model)
        if (request.config is None) == (request.adapters is None):
            raise UserError("give either `config` (a mergekit config: a full-model merge) or `adapters` (LoRA "
                            "fine-tunes to combine)", param="config")
        search = None
        if request.config is not None:
            search = _check_search(s, project.id, request.config, request.search)
            filled = fill(request.config, {k: v[0] for k, v in search.params.items()}) if search else request.config
            spec = MergeSpec(model=model, type="model", config=request.config, method=_check_config(
                s, project.id, filled), seed=request.seed, search=search, metadata=request.metadata)
        else:
            from tuneforge.merging.adapters import check

            weights = check(request.adapters, request.weights, request.method, request.density)
            for name in request.adapters:
                found = _usable(s, project.id, name, "adapters")
                if found.path is None or not (found.path / "adapter_config.json").exists():
                    raise UserError(f"'{name}' is not a LoRA fine-tune: an adapter merge combines LoRA adapters "
                                    "(merge full models with `config`)", param="adapters")
            spec = MergeSpec(model=model, type="adapter", adapters=request.adapters, weights=weights,
                             method=request.method, density=request.density, svd_rank=request.svd_rank,
                             seed=request.seed, metadata=request.metadata)
        job = jobs.submit(s, project_id=project.id, kind=self.name, spec=spec.model_dump(mode="json"))
        if search is not None:  # the rows are the job's from now on: a dataset changed later changes nothing
            tasks = Path(job.out_dir) / "tasks"
            tasks.mkdir(parents=True, exist_ok=True)
            for ds_id in search.datasets:
                lines = datasets.export_lines(s, datasets.get(s, ds_id, project.id), "test")[: search.rows]
                (tasks / f"{ds_id}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return job

    def run(self, ctx: JobContext) -> dict:
        spec: MergeSpec = self.spec(ctx.job)
        folder = Path(ctx.job.out_dir)
        out = folder / "model"
        done = manifest.read(out)
        if done is None:
            locate = _locator(ctx.db, ctx.job.project_id)
            _check_disk(out, spec, [locate(n) for n in _inputs(spec)])
            with ctx.db.session() as s:  # its quota as it is now, not as when the job was queued
                quotas.check_disk(s, ctx.job.project_id)
            try:
                if spec.search is not None:
                    done = _search(spec, folder, locate, ctx)
                else:
                    done = _merge(spec, out, locate, ProgressEvents(ctx), ctx.check)
            except (JobStopped, TuneforgeError):
                raise
            except Exception as exc:
                raise _without_paths(exc) from None
        ctx.event(f"Merged model created: {spec.model}", data={"model": spec.model})
        inputs = [{"name": i["name"], "sha256": i["sha256"]} for i in done["inputs"]]  # no server folders
        result = {"model": spec.model, "inputs": inputs, "engine": done["engine"]}
        if (folder / "search.json").exists():
            result["search"] = json.loads((folder / "search.json").read_text())["best"]
        return result

    def on_success(self, s: Session, job: Job, result: dict) -> None:
        spec: MergeSpec = self.spec(job)
        models.add_merge(s, name=spec.model, project_id=job.project_id, job_id=job.id, kind=spec.type,
                         path=str(Path(job.out_dir) / "model"))


KIND = MergeKind()


def _name(name: str) -> str:
    name = name.removeprefix(models.MERGE_PREFIX)
    if not NAME.fullmatch(name):
        raise UserError(f"name '{name}': use 1 to 64 lowercase letters, digits, '.', '_' or '-', starting with a "
                        "letter or digit", param="name")
    return name


def _name_free(s: Session, project_id: str, model: str) -> None:
    """No model of the project has the name, and no unfinished merge will take it."""
    pending = s.scalars(select(Job).where(Job.project_id == project_id, Job.kind == KIND.name,
                                          Job.status.not_in(jobs.FINAL)))
    if models.merged_row(s, model, project_id) is not None or any(j.spec.get("model") == model for j in pending):
        raise Conflict(f"the model `{model}` already exists or is being made: choose another name, or delete it "
                       "first", param="name", code="model_exists")


def _usable(s: Session, project_id: str, name: str, param: str) -> models.Model:
    found = models.find(s, name, project_id)
    if found is None:
        raise NotFound(f"The model `{name}` does not exist or you do not have access to it: name a bundled base "
                       f"({', '.join(registry.base_names())}) or one of your ft: or merge: models", param=param,
                       code="model_not_found")
    return found


def _check_config(s: Session, project_id: str, cfg: dict) -> str:
    """The config's merge method, once every model it names is the project's and mergekit accepts it."""
    for name in configs.model_names(cfg):
        _usable(s, project_id, name, "config")
    configs.check_references(cfg, "config")  # no model mergekit would read but those names
    return str(cfg.get("merge_method"))


def _check_search(s: Session, project_id: str, cfg: dict, search: Any) -> SearchSpec | None:
    """The search's shape, its tasks (datasets with test rows) and grader; None when there is no search."""
    if search is None:
        if placeholders(cfg):
            raise UserError(f"the config has placeholders ({', '.join(sorted(placeholders(cfg)))}) but no `search` "
                            "gives their values", param="search")
        return None
    try:
        spec = SearchSpec.model_validate(search.model_dump() if hasattr(search, "model_dump") else search)
    except ValidationError as exc:  # the request's model is looser than the spec (e.g. a bound it cannot state)
        err = exc.errors()[0]
        field = ".".join(str(part) for part in ("search", *err["loc"]))
        raise UserError(f"{field}: {err['msg']}", param=field) from None
    check_space(cfg, spec.params, spec.strategy, spec.trials)
    for ds_id in spec.datasets:
        ds = datasets.get(s, ds_id, project_id)
        if not (ds.counts or {}).get("test"):
            raise UserError(f"dataset {ds_id} has no test entries to score candidates on", param="search.datasets")
    from tuneforge.evals import criteria

    criteria.check([spec.grader])
    return spec


def _search(spec: MergeSpec, folder: Path, locate, ctx: JobContext) -> dict:
    """Merge and score the candidates (in `trials/`, the losers deleted as it goes); the best becomes `model/`."""
    from tuneforge.merging import search

    task_rows = {p.stem: [json.loads(line) for line in p.read_text(encoding="utf-8").split("\n") if line]
                 for p in sorted((folder / "tasks").glob("*.jsonl"))}
    work = folder / "trials"
    shutil.rmtree(work, ignore_errors=True)  # a requeued attempt starts the search again
    s = spec.search
    runner = search.Search(spec.config, task_rows, work, grader=s.grader, max_tokens=s.max_tokens, locate=locate,
                           check=ctx.check)
    trials = search.run(s.params, runner.score, strategy=s.strategy, trials=s.trials, seed=spec.seed,
                        on_event=ProgressEvents(ctx))
    rep = search.report(trials, s.params, strategy=s.strategy, config=spec.config)
    search.write_report(rep, folder)
    runner.best[1].rename(folder / "model")
    shutil.rmtree(work, ignore_errors=True)
    ctx.event(f"Best of {len(trials)} candidates: {json.dumps(rep['best']['values'])}, score "
              f"{rep['best']['score']:.3f}", data={"best": rep["best"]})
    return manifest.read(folder / "model")


def _inputs(spec: MergeSpec) -> list[str]:
    return configs.model_names(spec.config) if spec.config is not None else list(spec.adapters or [])


def _locator(db: Database, project_id: str):
    def locate(name: str) -> registry.ModelRef:
        w = models.resolve(db, name, project_id)
        return registry.ModelRef(w.base, w.adapter)

    return locate


def _check_disk(out: Path, spec: MergeSpec, refs: list[registry.ModelRef]) -> None:
    """Refuse to start a merge the disk cannot hold: its output (the largest input, scaled by the layers a
    slices config stacks and by the output dtype), plus each adapter input merged into its base first."""
    sizes = [sum(f.stat().st_size for f in Path(r.base).glob("*.safetensors")) for r in refs]
    need = max(sizes) * _growth(spec, refs[0].base) + sum(n for n, r in zip(sizes, refs) if r.adapter is not None)
    out.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out.parent).free
    if free < DISK_MARGIN * need:
        raise UserError(f"the merge needs about {DISK_MARGIN * need / 1e9:.1f} GB of disk and {free / 1e9:.1f} GB "
                        "is free: free space (delete old models or jobs) and retry")


def _growth(spec: MergeSpec, base: str) -> float:
    """Output size over the largest input's: the layers a slices config stacks (at most MAX_LAYER_GROWTH
    times the input's), times the output dtype's width over the input's."""
    cfg = spec.config or {}
    with open(Path(base) / "config.json") as f:
        model_cfg = json.load(f)
    layers = int(model_cfg.get("num_hidden_layers") or model_cfg.get("text_config", {}).get("num_hidden_layers") or 1)
    stacked = sum(_span(sl) for sl in cfg.get("slices") or [])
    if stacked > MAX_LAYER_GROWTH * layers:
        raise UserError(f"the config's slices stack {stacked} layers; a merge may output at most "
                        f"{MAX_LAYER_GROWTH} times its inputs' {layers}", param="config")
    width = {"float32": 4, "bfloat16": 2, "float16": 2}
    out_width = width.get(str(cfg.get("out_dtype") or cfg.get("dtype") or ""), 0)
    in_width = width.get(str(model_cfg.get("dtype") or model_cfg.get("torch_dtype") or "float32"), 4)
    return max(1.0, stacked / layers) * (out_width / in_width if out_width else 1.0)


def _span(sl: Any) -> int:
    try:
        low, high = sl["sources"][0]["layer_range"]
        return max(0, int(high) - int(low))
    except (KeyError, IndexError, TypeError, ValueError):
        return 0


def _without_paths(exc: Exception) -> UserError:
    """A failure inside mergekit or PEFT, said without the server's folders (a tenant sees this message)."""
    message = re.sub(r"(/[^\s'\",:)]+)+", "<path>", str(exc))[:500]
    return UserError(f"the merge failed: {type(exc).__name__}: {message}")


def _merge(spec: MergeSpec, out: Path, locate, on_event, check) -> dict:
    if spec.type == "model":
        from tuneforge.merging.full import merge

        return merge(spec.config, out, locate=locate, on_event=on_event, check=check, seed=spec.seed)
    from tuneforge.merging.adapters import merge_adapters

    check()
    return merge_adapters(spec.adapters, out, weights=spec.weights, method=spec.method, density=spec.density,
                          svd_rank=spec.svd_rank, seed=spec.seed, locate=locate, on_event=on_event)
