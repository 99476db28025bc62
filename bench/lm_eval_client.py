"""lm-evaluation-harness as an outside client of tuneforge's server, checked against lm-eval's own HF backend.

Runs two small offline tasks (made here as local JSONL: a 4-way multiple-choice arithmetic task scored by
log-likelihood, and a generate_until task scored by exact match) twice:
- through `local-completions` against `tuneforge serve` (`/v1/completions` with `echo` + `logprobs` for the
  log-likelihoods, plain completions with `stop` for generation), as any outside user would;
- with lm-eval's `hf` backend loading the same model folder in-process (the baseline).
The scores must agree (same model, same tokens); the last line is JSON with both and `ratio` (ours / hf
multiple-choice accuracy, 1.0 when they agree).

Needs lm-eval: `.venv/bin/pip install "lm-eval[api]>=0.4.13"` (not a tuneforge dependency).

    .venv/bin/python bench/lm_eval_client.py [--limit 40]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MC_TASK = """task: tf_arith_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/mc.jsonl
output_type: multiple_choice
test_split: test
doc_to_text: "Question: What is {{{{a}}}} plus {{{{b}}}}?\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - {{metric: acc, aggregation: mean, higher_is_better: true}}
metadata: {{version: 1.0}}
"""
GEN_TASK = """task: tf_arith_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/gen.jsonl
output_type: generate_until
test_split: test
doc_to_text: "{{{{a}}}} + {{{{b}}}} = {{{{answer}}}}. {{{{c}}}} + {{{{d}}}} ="
doc_to_target: "{{{{target}}}}"
generation_kwargs: {{until: ["\\n", "."], max_gen_toks: 8, do_sample: false, temperature: 0.0}}
filter_list:
  - name: number
    filter: [{{function: regex, regex_pattern: "(-?[0-9]+)"}}, {{function: take_first}}]
metric_list:
  - {{metric: exact_match, aggregation: mean, higher_is_better: true}}
metadata: {{version: 1.0}}
"""


def make_tasks(root: Path, n: int, seed: int = 7) -> Path:
    rng = random.Random(seed)
    data, tasks = root / "data", root / "tasks"
    data.mkdir(parents=True)
    tasks.mkdir()
    mc, gen = [], []
    for _ in range(n):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        choices = sorted({a + b, a + b + rng.randint(1, 5), abs(a + b - rng.randint(1, 5)), a * b} | {a + b + 10})[:4]
        if a + b not in choices:
            choices[-1] = a + b
        mc.append({"a": a, "b": b, "choices": [str(c) for c in choices], "label": choices.index(a + b)})
        c, d = rng.randint(1, 9), rng.randint(1, 9)
        gen.append({"a": a, "b": b, "answer": a + b, "c": c, "d": d, "target": str(c + d)})
    (data / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mc))
    (data / "gen.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gen))
    (tasks / "tf_arith_mc.yaml").write_text(MC_TASK.format(data=data))
    (tasks / "tf_arith_gen.yaml").write_text(GEN_TASK.format(data=data))
    return tasks


def run_lm_eval(model_type: str, model_args: str, tasks: Path, out: Path, env: dict, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "lm_eval", "--model", model_type, "--model_args", model_args, "--include_path",
           str(tasks), "--tasks", "tf_arith_mc,tf_arith_gen", "--output_path", str(out), *extra]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    seconds = time.perf_counter() - start
    results = json.loads(max(out.rglob("results_*.json")).read_text())["results"]
    return {"mc_acc": results["tf_arith_mc"]["acc,none"],
            "gen_exact_match": results["tf_arith_gen"]["exact_match,number"], "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=40, help="Items per task.")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise SystemExit('needs lm-eval: .venv/bin/pip install "lm-eval[api]>=0.4.13"') from None
    from tuneforge.models import registry

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from serve_throughput import start_platform

    root = Path(tempfile.mkdtemp(prefix="tuneforge-lm-eval-"))
    atexit.register(shutil.rmtree, root, True)  # hundreds of MB per run
    tasks = make_tasks(root, args.limit)
    folder = str(registry.materialize(args.model))
    env = {**os.environ, "TUNEFORGE_DATA_DIR": str(root / "tf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(root / "hf")}
    server, url, key = start_platform(env, workers=0)
    try:
        model_args = (f"model={args.model},base_url={url}/v1/completions,tokenizer_backend=huggingface,"
                      f"tokenizer={folder},num_concurrent=8,max_retries=1")
        ours = run_lm_eval("local-completions", model_args, tasks, root / "out-ours", {**env, "OPENAI_API_KEY": key},
                           [])
    finally:
        server.terminate()
        server.wait()
    theirs = run_lm_eval("hf", f"pretrained={folder},dtype=float32", tasks, root / "out-hf", env,
                         ["--batch_size", "8", "--device", "cpu"])
    print(f"tuneforge server via local-completions: {ours}")
    print(f"lm-eval hf backend (in-process):        {theirs}")
    print(json.dumps({
        "name": "lm_eval_client", "unit": "multiple-choice accuracy", "ours": ours["mc_acc"],
        "baseline": theirs["mc_acc"],
        "ratio": round(ours["mc_acc"] / theirs["mc_acc"], 3) if theirs["mc_acc"] else None,
        "baseline_name": "lm-eval hf backend on the same model folder", "items_per_task": args.limit,
        "ours_detail": ours, "baseline_detail": theirs,
    }))


if __name__ == "__main__":
    main()
