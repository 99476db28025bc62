"""`tuneforge merge` and `tuneforge merge-adapters`: merge on this machine (--out DIR), or as a merge job on the
platform that registers the result as the model `merge:NAME` (--name NAME)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer

from tuneforge.cli.app import DataDir, app, console, out, use
from tuneforge.cli.platform import DEFAULT_URL, ApiKey, BaseUrl, Platform
from tuneforge.cli.progress import ProgressBar
from tuneforge.errors import TuneforgeError, UserError

Opt = typer.Option
OutOpt = Annotated[Path | None, Opt("--out", help="Write the merged model into this new folder (on this machine).")]
NameOpt = Annotated[str | None, Opt(help="Merge on the platform (--base-url, --api-key) and register the result "
                                         "as the model `merge:NAME` in your project.")]


@app.command()
def merge(
    config: Annotated[Path, typer.Argument(help="A mergekit YAML config (any of mergekit's methods). Models may be "
                                                "registry names, model or adapter folders, or (with --name) your "
                                                "project's ft: and merge: models.")],
    out_dir: Annotated[Path | None, Opt("--out", help="Write the merged model into this new folder.")] = None,
    name: NameOpt = None,
    seed: Annotated[int, Opt(help="Seed for the methods that drop at random (dare_*, della).")] = 0,
    base_url: BaseUrl = DEFAULT_URL, api_key: ApiKey = None, data_dir: DataDir = None,
) -> None:
    """Merge models as a mergekit config says, with mergekit as the engine."""
    use(data_dir)
    from tuneforge.merging import config as configs

    _one_target(out_dir, name)
    cfg = configs.parse(_read(config), str(config))
    if name:
        _remote(Platform(base_url, api_key), {"name": name, "config": cfg, "seed": seed})
        return
    from tuneforge.merging.full import merge as run

    with ProgressBar("merging") as bar:
        written = run(cfg, out_dir, on_event=bar, source=str(config), seed=seed)
    out.print(f"merged {len(written['inputs'])} models into {out_dir}")


@app.command("merge-adapters")
def merge_adapters(
    adapters: Annotated[list[str], typer.Argument(help="Two or more LoRA adapters of one base: adapter folders "
                                                       "or (with --name) your project's ft: models.")],
    weights: Annotated[str | None, Opt(help="Comma-separated, one per adapter (default: equal).")] = None,
    method: Annotated[str, Opt(help="linear, cat, svd, ties, dare_ties, dare_linear or magnitude_prune.")] = "linear",
    density: Annotated[float | None, Opt(help="ties / dare_* / magnitude_prune: the share of each delta kept.")] = None,
    svd_rank: Annotated[int | None, Opt(help="svd: the new adapter's rank (default: the largest input's).")] = None,
    out_dir: OutOpt = None, name: NameOpt = None,
    base_url: BaseUrl = DEFAULT_URL, api_key: ApiKey = None, data_dir: DataDir = None,
) -> None:
    """Combine LoRA adapters of one base into one new adapter (PEFT's add_weighted_adapter); the base is untouched."""
    use(data_dir)
    _one_target(out_dir, name)
    parsed = _weights(weights)
    request = {"adapters": adapters, "weights": parsed, "method": method, "density": density, "svd_rank": svd_rank}
    if name:
        _remote(Platform(base_url, api_key), {"name": name, **request})
        return
    from tuneforge.merging.adapters import merge_adapters as run

    with ProgressBar("merging adapters") as bar:
        run(adapters, out_dir, weights=parsed, method=method, density=density, svd_rank=svd_rank, on_event=bar)


def _one_target(out_dir: Path | None, name: str | None) -> None:
    if (out_dir is None) == (name is None):
        raise UserError("give exactly one of --out DIR (merge here) or --name NAME (merge on the platform)")


def _weights(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise UserError(f"--weights {text}: give numbers separated by commas, e.g. 0.5,0.5") from None


def _remote(platform: Platform, request: dict) -> None:
    job = platform.json("POST", "/v1/merges", json=request)
    console.print(f"[dim]merge job {job['id']} queued[/dim]")
    job = platform.follow(f"/v1/merges/{job['id']}", final=("succeeded", "failed", "cancelled"))
    if job["status"] != "succeeded":
        raise TuneforgeError(f"merge job {job['id']} {job['status']}: {(job.get('error') or {}).get('message', '')}")
    out.print(json.dumps({"id": job["id"], "model": job["model"]}))


@app.command("merge-search")
def merge_search(
    config: Annotated[Path, typer.Argument(help="A mergekit config whose searched values are written $name.")],
    param: Annotated[list[str], Opt(help="NAME=v1,v2,... or NAME=LOW:HIGH:COUNT: the values of $NAME (repeat).")],
    data: Annotated[list[str], Opt(help="Held-out rows of a target task (repeat, one per task): a chat JSONL file "
                                        "ending in the reference answer, or with --name a dataset id (its test "
                                        "split).")],
    out_dir: Annotated[Path | None, Opt("--out", help="The best merge goes here; search.json / search.html "
                                                      "beside it.")] = None,
    name: NameOpt = None,
    rows: Annotated[int, Opt(min=1, help="Rows of each task scored per candidate (the first N).")] = 20,
    grader: Annotated[str, Opt(help="exact, json, regex, numeric, or a JSON criterion.")] = "exact",
    strategy: Annotated[str, Opt(help="grid (every combination) or coordinate (one value at a time).")] = "grid",
    trials: Annotated[int, Opt(help="At most this many candidates merged and scored.")] = 16,
    max_tokens: Annotated[int | None, Opt(min=1, max=4096, help="Longest answer (default: from the rows).")] = None,
    seed: int = 0, base_url: BaseUrl = DEFAULT_URL, api_key: ApiKey = None, data_dir: DataDir = None,
) -> None:
    """Search a merge's parameters: merge each candidate with mergekit, score it on every task, keep the best."""
    use(data_dir)
    from tuneforge.cli.evals_cmd import criteria_from_flags
    from tuneforge.evals.task import load_test_rows
    from tuneforge.merging import config as configs
    from tuneforge.merging import search

    _one_target(out_dir, name)
    cfg = configs.parse(_read(config), str(config))
    space = search.parse_space(param)
    search.check_space(cfg, space, strategy, trials)
    judged = criteria_from_flags([grader], None, None, None)[0]
    if name:
        _remote(Platform(base_url, api_key), {"name": name, "config": cfg, "seed": seed, "search": {
            "params": space, "datasets": data, "rows": rows, "grader": judged, "strategy": strategy,
            "trials": trials, "max_tokens": max_tokens}})
        return
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"{out_dir} is not empty: choose a new --out folder")
    tasks = {Path(p).stem: load_test_rows(Path(p), rows) for p in data}
    work = out_dir.with_name(f".{out_dir.name}.trials")
    shutil.rmtree(work, ignore_errors=True)
    runner = search.Search(cfg, tasks, work, grader=judged, max_tokens=max_tokens)
    with ProgressBar("merge search") as bar:
        trials_ = search.run(space, runner.score, strategy=strategy, trials=trials, seed=seed, on_event=bar)
    rep = search.report(trials_, space, strategy=strategy, config=cfg)
    runner.best[1].rename(out_dir)
    search.write_report(rep, out_dir)
    shutil.rmtree(work, ignore_errors=True)
    best = rep["best"]
    out.print(f"best of {len(trials_)}: trial {best['trial']} {json.dumps(best['values'])} score {best['score']:.3f} "
              f"({', '.join(f'{k} {v:.3f}' for k, v in best['scores'].items())}) -> {out_dir}")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
