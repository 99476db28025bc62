"""`tuneforge bakeoff`: which base is best to fine-tune for your tasks, as one bake-off job on the platform.

Datasets are dataset ids, or local JSONL files (uploaded and split 80/20 first). The job's events print as
they come; at the end the ranking prints and the report (JSON + HTML) is saved with --out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tuneforge.cli.app import app, console, out
from tuneforge.cli.platform import DEFAULT_URL, ApiKey, BaseUrl, Platform
from tuneforge.errors import TuneforgeError, UserError

Opt = typer.Option


@app.command()
def bakeoff(
    base: Annotated[list[str], Opt(help="A base to compare (repeat): bundled, the operator's, ft: or merge:.")],
    data: Annotated[list[str], Opt(help="A task (repeat): a dataset id, or a chat JSONL file (split 80/20).")],
    judge: Annotated[str | None, Opt(help="A pairwise judge model; without one the first grader decides.")] = None,
    reference: Annotated[str | None, Opt(help="Also evaluate this model (the teacher, or `answers`).")] = None,
    grader: Annotated[list[str] | None, Opt(help="exact, json, regex, numeric, or a JSON criterion (repeat). "
                                                 "Default: exact.")] = None,
    merge_top: Annotated[int, Opt(help="2: SLERP-merge the top two bases and put the merge through the same.")] = 0,
    budget: Annotated[int | None, Opt(help="Trained tokens per fine-tune (the same for every base).")] = None,
    hyper: Annotated[list[str] | None, Opt(help="KEY=VALUE fine-tuning hyperparameter, for every fine-tune "
                                               "(repeat), e.g. batch_size=8.")] = None,
    max_tokens: Annotated[int | None, Opt(min=1, max=4096, help="Longest answer in the evals.")] = None,
    out_dir: Annotated[Path | None, Opt("--out", help="Save report.json and report.html here.")] = None,
    seed: int = 0,
    base_url: BaseUrl = DEFAULT_URL, api_key: ApiKey = None,
) -> None:
    """Fine-tune every base on every task with the same budget, evaluate, rank the bases (Bradley-Terry)."""
    from tuneforge.cli.evals_cmd import criteria_from_flags

    platform = Platform(base_url, api_key)
    graders = [c for c in criteria_from_flags(grader, None, None, None) if c["type"] not in ("judge", "criterion")]
    body = {"bases": base, "datasets": [_dataset(platform, d) for d in data], "judge": judge, "reference": reference,
            "graders": graders, "merge_top": merge_top, "budget_tokens": budget, "hyperparameters": _hyper(hyper),
            "sampling": {"max_completion_tokens": max_tokens}, "seed": seed}
    job = platform.json("POST", "/v1/bakeoffs", json=body)
    console.print(f"[dim]bake-off {job['id']} queued[/dim]")
    job = platform.follow(f"/v1/bakeoffs/{job['id']}", final=("succeeded", "failed", "cancelled"), poll_s=2.0)
    if job["status"] != "succeeded":
        raise TuneforgeError(f"bake-off {job['id']} {job['status']}: {(job.get('error') or {}).get('message', '')}")
    table = Table("place", "base", "rating", "95% CI", title="bases, best first")
    for n, r in enumerate(job["ranking"], 1):
        table.add_row(str(n), r["name"], f"{r['rating']:.0f}", f"{r['ci_low']:.0f} – {r['ci_high']:.0f}"
                      if r["ci_low"] is not None else "–")
    out.print(table)
    if job.get("merge"):
        out.print(json.dumps({"merge": job["merge"]}))
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, route in (("report.json", "report"), ("report.html", "report.html")):
            (out_dir / name).write_bytes(platform.call("GET", f"/v1/bakeoffs/{job['id']}/{route}").content)
        out.print(f"report: {out_dir / 'report.html'}")


def _dataset(platform: Platform, data: str) -> str:
    if data.startswith("ds-"):
        return data
    path = Path(data)
    if not path.is_file():
        raise UserError(f"--data {data}: neither a dataset id (ds-...) nor a JSONL file")
    with open(path, "rb") as f:
        uploaded = platform.json("POST", "/v1/files", files={"file": (path.name, f)}, data={"purpose": "fine-tune"})
    file_id = uploaded["id"]
    ds = platform.json("POST", "/v1/datasets", json={"name": path.stem, "file_id": file_id, "dedupe": "exact"})
    console.print(f"[dim]{path} -> dataset {ds['id']} ({ds['counts'].get('train')} train, "
                  f"{ds['counts'].get('test')} test)[/dim]")
    return ds["id"]


def _hyper(items: list[str] | None) -> dict:
    out_: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--hyper {item}: give KEY=VALUE, e.g. batch_size=8")
        try:
            out_[key] = json.loads(value)
        except ValueError:
            out_[key] = value
    return out_

