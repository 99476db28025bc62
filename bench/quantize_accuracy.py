"""What `--quantize` costs in answers: exact match of fine-tuned SmolLM2 adapters with float32, fp16 and int4
weights, on the bundled tasks' test rows, through the serving engine (the path `serve` and evals share).

For each task: exact match with a 95% bootstrap interval per mode, the paired difference from float32, and how
many answers are word for word the same as float32's. The adapters are any PEFT folders trained on those
tasks (`bench/merge_tasks.py` writes both; the demo writes the email one).

    .venv/bin/python bench/quantize_accuracy.py --adapter email_extraction=DIR --adapter ticket_routing=DIR \\
        [--rows 50]

The last line is JSON; `ratio` is the worst int4 exact match over float32's (1.0: nothing lost).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tuneforge.evals.exact import reference_answer, score
from tuneforge.evals.stats import mean_ci, paired_delta
from tuneforge.evals.task import answer_budget, load_test_rows
from tuneforge.inference.generate import Generator, Prompt, SamplingParams, drop_final_answer

ROOT = Path(__file__).resolve().parent.parent
MODES = [None, "fp16", "int4"]


def answers(adapter: str, rows: list[dict], quantize: str | None) -> list[str]:
    with Generator("smollm2-135m-instruct", adapter=adapter, quantize=quantize) as g:
        budget = answer_budget(g.tokenizer, [reference_answer(r) for r in rows])
        prompts = [Prompt(drop_final_answer(r["messages"]), r.get("tools")) for r in rows]
        return g.complete(prompts, SamplingParams(max_new_tokens=budget))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", action="append", required=True, help="TASK=ADAPTER_DIR")
    parser.add_argument("--rows", type=int, default=50)
    args = parser.parse_args()
    results, worst = {}, 1.0
    for item in args.adapter:
        task, adapter = item.split("=", 1)
        rows = load_test_rows(ROOT / "examples" / task / "test.jsonl", args.rows)
        refs = [reference_answer(r) for r in rows]
        outs = {m or "fp32": answers(adapter, rows, m) for m in MODES}
        per_row = {m: [float(score([o], [r]).exact_match) for o, r in zip(out, refs)] for m, out in outs.items()}
        results[task] = {}
        for m, out in outs.items():
            ci = mean_ci(per_row[m])
            low, high = ci["ci_low"], ci["ci_high"]
            delta = paired_delta(per_row["fp32"], per_row[m])
            same = sum(a == b for a, b in zip(out, outs["fp32"]))
            results[task][m] = {"exact_match": round(ci["mean"], 3), "ci": [low, high],
                                "delta_vs_fp32": [round(delta[k], 3) for k in ("delta", "ci_low", "ci_high")],
                                "same_answer_as_fp32": f"{same}/{len(rows)}"}
            print(f"{task:18s} {m:5s} exact {results[task][m]['exact_match']:.3f} [{low:.2f}, {high:.2f}]  "
                  f"same as fp32 {same}/{len(rows)}", flush=True)
        if results[task]["fp32"]["exact_match"]:
            worst = min(worst, results[task]["int4"]["exact_match"] / results[task]["fp32"]["exact_match"])
    print(json.dumps({"name": "quantize_accuracy", "unit": "exact match", "rows": args.rows,
                      "ratio": round(worst, 3), "baseline_name": "float32 weights", "results": results}))


if __name__ == "__main__":
    main()
