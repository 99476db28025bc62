"""`tuneforge datasets create|list|show|export|relabel|cancel|from-eval|self-play`, through the platform's API."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tuneforge.cli.app import app, console, out
from tuneforge.cli.logs_cmd import Model, Search, Since, Status, Tag, Until
from tuneforge.cli.platform import DEFAULT_URL, ApiKey, BaseUrl, Platform
from tuneforge.errors import UserError

FILLING = ("relabeling", "generating")  # a dataset's status while a job fills it

datasets_app = typer.Typer(help="Datasets from captured calls or files: create, list, show, export, relabel; "
                                "preference pairs from an eval run or self-play.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


def _uploaded(platform: Platform, file: str) -> str:
    """A file id: `file` itself, or the id of the local file once uploaded (purpose fine-tune)."""
    if not Path(file).is_file():
        return file
    with open(file, "rb") as f:
        return platform.json("POST", "/v1/files", files={"file": (Path(file).name, f)},
                             data={"purpose": "fine-tune"})["id"]


def _rules(prune: list[str] | None, prune_file: list[Path] | None) -> list[str]:
    rules = list(prune or [])
    for path in prune_file or []:
        if not path.is_file():
            raise UserError(f"--prune-file {path}: no such file")
        rules.append(path.read_text().strip())
    return rules


@datasets_app.command("create")
def create(
    name: str,
    file: Annotated[str | None, typer.Option(help="A local JSONL file (uploaded first) or an uploaded file id, "
                                                  "instead of the logs.")] = None,
    model: Model = None, tag: Tag = None, status: Status = None, since: Since = None, until: Until = None,
    search: Search = None,
    sample: Annotated[int | None, typer.Option(help="At most this many entries, at random.")] = None,
    dedupe: Annotated[str, typer.Option(help="none, exact, or near (MinHash; includes exact).")] = "near",
    near_threshold: Annotated[float, typer.Option(help="Similarity above which two entries are one.")] = 0.8,
    test_fraction: Annotated[float, typer.Option(help="Share held out as the test split.")] = 0.2,
    label: Annotated[str | None, typer.Option(help="Stratify the split by tag.KEY or reply.FIELD.")] = None,
    seed: int = 0,
    prune: Annotated[list[str] | None, typer.Option(help="Text to cut from inputs (repeatable).")] = None,
    prune_file: Annotated[list[Path] | None, typer.Option(help="A file whose text is cut from inputs.")] = None,
    base_url: BaseUrl = DEFAULT_URL, api_key: ApiKey = None,
) -> None:
    """A dataset from the calls matching a filter (successful ones with a reply), or from a JSONL file."""
    if file is not None and not Path(file).is_file() and not file.startswith("file-"):
        raise UserError(f"--file {file}: no such file; give a local JSONL file or an uploaded file id (file-...)")
    platform = Platform(base_url, api_key)
    body: dict = {"name": name, "sample": sample, "dedupe": dedupe, "near_threshold": near_threshold,
                  "test_fraction": test_fraction, "label": label, "seed": seed,
                  "pruning_rules": _rules(prune, prune_file)}
    if file is not None:
        body["file_id"] = _uploaded(platform, file)
    else:
        body["logs"] = {"model": model, "tags": tag or [], "status": status, "since": since, "until": until,
                        "search": search}
    _print(platform.json("POST", "/v1/datasets", json=body))


@datasets_app.command("list")
def list_datasets(base_url: BaseUrl = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """The project's datasets, newest first."""
    table = Table("id", "name", "status", "train", "test", "source")
    for ds in Platform(base_url, api_key).json("GET", "/v1/datasets")["data"]:
        c = ds["counts"]
        table.add_row(ds["id"], ds["name"], ds["status"], str(c.get("train", 0)), str(c.get("test", 0)),
                      json.dumps(ds["source"]))
    out.print(table)


@datasets_app.command("show")
def show(dataset_id: str, entries: Annotated[int, typer.Option(help="Entries to print.")] = 3,
         base_url: BaseUrl = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """A dataset's source, recipe, counts and first entries (with their lineage)."""
    platform = Platform(base_url, api_key)
    _print(platform.json("GET", f"/v1/datasets/{dataset_id}"))
    if entries:
        rows = platform.json("GET", f"/v1/datasets/{dataset_id}/entries", params={"limit": entries})["data"]
        for e in rows:
            out.print_json(json.dumps(e))


@datasets_app.command("export")
def export(dataset_id: str, out_file: Annotated[Path, typer.Option("--out", help="JSONL file to write.")],
           split: Annotated[str | None, typer.Option(help="train or test (default: both).")] = None,
           base_url: BaseUrl = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """OpenAI fine-tuning JSONL, pruning rules applied."""
    params = {"split": split} if split else {}
    n = Platform(base_url, api_key).download(f"/v1/datasets/{dataset_id}/export", out_file, params=params)
    console.print(f"wrote {n} examples to {out_file}")


@datasets_app.command("relabel")
def relabel(
    dataset_id: str,
    model: Annotated[str, typer.Option(help="The teacher: a model the platform's upstreams serve.")],
    name: Annotated[str | None, typer.Option(help="Name of the new dataset.")] = None,
    concurrency: Annotated[int, typer.Option(help="Requests to the teacher at once.")] = 8,
    max_attempts: Annotated[int, typer.Option(help="Tries per entry (backoff between).")] = 5,
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends (Ctrl-C stops following, not the "
                                             "job).")] = True,
    base_url: BaseUrl = DEFAULT_URL, api_key: ApiKey = None,
) -> None:
    """A new dataset with every answer re-written by a teacher model (a job; resumable)."""
    platform = Platform(base_url, api_key)
    ds = platform.json("POST", f"/v1/datasets/{dataset_id}/relabel",
                       json={"model": model, "name": name, "concurrency": concurrency, "max_attempts": max_attempts})
    console.print(f"relabeling into {ds['id']} (job {ds['job']['id']})")
    if wait:
        parent = platform.json("GET", f"/v1/datasets/{dataset_id}")["counts"]
        _follow(platform, ds, "relabel", parent.get("train", 0) + parent.get("test", 0), "answered")


def _follow(platform: Platform, ds: dict, what: str, total: int, counter: str) -> None:
    """A progress bar over `counts[counter]` until the job filling the dataset ends; UserError unless ready."""
    from rich.progress import Progress

    with Progress(console=console) as progress:
        task = progress.add_task(what, total=total)
        while ds["status"] in FILLING and ds["job"]["status"] in ("queued", "running", "validating_files"):
            time.sleep(1)
            ds = platform.json("GET", f"/v1/datasets/{ds['id']}")
            progress.update(task, completed=ds["counts"].get(counter, 0))
    _print(ds)
    if ds["status"] != "ready":
        raise UserError(f"{what} job {ds['job']['id']} ended {ds['job']['status']}: "
                        f"{(ds['job'].get('error') or {}).get('message', '')}")


@datasets_app.command("from-eval")
def from_eval(
    run_id: str,
    by: Annotated[str, typer.Option(help="judge (verdicts won in both orders) or a grader's name (one model "
                                         "scores 1, the other below).")] = "judge",
    min_gap: Annotated[float | None, typer.Option(help="With a grader: pair scores this far apart instead.")] = None,
    name: Annotated[str | None, typer.Option(help="Name of the new dataset.")] = None,
    base_url: BaseUrl = DEFAULT_URL, api_key: ApiKey = None,
) -> None:
    """A preference dataset (for DPO) from an eval run: the answer the judge or grader preferred on each row."""
    ds = Platform(base_url, api_key).json("POST", "/v1/datasets/from_eval",
                                          json={"run_id": run_id, "by": by, "min_gap": min_gap, "name": name})
    for warning in ds.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    _print(ds)


@datasets_app.command("self-play")
def self_play(
    model: Annotated[str, typer.Option(help="The model that answers: a base or your ft: model.")],
    data: Annotated[str, typer.Option(help="Prompts with reference answers: a local JSONL file (uploaded "
                                           "first), a file id, or a dataset id.")],
    grader: Annotated[str, typer.Option(help="exact or json: grades each answer against the reference.")] = "exact",
    k: Annotated[int, typer.Option("-k", "--k", help="Answers sampled per prompt (at most 16).")] = 4,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    limit: Annotated[int | None, typer.Option(help="Only the first N prompts.")] = None,
    split: Annotated[str, typer.Option(help="With a dataset id: which split.")] = "train",
    max_tokens: Annotated[int | None, typer.Option(help="Tokens per answer (default: from the references).")] = None,
    reference: Annotated[bool, typer.Option(help="When no answer passes, prefer the reference answer.")] = True,
    name: Annotated[str | None, typer.Option(help="Name of the new dataset.")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends (Ctrl-C stops following, not the "
                                             "job).")] = False,
    base_url: BaseUrl = DEFAULT_URL, api_key: ApiKey = None,
) -> None:
    """A preference dataset (for DPO) from the model's own answers: k per prompt, graded, a passing one paired
    with a failing one (a job; resumable)."""
    if not Path(data).is_file() and not data.startswith(("file-", "ds-")):
        raise UserError(f"--data {data}: no such file; give a local JSONL file, a file id (file-...) or a dataset "
                        "id (ds-...)")
    platform = Platform(base_url, api_key)
    body = {"model": model, "grader": grader, "k": k, "temperature": temperature, "limit": limit,
            "max_tokens": max_tokens, "use_reference": reference, "name": name}
    if data.startswith("ds-") and not Path(data).is_file():
        body.update(dataset=data, split=split)
    else:
        body["training_file"] = _uploaded(platform, data)
    ds = platform.json("POST", "/v1/datasets/self_play", json=body)
    console.print(f"self-play into {ds['id']} (job {ds['job']['id']})")
    if wait:
        _follow(platform, ds, "self-play", ds["counts"].get("prompts", 0), "sampled")
    else:
        out.print(ds["id"])


@datasets_app.command("cancel")
def cancel(dataset_id: str, base_url: BaseUrl = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """Stop the job filling a dataset, a relabel or a self-play (what it made so far is kept)."""
    _print(Platform(base_url, api_key).json("POST", f"/v1/datasets/{dataset_id}/cancel"))


def _print(ds: dict) -> None:
    c = ds["counts"]
    sizes = f"{c.get('pairs', c.get('train', 0))} pairs" if ds.get("kind") == "preference" else \
        f"{c.get('train', 0)} train / {c.get('test', 0)} test"
    console.print(f"[bold]{ds['id']}[/bold] {ds['name']!r}: {ds['status']}, {sizes}", highlight=False)
    removed = {k: c[k] for k in ("candidates", "exact_duplicates", "near_duplicates") if k in c}
    if removed:
        console.print(f"  from {removed.get('candidates')} candidates: {removed.get('exact_duplicates', 0)} exact "
                      f"and {removed.get('near_duplicates', 0)} near duplicates removed", highlight=False)
    if ds.get("pruning_rules"):
        console.print(f"  {len(ds['pruning_rules'])} pruning rule(s)")
    out.print(ds["id"])
