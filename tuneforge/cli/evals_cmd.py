"""`tuneforge evals run|list|show`: evals on this machine, or on the platform with --remote.

On this machine, models are registry names, model or adapter folders, upstream models, `answers` (the rows'
own answers) or `column:KEY`; the run's folder is `DATA_DIR/evals/RUN_ID` (outputs and judgments cached
there, so rerunning with `--resume RUN_ID` does only what is missing). With --remote the run is an `eval`
job on the platform (its `ft:` models usable), followed until it ends.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table

from tuneforge import paths
from tuneforge.cli.app import DataDir, app, console, out, use
from tuneforge.cli.platform import DEFAULT_URL, ApiKey, BaseUrl, Platform
from tuneforge.errors import UserError

evals_app = typer.Typer(help="Evaluate models against each other: graders, a pairwise judge, CIs.",
                        no_args_is_help=True)
app.add_typer(evals_app, name="evals")
Opt = typer.Option


def criteria_from_flags(grader: list[str] | None, judge: str | None, criteria: str | None,
                        suite: str | None) -> list[dict]:
    """--grader NAME or a JSON criterion; `judge` and `criterion` take --judge as their model."""
    out_: list[dict] = [{"type": "by_row", "name": suite}] if suite else []
    for g in grader or ([] if suite else ["exact"]):
        c = _criterion(g)
        if c["type"] in ("judge", "criterion"):
            if not judge and "model" not in c:
                raise UserError(f"--grader {c['type']} needs --judge MODEL (a model here or an upstream's)")
            c.setdefault("model", judge)
            if criteria and c["type"] == "judge":
                c.setdefault("criteria", criteria)
        out_.append(c)
    return out_


def _criterion(flag: str) -> dict:
    if not flag.lstrip().startswith("{"):
        return {"type": flag}
    try:
        c = json.loads(flag)
    except ValueError as exc:
        raise UserError(f"--grader {flag}: not valid JSON ({exc})") from None
    if not isinstance(c, dict) or not isinstance(c.get("type"), str):
        raise UserError(f"--grader {flag}: a JSON criterion is an object with a \"type\" (e.g. {{\"type\": "
                        "\"regex\", \"pattern\": \"...\"}})")
    return c


def _aliases(models: list[str]) -> tuple[list[str], dict[str, str]]:
    """NAME=MODEL: the report calls MODEL NAME (a folder's path is a poor name)."""
    aliases = dict(m.split("=", 1) for m in models if "=" in m and not Path(m).exists())
    return [m.split("=", 1)[0] if "=" in m and not Path(m).exists() else m for m in models], aliases


@evals_app.command("run")
def run(
    model: Annotated[list[str], Opt(help="A model to evaluate (repeat): registry name, folder, ft: model "
                                         "(--remote), upstream model, `answers` or `column:KEY`; NAME=MODEL "
                                         "names it NAME in the report.")],
    data: Annotated[Path | None, Opt(help="Test rows: chat JSONL ending in the reference answer.")] = None,
    dataset: Annotated[str | None, Opt(help="--remote: a dataset id; its test split is the test set.")] = None,
    suite: Annotated[str | None, Opt(help="A bundled suite instead of --data: `general` (forgetting check).")] = None,
    grader: Annotated[list[str] | None, Opt(help="exact, json, regex, numeric, judge, criterion, or a JSON "
                                                 "criterion (repeat). Default: exact.")] = None,
    judge: Annotated[str | None, Opt(help="The judge model for `judge` / `criterion`.")] = None,
    criteria: Annotated[str | None, Opt(help="Your criteria for a better answer, added to the judge's prompt.")] = None,
    reference: Annotated[str | None, Opt(help="Judge every model against this one (default: every pair).")] = None,
    limit: Annotated[int | None, Opt(min=1, help="Only the first N rows.")] = None,
    max_tokens: Annotated[int | None, Opt(min=1, max=4096, help="Longest answer (default: a margin over the "
                                                               "longest reference).")] = None,
    out_json: Annotated[Path | None, Opt("--out", help="Copy the report JSON here.")] = None,
    html: Annotated[Path | None, Opt(help="Copy the report page here.")] = None,
    resume: Annotated[str | None, Opt(help="Continue a local run by its id (only what is missing is done).")]
    = None,
    remote: Annotated[bool, Opt(help="Run on the platform (--base-url, --api-key) as an eval job.")] = False,
    base_url: BaseUrl = DEFAULT_URL, api_key: ApiKey = None, data_dir: DataDir = None,
) -> None:
    """Evaluate models on a test set and write a report (JSON + a self-contained HTML page)."""
    use(data_dir)
    if sum(x is not None for x in (data, dataset, suite)) != 1:
        raise UserError("give exactly one of --data FILE, --dataset ID (with --remote) or --suite NAME")
    if data is not None and not data.is_file():
        raise UserError(f"--data {data}: no such file")
    specs = criteria_from_flags(grader, judge, criteria, suite)
    if remote:
        if any("=" in m for m in model) or resume:
            raise UserError("--remote takes the platform's model names as they are (no NAME=MODEL) and no "
                            "--resume (a platform run resumes by itself)")
        if limit and data is None:
            raise UserError("--limit applies to --data files; a dataset or suite runs whole on the platform")
        report, folder = _remote(Platform(base_url, api_key), model, specs, data, dataset, suite, reference, limit,
                                 max_tokens)
    else:
        if dataset is not None:
            raise UserError("--dataset names a dataset on the platform: add --remote")
        report, folder = run_local(model, specs, data, suite, reference, limit, max_tokens, resume)
    print_report(report)
    for src, dst in ((folder / "report.json", out_json), (folder / "report.html", html)):
        if dst is not None:
            shutil.copyfile(src, dst)
    out.print(f"report: {out_json or folder / 'report.json'}  page: {html or folder / 'report.html'}")


def run_local(models: list[str], specs: list[dict], data: Path | None, suite: str | None, reference: str | None,
           limit: int | None, max_tokens: int | None, resume: str | None) -> tuple[dict, Path]:
    from tuneforge.cli.progress import ProgressBar
    from tuneforge.evals import criteria as criteria_
    from tuneforge.evals import suite as suites
    from tuneforge.evals.execute import SamplingSpec, execute
    from tuneforge.evals.models import Models
    from tuneforge.evals.runner import TestSet, load_rows
    from tuneforge.store.db import new_id
    from tuneforge.store.models import is_hosted

    criteria_.check(specs)
    test_set = suites.load_suite(suite) if suite else TestSet(data.name, load_rows(data))
    if limit:
        test_set = TestSet(test_set.name, test_set.rows[:limit])
    names, aliases = _aliases(models)
    models_ = Models(aliases=aliases, hosted=is_hosted)
    models_.check(names)
    models_.check_judges([c["model"] for c in specs if c.get("model")])
    run_id = resume or new_id("evalrun_")
    folder = paths.data_dir() / "evals" / run_id
    meta = {"id": run_id, "models": models, "criteria": specs, "test_set": test_set.name, "rows": len(test_set.rows),
            "reference": reference, "max_tokens": max_tokens}
    if resume:
        if not (folder / "run.json").exists():
            raise UserError(f"--resume {resume}: no local run with that id in {folder.parent}")
        if json.loads((folder / "run.json").read_text()) != meta:
            raise UserError(f"--resume {resume}: give the same models, graders, data and options as that run "
                            f"(see {folder / 'run.json'})")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps(meta))
    console.print(f"[dim]run {run_id} in {folder}[/dim]")
    with ProgressBar("evaluating") as bar:
        report = execute([test_set], models_, names, specs, reference=reference,
                         sampling=SamplingSpec(max_completion_tokens=max_tokens), workdir=folder, on_event=bar,
                         forgetting=suite is not None)
    return report, folder


def _remote(platform: Platform, models: list[str], specs: list[dict], data: Path | None, dataset: str | None,
            suite: str | None, reference: str | None, limit: int | None, max_tokens: int | None) -> tuple[dict, Path]:
    if data is not None:
        rows = data.read_text().splitlines(True)[:limit] if limit else data.read_text().splitlines(True)
        file_id = platform.json("POST", "/v1/files", files={"file": (data.name, "".join(rows).encode())},
                                data={"purpose": "evals"})["id"]
        source = {"type": "file_id", "id": file_id}
    else:
        source = {"type": "dataset", "id": dataset} if dataset else {"type": "suite", "name": suite}
    ev = platform.json("POST", "/v1/evals", json={"name": (data.name if data else dataset or suite),
                                                    "testing_criteria": specs})
    sampling = {"max_completion_tokens": max_tokens} if max_tokens else {}
    run_ = platform.json("POST", f"/v1/evals/{ev['id']}/runs", json={"data_source": {
        "type": "tuneforge", "models": models, "reference": reference, "source": source,
        "sampling_params": sampling}})
    console.print(f"[dim]eval {ev['id']}, run {run_['id']} queued[/dim]")
    run_ = follow(platform, ev["id"], run_["id"])
    if run_["status"] != "completed":
        raise UserError(f"run {run_['id']} {run_['status']}: {(run_.get('error') or {}).get('message', '')}")
    folder = paths.data_dir() / "evals" / run_["id"]
    folder.mkdir(parents=True, exist_ok=True)
    base = f"/v1/evals/{ev['id']}/runs/{run_['id']}"
    (folder / "report.json").write_bytes(platform.call("GET", base + "/report").content)
    (folder / "report.html").write_bytes(platform.call("GET", base + "/report.html").content)
    return json.loads((folder / "report.json").read_text()), folder


def follow(platform: Platform, eval_id: str, run_id: str, poll_s: float = 1.0) -> dict:
    """Print the run's events as they come; the run when it has ended."""
    return platform.follow(f"/v1/evals/{eval_id}/runs/{run_id}", final=("completed", "failed", "canceled"),
                           poll_s=poll_s)

def print_report(report: dict) -> None:
    table = Table("model", *report["graders"].keys(), title="scores (mean [95% CI])")
    for m in report["models"]:
        table.add_row(m["name"], *(_ci(m["graders"].get(label)) for label in report["graders"]))
    out.print(table)
    if report["pairwise"]:
        pairs = Table("a", "b", "grader", "wins", "ties", "losses", "a's win rate [95% CI]")
        for p in report["pairwise"]:
            pairs.add_row(p["a"], p["b"], p["grader"], str(p["wins"]), str(p["ties"]), str(p["losses"]),
                          _ci({"mean": p["win_rate"], "ci_low": p["ci_low"], "ci_high": p["ci_high"]}))
        out.print(pairs)
    if report.get("judge"):
        j = report["judge"]
        out.print(f"judge {j['model']} ({j['prompt_version']}): position consistency {_num(j['position_consistency'])}")
    if report.get("forgetting"):
        f = report["forgetting"]["overall"]
        out.print(f"forgetting check: {report['forgetting']['tuned']} - {report['forgetting']['base']} = "
                  f"{_ci({'mean': f['delta'], 'ci_low': f['ci_low'], 'ci_high': f['ci_high']})}")


def _ci(v: dict | None) -> str:
    if not v or v.get("mean") is None:
        return "-"
    return f"{v['mean']:.3f} [{_num(v['ci_low'])}, {_num(v['ci_high'])}]"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


@evals_app.command("list")
def list_runs(remote: Annotated[bool, Opt(help="The platform's evals instead of this machine's runs.")] = False,
              base_url: BaseUrl = DEFAULT_URL, api_key: ApiKey = None, data_dir: DataDir = None) -> None:
    """Runs on this machine (or the platform's evals and their runs), newest first."""
    use(data_dir)
    table = Table(Column("run", no_wrap=True), "status", "models", "rows")  # ids whole: they are copied
    if remote:
        platform = Platform(base_url, api_key)
        for ev in platform.json("GET", "/v1/evals", params={"order": "desc", "limit": 100})["data"]:
            for r in platform.json("GET", f"/v1/evals/{ev['id']}/runs", params={"limit": 100})["data"]:
                table.add_row(r["id"], r["status"], ", ".join(r["models"]), str(r["result_counts"]["total"]))
    else:
        folders = sorted((paths.data_dir() / "evals").glob("evalrun_*"), key=lambda p: p.stat().st_mtime,
                         reverse=True)
        for folder in folders:
            meta = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else {}
            done = "completed" if (folder / "report.json").exists() else "incomplete"
            table.add_row(folder.name, done, ", ".join(meta.get("models", [])), str(meta.get("rows", "?")))
    out.print(table)


@evals_app.command("show")
def show(run_id: str, remote: Annotated[bool, Opt(help="A run on the platform.")] = False,
         eval_id: Annotated[str | None, Opt(help="--remote: the run's eval (found when omitted).")] = None,
         base_url: BaseUrl = DEFAULT_URL, api_key: ApiKey = None, data_dir: DataDir = None) -> None:
    """A run's scores, win rates and judge consistency."""
    use(data_dir)
    if remote:
        platform = Platform(base_url, api_key)
        eval_id = eval_id or _eval_of(platform, run_id)
        report = platform.json("GET", f"/v1/evals/{eval_id}/runs/{run_id}/report")
    else:
        path = paths.data_dir() / "evals" / run_id / "report.json"
        if not path.exists():
            raise UserError(f"no finished local run {run_id} (see `tuneforge evals list`)")
        report = json.loads(path.read_text())
    print_report(report)


def _eval_of(platform: Platform, run_id: str) -> str:
    for ev in platform.json("GET", "/v1/evals", params={"limit": 100, "order": "desc"})["data"]:
        if any(r["id"] == run_id for r in platform.json("GET", f"/v1/evals/{ev['id']}/runs",
                                                        params={"limit": 100})["data"]):
            return ev["id"]
    raise UserError(f"no run {run_id} on the platform")
