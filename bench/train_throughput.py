"""Training throughput: tuneforge's trainer vs TRL's SFTTrainer with its default settings, in one run.

Same model, same rows (a realistic mix of lengths, 20 to 600 tokens), same LoRA rank and targets, same
learning rate, batch size and number of training tokens. Prints real (non-padding) training tokens/s and
peak RSS of each, the held-out loss per assistant token of each result (measured the same way), and ends
with one JSON line.

The baseline keeps TRL's defaults (padded batches, loss on every token, gradient checkpointing) except
bf16, which TRL turns on by default: this CPU has no bf16 matmuls (about 46x slower), so both run fp32.

    .venv/bin/python bench/train_throughput.py [--tokens 24000] [--model smollm2-135m-instruct]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RANK, BATCH, LR, SEED = 16, 8, 1e-3, 0


def make_data(tokenizer, budget: int, out: Path) -> tuple[Path, Path, int]:
    """Rows from the bundled tasks, cut to a 20-600 token mix, until `budget` training tokens."""
    from tuneforge.data.render import encode_example

    pool = []
    for task in ("ticket_routing", "email_extraction"):
        for line in (ROOT / "examples" / task / "train.jsonl").read_text().splitlines():
            pool.append(json.loads(line))
    rng = random.Random(SEED)
    rng.shuffle(pool)
    rows, total = [], 0
    for row in pool:
        messages = row["messages"]
        if rng.random() < 0.3:  # short rows too: a bare question and answer, no system prompt
            messages = messages[1:]
            messages[0] = {**messages[0], "content": messages[0]["content"][: rng.randint(20, 200)]}
        n = len(encode_example(tokenizer, messages).input_ids)
        if 20 <= n <= 600:
            rows.append({"messages": messages})
            total += n
        if total >= budget:
            break
    held_out = [json.loads(line) for line in (ROOT / "examples/email_extraction/test.jsonl").read_text().splitlines()]
    train_path, eval_path = out / "train.jsonl", out / "eval.jsonl"
    train_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    eval_path.write_text("".join(json.dumps(r) + "\n" for r in held_out[:24]))
    return train_path, eval_path, total


def eval_loss(model, tokenizer, eval_path: Path) -> float:
    from tuneforge.data.render import encode_example
    from tuneforge.training.sft import evaluate_loss

    rows = [json.loads(line) for line in eval_path.read_text().splitlines()]
    return evaluate_loss(model, [encode_example(tokenizer, r["messages"]) for r in rows], capacity=512)


def run_ours(model_path: str, train_path: Path, eval_path: Path, out: Path) -> dict:
    from tuneforge.models.loading import load_tokenizer
    from tuneforge.training.config import TrainConfig
    from tuneforge.training.trainer import train

    cfg = TrainConfig(model=model_path, data=train_path, out=out / "ours", epochs=1, learning_rate=LR,
                      batch_size=BATCH, lora_rank=RANK, seed=SEED, checkpoint_every=10_000)
    result = train(cfg)
    from peft import PeftModel

    from tuneforge.models.loading import load_model

    model = PeftModel.from_pretrained(load_model(model_path), out / "ours")
    return {"seconds": result.metrics["elapsed_s"], "loss": eval_loss(model, load_tokenizer(model_path), eval_path)}


def run_trl(model_path: str, train_path: Path, eval_path: Path, out: Path) -> dict:
    from datasets import load_dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from tuneforge.models.loading import load_tokenizer

    args = SFTConfig(
        output_dir=str(out / "trl"), per_device_train_batch_size=BATCH, num_train_epochs=1, learning_rate=LR,
        lr_scheduler_type="cosine", warmup_steps=0.05, seed=SEED, bf16=False, report_to="none",
        save_strategy="no", logging_steps=5, use_cpu=True,
    )
    lora = LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model_path, args=args, train_dataset=load_dataset("json", data_files=str(train_path),
                         split="train"), peft_config=lora, processing_class=load_tokenizer(model_path))
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    model = trainer.model.eval()
    return {"seconds": seconds, "loss": eval_loss(model, load_tokenizer(model_path), eval_path)}


def worker(kind: str, model_path: str, train_path: Path, eval_path: Path, out: Path) -> None:
    result = (run_ours if kind == "ours" else run_trl)(model_path, train_path, eval_path, out)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tokens", type=int, default=24_000, help="training tokens (real, non-padding)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/tuneforge-bench-train"))
    parser.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.model, args.out / "train.jsonl", args.out / "eval.jsonl", args.out)

    from tuneforge.models import registry
    from tuneforge.models.loading import load_tokenizer

    model_path = registry.resolve(args.model).base
    import shutil

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    _, _, tokens = make_data(load_tokenizer(model_path), args.tokens, args.out)
    print(f"{tokens} training tokens; model {args.model}; LoRA r{RANK}; batch {BATCH}; lr {LR}")
    results = {}
    for kind in ("ours", "trl"):
        cmd = [sys.executable, __file__, "--worker", kind, "--model", model_path, "--out", str(args.out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{kind} failed:\n{proc.stderr[-3000:]}")
        results[kind] = r = json.loads(line[7:])
        r["tokens_per_s"] = tokens / r["seconds"]
        print(f"{kind:5s} {r['tokens_per_s']:7.1f} real tokens/s  {r['seconds']:7.1f} s  "
              f"peak RSS {r['peak_rss_gb']:.2f} GB  held-out loss {r['loss']:.4f}")
    ours, base = results["ours"], results["trl"]
    print(json.dumps({
        "name": "train_throughput", "unit": "real training tokens/s", "ours": round(ours["tokens_per_s"], 1),
        "baseline": round(base["tokens_per_s"], 1), "ratio": round(ours["tokens_per_s"] / base["tokens_per_s"], 2),
        "baseline_name": "trl.SFTTrainer defaults (padded batches), fp32", "tokens": tokens,
        "ours_peak_rss_gb": round(ours["peak_rss_gb"], 2), "baseline_peak_rss_gb": round(base["peak_rss_gb"], 2),
        "ours_eval_loss": round(ours["loss"], 4), "baseline_eval_loss": round(base["loss"], 4),
    }))


if __name__ == "__main__":
    main()
