"""SFT, then self-play preference pairs graded by exact match, then DPO: does DPO fix what a small SFT left wrong?

On the bundled email-extraction task (JSON answers), with SmolLM2-135M-Instruct:
1. SFT: LoRA on the first --sft-rows train rows, one epoch (`tuneforge train`), a budget that leaves errors;
2. self-play: --k answers per train prompt from the SFT model at --temperature (`tuneforge.evals.pairs.sample`),
   graded by `exact` against the row's answer; a right answer paired with a wrong one, or, where none is right,
   the row's own answer with the worst sample (`pairs_from_samples`);
3. DPO from the SFT adapter on those pairs (`tuneforge train --method dpo`);
4. with --control, the same SFT adapter trained on the pairs' preferred answers alone (plain SFT, same epochs and
   batch, the SFT learning rate): what the pairs teach without their rejected side;
5. the models on the held-out test split (`tuneforge evals run --grader exact --grader json`): exact match with
   its 95% interval per model, and the paired difference's interval (the same rows, so the paired interval is the
   one that says whether DPO helped).
Baseline: the SFT model it started from. Stages are cached under --out, so a rerun with other DPO settings only
trains and evaluates again. Last line: JSON.

    .venv/bin/python bench/dpo_self_play.py [--out DIR] [--sft-rows 96] [--beta 0.1] [--dpo-lr 1e-4] [--control]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from merge_tasks import tuneforge  # (bench/ is the script's folder: on sys.path)

ROOT = Path(__file__).resolve().parent.parent
TASK = ROOT / "examples" / "email_extraction"


def sft(args, out: Path) -> Path:
    adapter = out / "sft"
    if not (adapter / "manifest.json").exists():
        rows = (TASK / "train.jsonl").read_text().splitlines(keepends=True)[: args.sft_rows]
        (out / "sft-train.jsonl").write_text("".join(rows))
        seconds = tuneforge("train", "--model", args.model, "--data", str(out / "sft-train.jsonl"), "--out",
                            str(adapter), "--epochs", "1", "--batch-size", "4", "--learning-rate", str(args.sft_lr),
                            "--checkpoint-every", "100000", log=out / "sft.log")
        print(f"sft: {len(rows)} rows, {seconds} s", flush=True)
    return adapter


def self_play(args, adapter: Path, out: Path) -> dict:
    """The preference file, and what sampling found (pass rate per answer, prompts with mixed outcomes)."""
    path = out / f"pairs-k{args.k}-t{args.temperature}.jsonl"
    stats_path = path.with_suffix(".stats.json")
    if stats_path.exists():
        return json.loads(stats_path.read_text())
    from tuneforge.evals import graders, pairs
    from tuneforge.evals.task import answer_budget
    from tuneforge.inference.generate import Generator

    rows = [json.loads(line) for line in (TASK / "train.jsonl").read_text().splitlines()][: args.play_rows]
    grader = graders.make("exact")
    t0 = time.perf_counter()
    with Generator(str(adapter)) as gen:
        budget = answer_budget(gen.tokenizer, [r["messages"][-1]["content"] for r in rows])
        prompts = [{"messages": r["messages"][:-1]} for r in rows]
        samples = pairs.sample(gen, prompts, k=args.k, temperature=args.temperature, max_tokens=budget, seed=0)
    made, passed, mixed, from_reference = [], 0, 0, 0
    for row, drawn in zip(rows, samples):
        grades = pairs.grade(grader, row, drawn)
        right = sum(1 for g in grades if g.score == 1)
        passed += right
        mixed += 0 < right < len(grades)
        for pair in pairs.pairs_from_samples(row, drawn, grades, per_prompt=args.pairs_per_prompt):
            from_reference += pair.lineage["preferred"] == "reference"
            made.append(pair.row)
    path.write_text("".join(json.dumps(r) + "\n" for r in made))
    stats = {"prompts": len(rows), "k": args.k, "temperature": args.temperature,
             "pass_rate": round(passed / (len(rows) * args.k), 3), "mixed_prompts": mixed, "pairs": len(made),
             "pairs_preferring_the_reference": from_reference, "seconds": round(time.perf_counter() - t0, 1),
             "file": str(path)}
    stats_path.write_text(json.dumps(stats))
    print("self-play:", json.dumps(stats), flush=True)
    return stats


def dpo(args, adapter: Path, pairs_file: str, out: Path) -> tuple[Path, float, dict]:
    folder = out / (f"dpo-k{args.k}-t{args.temperature}-b{args.beta}-lr{args.dpo_lr}-e{args.dpo_epochs}"
                    f"-sft{args.sft_weight}-bs{args.dpo_batch}")
    seconds = 0.0
    if not (folder / "manifest.json").exists():
        seconds = tuneforge("train", "--model", str(adapter), "--data", pairs_file, "--out", str(folder), "--method",
                            "dpo", "--beta", str(args.beta), "--sft-weight", str(args.sft_weight), "--learning-rate",
                            str(args.dpo_lr), "--epochs",
                            str(args.dpo_epochs), "--batch-size", str(args.dpo_batch), "--checkpoint-every",
                            "100000", log=out / f"{folder.name}.log")
    metrics = json.loads((folder / "manifest.json").read_text())["metrics"]
    return folder, seconds, metrics


def control(args, adapter: Path, pairs_file: str, out: Path) -> Path:
    """The SFT adapter trained on the pairs' preferred answers as chat rows (SFT's loss, the same epochs and batch
    as DPO, the SFT learning rate): the baseline that says whether the rejected answers teach anything."""
    folder = out / f"control-k{args.k}-t{args.temperature}-lr{args.sft_lr}-e{args.dpo_epochs}-bs{args.dpo_batch}"
    if not (folder / "manifest.json").exists():
        pairs = [json.loads(line) for line in Path(pairs_file).read_text().splitlines()]
        rows = out / f"{folder.name}.jsonl"
        rows.write_text("".join(json.dumps({"messages": p["input"]["messages"] + p["preferred_output"]}) + "\n"
                                for p in pairs))
        tuneforge("train", "--model", str(adapter), "--data", str(rows), "--out", str(folder), "--learning-rate",
                  str(args.sft_lr), "--epochs", str(args.dpo_epochs), "--batch-size", str(args.dpo_batch),
                  "--checkpoint-every", "100000", log=out / f"{folder.name}.log")
    return folder


def evaluate(args, models: dict[str, Path], out: Path) -> dict:
    name = "-".join(p.name for m, p in models.items() if m != "sft")
    report = out / f"eval-{name}.json"
    if not report.exists():
        tuneforge("evals", "run", "--data", str(TASK / "test.jsonl"), "--limit", str(args.test_limit),
                  *(x for m, p in models.items() for x in ("--model", f"{m}={p}")), "--grader", "exact",
                  "--grader", "json", "--out", str(report), "--data-dir", str(out / "evals-data"),
                  log=out / f"eval-{name}.log")
    return json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--out", type=Path, help="the stages' folder (default /tmp/tuneforge-dpo-sftN, N: --sft-rows)")
    parser.add_argument("--sft-rows", type=int, default=96, help="first N train rows for the SFT stage")
    parser.add_argument("--sft-lr", type=float, default=1e-3)
    parser.add_argument("--play-rows", type=int, default=256, help="train prompts to sample answers to")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--pairs-per-prompt", type=int, default=1)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--dpo-lr", type=float, default=1e-4)
    parser.add_argument("--sft-weight", type=float, default=1.0, help="RPO: the SFT loss on preferred answers")
    parser.add_argument("--dpo-epochs", default="auto", help="a number, or auto (the trainer's choice)")
    parser.add_argument("--dpo-batch", type=int, default=4, help="pairs per step (the trainer's default: 4)")
    parser.add_argument("--control", action="store_true", help="also SFT on the preferred answers alone")
    parser.add_argument("--test-limit", type=int, default=100)
    args = parser.parse_args()
    args.out = args.out or Path(f"/tmp/tuneforge-dpo-sft{args.sft_rows}")
    args.out.mkdir(parents=True, exist_ok=True)

    sft_dir = sft(args, args.out)
    stats = self_play(args, sft_dir, args.out)
    dpo_dir, seconds, metrics = dpo(args, sft_dir, stats["file"], args.out)
    print(f"dpo: {seconds} s, final step: " + json.dumps({k: metrics.get(k) for k in (
        "train_loss", "reward_margin", "preference_accuracy", "chosen_logp", "rejected_logp")}), flush=True)
    models = {"sft": sft_dir, "dpo": dpo_dir}
    if args.control:
        models["sft_on_preferred"] = control(args, sft_dir, stats["file"], args.out)
    report = evaluate(args, models, args.out)
    result = {"name": "dpo_self_play", "model": args.model, "sft_rows": args.sft_rows, "self_play": stats,
              "beta": args.beta, "sft_weight": args.sft_weight, "dpo_lr": args.dpo_lr, "dpo_epochs": args.dpo_epochs,
              "dpo_batch": args.dpo_batch,
              "dpo_seconds": seconds,
              "models": {m["name"]: m["graders"] for m in report["models"]},
              "paired": [{k: p.get(k) for k in ("a", "b", "grader", "delta", "delta_ci_low", "delta_ci_high", "wins",
                                                "ties", "losses")} for p in report["pairwise"]],
              "test_rows": args.test_limit}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
