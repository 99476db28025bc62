"""Where a decode step of the serving engine goes: the linear layers, the rest of the model (norms, rotary,
KV cache, attention scores), the LM head, sampling and text, and Python around them, at 1 and 16 sequences.

The engine (`tuneforge/inference/engine.py`) runs SmolLM2-135M-Instruct (CPU) on the base model alone, twice
in one run: with its running batch on the model's own forward over a left-padded transformers cache
(`padded`: how every model ran before, and how models the slot decoder does not cover still run), and on the
slot decoder (`slots`). `--quantize` adds a third column with fp16 or int4 weights. `n` requests of `--tokens`
greedy tokens each are submitted together, so every decode step carries all `n`. Forward hooks time the
projections, the MLP blocks and the LM head; wrappers time the batch's step, `_advance` and `_remove`.
Timers add a little overhead of their own (a `perf_counter` pair per hooked module).

    .venv/bin/python bench/engine_profile.py [--tokens 64] [--batch 1 16] [--quantize int4]

The last line is JSON: milliseconds per decode step by part, per engine and batch size.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import defaultdict

import torch

from tuneforge.data.render import encode_prompt
from tuneforge.inference.engine import Delta, Engine, Params, Request
from tuneforge.models import registry

MODEL = "smollm2-135m-instruct"


class Timers:
    """Seconds spent per part, split by phase: what runs inside `_prefill` counts as prefill, inside
    `_decode_step` as decode."""

    def __init__(self):
        self.phase = "other"
        self.total: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)

    def wrap(self, obj, name: str, key: str, phase: str | None = None) -> None:
        fn = getattr(obj, name)

        def timed(*args, **kwargs):
            outer = self.phase
            if phase is not None:
                self.phase = phase
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total[f"{self.phase}:{key}"] += time.perf_counter() - t
                self.count[f"{self.phase}:{key}"] += 1
                self.phase = outer

        setattr(obj, name, timed)

    def hook(self, module: torch.nn.Module, key: str) -> None:
        started: list[float] = []
        module.register_forward_pre_hook(lambda *_: started.append(time.perf_counter()))

        def post(*_):
            self.total[f"{self.phase}:{key}"] += time.perf_counter() - started.pop()

        module.register_forward_hook(post)


def profile(engine: Engine, n: int, tokens: int) -> dict[str, float]:
    timers = Timers()
    model = engine.model
    for layer in model.model.layers:  # the layers each engine calls: the slot decoder joins q/k/v and gate/up
        attn, mlp = layer.self_attn, layer.mlp
        projections = ["joined_qkv", "o_proj"] if hasattr(attn, "joined_qkv") else ["q_proj", "k_proj", "v_proj",
                                                                                     "o_proj"]
        for proj in projections:
            timers.hook(getattr(attn, proj), "projections")
        for part in ["joined_gate_up", "down_proj"] if hasattr(mlp, "joined_gate_up") else ["gate_proj", "up_proj",
                                                                                           "down_proj"]:
            timers.hook(getattr(mlp, part), "mlp")
    timers.hook(model.lm_head, "lm_head")
    timers.wrap(engine.batch, "step", "forward")
    timers.wrap(engine, "_advance", "advance")
    timers.wrap(engine, "_remove", "remove")
    timers.wrap(engine, "_decode_step", "step", phase="decode")
    timers.wrap(engine, "_prefill", "step", phase="prefill")
    done = threading.Event()
    left = [n]

    def on_output(delta: Delta) -> None:
        if delta.finish_reason:
            left[0] -= 1
            if not left[0]:
                done.set()

    prompt = encode_prompt(engine.tokenizer, [{"role": "user", "content": "Write a long story about the sea."}])
    engine.stop_ids = set()  # every request generates all its tokens: steps of a known batch size
    started = time.perf_counter()
    for _ in range(n):
        engine.submit(Request(list(prompt), Params(max_tokens=tokens, temperature=0), on_output))
    done.wait(600)
    wall = time.perf_counter() - started
    t = timers.total
    steps = max(timers.count["decode:step"], 1)

    def per_step(key: str) -> float:
        return t[f"decode:{key}"] / steps * 1000

    model_parts = sum(per_step(k) for k in ("projections", "mlp", "lm_head"))
    return {
        "decode step": per_step("step"),
        "  model forward, cache included": per_step("forward"),
        "    q/k/v/o projections x 30 layers": per_step("projections"),
        "    mlp matrices x 30 layers": per_step("mlp"),
        "    lm_head": per_step("lm_head"),
        "    the rest (norms, rotary, KV cache, attention scores)": per_step("forward") - model_parts,
        "  sampling, text, stop checks (_advance)": per_step("advance"),
        "  Python around them": max(0.0, per_step("step") - per_step("forward") - per_step("advance")
                                    - per_step("remove")),
        "  dropping finished rows (_remove)": per_step("remove"),
        "prefill of all requests, ms in all": t["prefill:step"] * 1000,
        "tokens per second (wall, prefill included)": n * tokens / wall,
        "decode steps": steps,
    }


def engine(folder: str, kind: str, max_batch: int) -> Engine:
    """An engine on the slot decoder, or (`padded`) on the model's own forward; `kind` may add `+fp16`."""
    path, _, quantize = kind.partition("+")
    if path == "padded":
        from tuneforge.inference import decoder

        real, decoder.supported = decoder.supported, lambda model: "profiled"
        try:
            return Engine(folder, max_batch=max_batch)
        finally:
            decoder.supported = real
    return Engine(folder, max_batch=max_batch, quantize=quantize or None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--quantize", choices=["fp16", "int4"])
    args = parser.parse_args()
    folder = str(registry.materialize(MODEL))
    kinds = ["padded", "slots"] + ([f"slots+{args.quantize}"] if args.quantize else [])
    results = {}
    for kind in kinds:
        for n in args.batch:
            e = engine(folder, kind, max(args.batch))
            profile(e, 1, 4)  # warm up (first-call allocations)
            e.close()
            e = engine(folder, kind, max(args.batch))
            results[f"{kind} x{n}"] = profile(e, n, args.tokens)
            e.close()
    columns = list(results)
    parts = list(results[columns[0]])
    print(f"{'ms per decode step':58s}" + "".join(f"{c:>14s}" for c in columns))
    for part in parts:
        print(f"{part:58s}" + "".join(f"{results[c][part]:14.2f}" for c in columns))
    print(json.dumps({"bench": "engine_profile", "torch_threads": torch.get_num_threads(),
                      "results": {c: {k.strip(): round(v, 3) for k, v in r.items()} for c, r in results.items()}}))


if __name__ == "__main__":
    main()
