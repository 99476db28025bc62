"""DPO training throughput: tuneforge's `--method dpo` vs TRL's DPOTrainer with its default settings, in one run.

Same model, same pairs, same LoRA (r16, alpha 32, all linear layers, no dropout), learning rate 1e-4 with cosine
decay and 5% warmup, batch 8, one epoch, beta 0.1, seed 0. The pairs come from the bundled email_extraction task:
the prompt is a training row's conversation up to the answer, the preferred answer is its reference and the
non-preferred one the same JSON with one field corrupted (another `issue`, another digit in the order id, or
another catalogue product: chosen by a seeded rng), so no generation is needed and both sides see the same pairs.

Prints pairs/s and peak RSS of each side (each in its own process), the tokens each pair costs, and the held-out
preference accuracy and DPO loss of each result on pairs made the same way from the task's test rows, measured
the same way for both (our pair rows; the reference is the base with the adapter switched off). Ends with one
JSON line.

Timing: ours is the run's `elapsed_s` (the reference pass before step 1 and the steps; not model or data loading,
nor writing the adapter); TRL's is `trainer.train()` (it tokenizes the pairs and loads the model in its
constructor). The baseline keeps TRL's defaults (gradient checkpointing, max_length 1024, padded batches of
prompt+chosen and prompt+rejected rows, the reference forward at every step) except bf16, which TRL turns on by
default: this CPU has no bf16 matmuls (about 46x slower), so both run fp32. TRL is given the number of warmup
steps our trainer computes (round(0.05 x steps)): as a ratio, transformers rounds it up, and with a few steps the
whole first step would run at learning rate 0 (with one step, nothing is learned at all).

    .venv/bin/python bench/dpo_throughput.py [--pairs 32] [--held-out 24] [--model smollm2-135m-instruct]
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
TASK = ROOT / "examples" / "email_extraction"
RANK, BATCH, LR, BETA, WARMUP, SEED = 16, 8, 1e-4, 0.1, 0.05, 0
ISSUES = ("damaged", "late_delivery", "wrong_item", "refund_request", "billing", "other")


def corrupt(answer: str, products: list[str], rng: random.Random) -> str:
    """The reference JSON answer with one field made wrong (issue, order id or product), keys in the same order."""
    fields = json.loads(answer)
    key = rng.choice(("issue", "order_id", "product"))
    if key == "issue":
        fields["issue"] = rng.choice([i for i in ISSUES if i != fields["issue"]])
    elif key == "order_id":
        oid = fields["order_id"]
        at = rng.choice([i for i, c in enumerate(oid) if c.isdigit()])
        fields["order_id"] = oid[:at] + rng.choice([d for d in "0123456789" if d != oid[at]]) + oid[at + 1 :]
    else:
        fields["product"] = rng.choice([p for p in products if p != fields["product"]])
    return json.dumps(fields, ensure_ascii=False)


def make_pairs(path: Path, n: int, products: list[str], seed: int) -> list[tuple[list[dict], str, str]]:
    """(prompt messages, chosen, rejected) for the first `n` rows of a chat file."""
    rng = random.Random(seed)
    rows = [json.loads(line) for line in path.read_text().splitlines()[:n]]
    return [(r["messages"][:-1], r["messages"][-1]["content"], corrupt(r["messages"][-1]["content"], products, rng))
            for r in rows]


def write_data(n_pairs: int, n_held_out: int, out: Path) -> None:
    """OpenAI preference rows (ours, and the held-out pairs) and TRL's conversational rows, of the same pairs."""
    train_rows = [json.loads(line) for line in (TASK / "train.jsonl").read_text().splitlines()]
    products = sorted({json.loads(r["messages"][-1]["content"])["product"] for r in train_rows})
    if n_pairs > len(train_rows):
        sys.exit(f"--pairs {n_pairs}: the task has {len(train_rows)} training rows")

    def openai(pairs) -> str:
        return "".join(json.dumps({"input": {"messages": p}, "preferred_output": [{"role": "assistant", "content": c}],
                                   "non_preferred_output": [{"role": "assistant", "content": r}]}) + "\n"
                       for p, c, r in pairs)

    train = make_pairs(TASK / "train.jsonl", n_pairs, products, SEED)
    (out / "pairs.jsonl").write_text(openai(train))
    (out / "trl.jsonl").write_text("".join(json.dumps({"prompt": p, "chosen": [{"role": "assistant", "content": c}],
                                                       "rejected": [{"role": "assistant", "content": r}]}) + "\n"
                                           for p, c, r in train))
    (out / "held_out.jsonl").write_text(openai(make_pairs(TASK / "test.jsonl", n_held_out, products, SEED + 1)))


def run_ours(model_path: str, out: Path) -> dict:
    from tuneforge.training.config import TrainConfig
    from tuneforge.training.trainer import train

    cfg = TrainConfig(model=model_path, data=out / "pairs.jsonl", out=out / "ours", method="dpo", weights="lora",
                      batch_size=BATCH, epochs=1, learning_rate=LR, warmup_ratio=WARMUP, lora_rank=RANK,
                      lora_alpha=2 * RANK, lora_dropout=0.0, beta=BETA, sft_weight=0.0, seed=SEED,
                      checkpoint_every=10**6)
    t0 = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - t0
    m = result.metrics
    return {"seconds": m["elapsed_s"], "train_call_s": round(wall, 2), "steps": result.steps,
            "tokens": result.trained_tokens, "forward_tokens": result.trained_tokens, "adapter": str(out / "ours"),
            "train_loss": m["train_loss"], "train_pref_acc": m["preference_accuracy"]}


def run_trl(model_path: str, out: Path) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from tuneforge.models.loading import load_tokenizer

    rows = [json.loads(line) for line in (out / "trl.jsonl").read_text().splitlines()]
    warmup = round(WARMUP * -(-len(rows) // BATCH))  # our trainer's count (transformers would round a ratio up)
    args = DPOConfig(
        output_dir=str(out / "trl"), per_device_train_batch_size=BATCH, num_train_epochs=1, learning_rate=LR,
        lr_scheduler_type="cosine", warmup_steps=warmup, beta=BETA, bf16=False, use_cpu=True, report_to="none",
        save_strategy="no", seed=SEED, logging_steps=1,
    )
    lora = LoraConfig(r=RANK, lora_alpha=2 * RANK, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model_path, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=load_tokenizer(model_path), peft_config=lora)
    batches: list[tuple[int, int]] = []  # (padded tokens, real tokens) of each batch one forward computes
    collate = trainer.data_collator

    def counting(features):
        batch = collate(features)
        batches.append((batch["input_ids"].numel(), int(batch["attention_mask"].sum())))
        return batch

    trainer.data_collator = counting
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    trainer.save_model(str(out / "trl"))
    logs = [x for x in trainer.state.log_history if "loss" in x]
    return {"seconds": round(seconds, 2), "steps": trainer.state.global_step, "adapter": str(out / "trl"),
            "forward_tokens": sum(b[0] for b in batches), "real_tokens": sum(b[1] for b in batches),
            "train_loss": logs[-1]["loss"] if logs else None,
            "train_pref_acc": logs[-1].get("rewards/accuracies") if logs else None}


def run_eval(model_path: str, adapter: Path, out: Path) -> dict:
    """Held-out preference accuracy and DPO loss of an adapter, against the base (the adapter switched off)."""
    import torch
    from peft import PeftModel

    from tuneforge.data.preference import encode_pair
    from tuneforge.models.loading import load_model, load_tokenizer
    from tuneforge.training.dpo import dpo_loss
    from tuneforge.training.pair_rows import collate_pairs, pair_logps

    tokenizer = load_tokenizer(model_path)
    pairs = [encode_pair(tokenizer, json.loads(line)) for line in (out / "held_out.jsonl").read_text().splitlines()]
    model = PeftModel.from_pretrained(load_model(model_path), adapter).eval()

    def logps() -> torch.Tensor:
        return torch.cat([pair_logps(model, collate_pairs([p]), "cpu") for p in pairs])

    with torch.no_grad():
        policy = logps()
        with model.disable_adapter():
            reference = logps()
    losses, stats = dpo_loss(policy, reference, BETA)
    return {"pref_acc": float(stats[:, 3].mean()), "loss": float(losses.mean()),
            "margin": float((stats[:, 1] - stats[:, 2]).mean())}


def worker(kind: str, model_path: str, out: Path, adapter: Path | None) -> None:
    if kind == "eval":
        result = run_eval(model_path, adapter, out)
    else:
        result = (run_ours if kind == "ours" else run_trl)(model_path, out)
        result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("RESULT " + json.dumps(result))


def child(kind: str, model_path: str, out: Path, *extra: str) -> dict:
    """Run a worker in its own process; its stderr (progress bars, warnings) is kept in `out`/KIND.log."""
    argv = ["--worker", kind, "--model", model_path, "--out", str(out), *extra]
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    with open(out / f"{kind}.log", "a") as f:
        f.write(proc.stderr)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--pairs", type=int, default=32, help="training pairs (from the task's train.jsonl)")
    parser.add_argument("--held-out", type=int, default=24, help="held-out pairs (from the task's test.jsonl)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/tuneforge-bench-dpo"))
    parser.add_argument("--worker", choices=["ours", "trl", "eval"], help=argparse.SUPPRESS)
    parser.add_argument("--adapter", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.model, args.out, args.adapter)

    import shutil

    from tuneforge.models import registry

    model_path = registry.resolve(args.model).base
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    write_data(args.pairs, args.held_out, args.out)
    print(f"{args.pairs} pairs ({args.held_out} held out); model {args.model}; LoRA r{RANK}; batch {BATCH}; "
          f"lr {LR}; beta {BETA}")
    results = {}
    for kind in ("ours", "trl"):
        r = results[kind] = child(kind, model_path, args.out)
        r.update(child("eval", model_path, args.out, "--adapter", r["adapter"]))
        r["pairs_per_s"] = args.pairs / r["seconds"]
        r["tokens_per_pair"] = r["forward_tokens"] / args.pairs
        print(f"{kind:5s} {r['pairs_per_s']:6.3f} pairs/s  {r['seconds']:7.1f} s  {r['steps']} steps  "
              f"peak RSS {r['peak_rss_gb']:.2f} GB  {r['tokens_per_pair']:.0f} tokens/pair per forward  "
              f"last step's loss {r['train_loss']}  held-out pref acc {r['pref_acc']:.3f}  loss {r['loss']:.4f}  "
              f"margin {r['margin']:.4f}")
    ours, base = results["ours"], results["trl"]
    print(f"TRL: {base['real_tokens'] / args.pairs:.0f} real (non-padding) tokens/pair per forward, and two forwards "
          f"a step (policy, reference); ours: {ours['train_call_s']:.1f} s for the whole train() call")
    print(json.dumps({
        "name": "dpo_throughput", "unit": "pairs/s", "ours": round(ours["pairs_per_s"], 4),
        "baseline": round(base["pairs_per_s"], 4), "ratio": round(ours["pairs_per_s"] / base["pairs_per_s"], 2),
        "baseline_name": "trl.DPOTrainer defaults (padded chosen/rejected rows, reference each step), fp32",
        "pairs": args.pairs, "ours_peak_rss_gb": round(ours["peak_rss_gb"], 2),
        "baseline_peak_rss_gb": round(base["peak_rss_gb"], 2), "ours_eval_pref_acc": round(ours["pref_acc"], 4),
        "baseline_eval_pref_acc": round(base["pref_acc"], 4), "ours_eval_loss": round(ours["loss"], 4),
        "baseline_eval_loss": round(base["loss"], 4), "ours_tokens_per_pair": round(ours["tokens_per_pair"], 1),
        "baseline_tokens_per_pair": round(base["tokens_per_pair"], 1),
        "baseline_real_tokens_per_pair": round(base["real_tokens"] / args.pairs, 1),
    }))


if __name__ == "__main__":
    main()
