"""Merging two specialists: LoRA fine-tunes of one base on the two bundled tasks, merged, scored on both tasks.

Trains two LoRA specialists of SmolLM2 (examples/email_extraction and examples/ticket_routing, the first
--train-rows rows of each train split), merges them as full models (`tuneforge merge`, mergekit:
task_arithmetic, ties, linear) and as adapters (`tuneforge merge-adapters`: cat, linear), and scores the
base, each specialist and each merge on the first --test-limit rows of both test splits (exact match).
With --search-rows, `tuneforge merge-search` also picks task_arithmetic weights on held-out test rows (those after
the scored ones). Baseline: each specialist on its own task; what is compared: each merge's drop from it and
its ratio to it, and each specialist on the other's task. Adapters, merges and scores are cached under --out,
so a rerun only does what is missing.

    TUNEFORGE_MODEL_CACHE=... .venv/bin/python bench/merge_tasks.py [--out /tmp/tuneforge-merge-tasks]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASKS = {"email": "email_extraction", "ticket": "ticket_routing"}

# name -> (kind, settings). Full merges read the adapters as full models (each merged into the base first).
MERGES = {
    "full_task_arithmetic_1_1": ("full", {"merge_method": "task_arithmetic", "weights": [1.0, 1.0]}),
    "full_ties_1_1_d0.5": ("full", {"merge_method": "ties", "weights": [1.0, 1.0], "density": 0.5}),
    "full_linear_0.5_0.5": ("full", {"merge_method": "linear", "weights": [0.5, 0.5]}),
    "adapter_cat_1_1": ("adapter", {"method": "cat", "weights": [1.0, 1.0]}),
    "adapter_linear_0.5_0.5": ("adapter", {"method": "linear", "weights": [0.5, 0.5]}),
}


def tuneforge(*args: str, log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run([sys.executable, "-m", "tuneforge", *args], stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}): tuneforge {' '.join(args)}; see {log}")
    return round(time.perf_counter() - t0, 1)


def train_specialist(args, task: str, out: Path) -> dict:
    adapter = out / "adapters" / TASKS[task]
    timing = out / "adapters" / f"{TASKS[task]}.json"
    if (adapter / "adapter_config.json").exists() and timing.exists():
        return json.loads(timing.read_text())
    subset = out / "subsets" / f"{TASKS[task]}.jsonl"
    subset.parent.mkdir(parents=True, exist_ok=True)
    rows = (ROOT / "examples" / TASKS[task] / "train.jsonl").read_text().splitlines(keepends=True)
    subset.write_text("".join(rows[: args.train_rows]))
    seconds = tuneforge("train", "--model", args.model, "--data", str(subset), "--out", str(adapter),
                        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                        "--learning-rate", str(args.learning_rate), "--lora-rank", str(args.lora_rank),
                        "--checkpoint-every", "100000", "--eval-every", "100000", log=out / f"train-{task}.log")
    steps = json.loads((adapter / "manifest.json").read_text()).get("total_steps")
    info = {"train_rows": min(args.train_rows, len(rows)), "steps": steps, "train_seconds": seconds}
    timing.write_text(json.dumps(info))
    return info


def make_merge(args, name: str, out: Path) -> tuple[Path, float]:
    kind, s = MERGES[name]
    folder = out / "merges" / name
    if folder.exists() and any(folder.iterdir()):
        return folder, 0.0
    adapters = [str(out / "adapters" / t) for t in TASKS.values()]
    if kind == "adapter":
        cmd = ["merge-adapters", *adapters, "--method", s["method"], "--weights", ",".join(map(str, s["weights"])),
               "--out", str(folder)]
        return folder, tuneforge(*cmd, log=out / f"merge-{name}.log")
    params = lambda w: {"weight": w, **({"density": s["density"]} if "density" in s else {})}  # noqa: E731
    cfg = {"merge_method": s["merge_method"], "dtype": "float32",
           "models": [{"model": a, "parameters": params(w)} for a, w in zip(adapters, s["weights"])]}
    if s["merge_method"] != "linear":
        cfg["base_model"] = args.model
    config = out / "merges" / f"{name}.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    import yaml

    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return folder, tuneforge("merge", str(config), "--out", str(folder), log=out / f"merge-{name}.log")


def searched_merge(args, out: Path) -> tuple[Path, float]:
    """`tuneforge merge-search`: task_arithmetic weights per specialist chosen on held-out rows (test rows
    after the first --test-limit, so the scored rows play no part in the choice)."""
    folder = out / "merges" / "searched_task_arithmetic"
    if (folder / "search.json").exists():
        return folder, 0.0
    adapters = [str(out / "adapters" / t) for t in TASKS.values()]
    config = out / "merges" / "search.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"merge_method: task_arithmetic\nbase_model: {args.model}\ndtype: float32\nmodels:\n"
                      f"  - model: {adapters[0]}\n    parameters: {{weight: $w_email}}\n"
                      f"  - model: {adapters[1]}\n    parameters: {{weight: $w_ticket}}\n")
    data = []
    for name in TASKS.values():
        rows = (ROOT / "examples" / name / "test.jsonl").read_text().splitlines(keepends=True)
        held_out = out / "subsets" / f"{name}-held-out.jsonl"
        held_out.write_text("".join(rows[args.test_limit: args.test_limit + args.search_rows]))
        data += ["--data", str(held_out)]
    seconds = tuneforge("merge-search", str(config), "--param", f"w_email={args.search_weights}", "--param",
                        f"w_ticket={args.search_weights}", *data, "--rows", str(args.search_rows), "--strategy",
                        "coordinate", "--trials", "10", "--out", str(folder), log=out / "merge-search.log")
    return folder, seconds


def evaluate(name: str, model: str, task: str, limit: int, out: Path) -> dict:
    cached = out / "scores" / f"{name}__{task}__{limit}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    from tuneforge.evals import task as tasks
    from tuneforge.inference.generate import Generator

    rows = tasks.load_test_rows(ROOT / "examples" / TASKS[task] / "test.jsonl", limit)
    t0 = time.perf_counter()
    result = tasks.evaluate(Generator(model), rows)
    found = {"exact_match": result.score.exact_match, "n": result.score.n,
             "eval_seconds": round(time.perf_counter() - t0, 1), "sample": result.predictions[:3]}
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(found))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--out", type=Path, default=Path("/tmp/tuneforge-merge-tasks"))
    parser.add_argument("--train-rows", type=int, default=160, help="first N rows of each train split")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--test-limit", type=int, default=50, help="first N rows of each test split")
    parser.add_argument("--merges", default=",".join(MERGES), help=f"comma-separated, of: {', '.join(MERGES)}")
    parser.add_argument("--search-rows", type=int, default=20, help="held-out rows per task for the merge search "
                        "(0: no search)")
    parser.add_argument("--search-weights", default="0.75,1,1.5,2", help="task_arithmetic weights tried per task")
    args = parser.parse_args()
    out = args.out.resolve()
    os.environ.setdefault("TUNEFORGE_DATA_DIR", str(out / "data"))

    trained = {task: train_specialist(args, task, out) for task in TASKS}
    models = {"base": args.model, **{f"{t}_specialist": str(out / "adapters" / d) for t, d in TASKS.items()}}
    merge_seconds = {}
    for name in [m for m in args.merges.split(",") if m]:
        folder, merge_seconds[name] = make_merge(args, name, out)
        models[name] = str(folder)
    if args.search_rows:
        folder, merge_seconds["searched_task_arithmetic"] = searched_merge(args, out)
        models["searched_task_arithmetic"] = str(folder)
        best = json.loads((folder / "search.json").read_text())["best"]
        print(f"merge search: best weights {best['values']} (held-out score {best['score']:.3f})")

    scores = {name: {task: evaluate(name, model, task, args.test_limit, out) for task in TASKS}
              for name, model in models.items()}
    em = {name: {task: round(100 * s["exact_match"], 1) for task, s in by_task.items()}
          for name, by_task in scores.items()}
    print(f"\nexact match, % (first {args.test_limit} test rows per task)")
    print(f"{'model':28} {'email':>7} {'ticket':>7}   drop vs specialist (email, ticket)")
    for name, by_task in em.items():
        drop = ""
        if name in merge_seconds:
            drop = "  ".join(f"{em[f'{t}_specialist'][t] - by_task[t]:+.1f}" for t in TASKS)
        print(f"{name:28} {by_task['email']:7.1f} {by_task['ticket']:7.1f}   {drop}")
    drops = {name: {t: round(em[f"{t}_specialist"][t] - em[name][t], 1) for t in TASKS} for name in merge_seconds}
    kept = {name: {t: round(em[name][t] / em[f"{t}_specialist"][t], 3) if em[f"{t}_specialist"][t] else None
                   for t in TASKS} for name in merge_seconds}  # the ratio: a merge's score / the specialist's
    print(json.dumps({
        "name": "merge_two_specialists", "unit": "exact match % on each task's test rows",
        "exact_match": em, "drop_vs_specialist": drops, "ratio_vs_specialist": kept,
        "specialist_on_other_task": {"email_specialist_on_ticket": em["email_specialist"]["ticket"],
                                     "ticket_specialist_on_email": em["ticket_specialist"]["email"]},
        "test_rows": args.test_limit, "training": trained, "merge_seconds": merge_seconds,
        "eval_seconds": {n: {t: s["eval_seconds"] for t, s in b.items()} for n, b in scores.items()},
    }))


if __name__ == "__main__":
    main()
