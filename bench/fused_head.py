"""The fused output layer + log-softmax (training/fused_head.py) against the usual logits path, in one run.

Same model (SmolLM2-135M-Instruct with a LoRA adapter, as training makes it), same packed rows (the email task's
first 64 training rows, 8 steps of 8), interleaved runs of each path's forward and backward. Prints the time of
each, and the memory each keeps for backward (bytes of every saved tensor that is not a weight, summed over a step:
what decides peak memory), and ends with one JSON line.

    .venv/bin/python bench/fused_head.py [--rows 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from peft import LoraConfig, get_peft_model

    from tuneforge.data.render import encode_example
    from tuneforge.models import registry
    from tuneforge.models.loading import load_model, load_tokenizer
    from tuneforge.training import fused_head, plan
    from tuneforge.training.sft import loss_sum

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    path = str(registry.materialize(args.model))
    tokenizer = load_tokenizer(path)
    model = get_peft_model(load_model(path), LoraConfig(r=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    lines = (ROOT / "examples/email_extraction/train.jsonl").read_text().splitlines()[: args.rows]
    examples = [encode_example(tokenizer, json.loads(line)["messages"]) for line in lines]
    steps = [plan.build_rows(examples[i : i + 8], 512) for i in range(0, len(examples), 8)]
    weights = {p.data_ptr() for p in model.parameters()}
    fused = fused_head.frozen_head

    def run(use_fused: bool) -> tuple[float, int]:
        fused_head.frozen_head = fused if use_fused else (lambda m: None)
        kept = [0]

        def pack(t):
            if t.data_ptr() not in weights:
                kept[0] += t.numel() * t.element_size()
            return t

        t0 = time.perf_counter()
        most = 0
        for rows in steps:
            kept[0] = 0
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                losses = [loss_sum(model, row) for row in rows]
            most = max(most, kept[0])
            sum(losses).backward()
            model.zero_grad()
        return time.perf_counter() - t0, most

    run(True), run(False)  # warm-up
    times: dict[bool, list[float]] = {True: [], False: []}
    kept = {}
    for _ in range(args.repeats):
        for use_fused in (True, False):
            seconds, kept[use_fused] = run(use_fused)
            times[use_fused].append(seconds)
    ours, base = min(times[True]), min(times[False])
    print(f"{len(steps)} steps, {sum(e.num_trained for e in examples)} trained tokens of "
          f"{sum(len(e.input_ids) for e in examples)}")
    print(f"fused: {ours:.2f} s (runs {[round(t, 2) for t in times[True]]}), kept for backward "
          f"{kept[True] / 2**20:.0f} MB per step at most")
    print(f"logits path: {base:.2f} s (runs {[round(t, 2) for t in times[False]]}), kept "
          f"{kept[False] / 2**20:.0f} MB")
    print(json.dumps({"name": "fused_head", "ours_s": round(ours, 2), "baseline_s": round(base, 2),
                      "ratio": round(base / ours, 3), "ours_kept_mb": round(kept[True] / 2**20),
                      "baseline_kept_mb": round(kept[False] / 2**20),
                      "kept_ratio": round(kept[True] / kept[False], 3)}))


if __name__ == "__main__":
    main()
