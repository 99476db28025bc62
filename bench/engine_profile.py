"""Where a decode step of the serving engine goes: model body (attention, MLP, the rest), the LM head, sampling
and text, the KV-cache bookkeeping, and Python around them, at 1 and 16 concurrent sequences.

The engine (`tuneforge/inference/engine.py`) runs SmolLM2-135M-Instruct (fp32, CPU) on the base model alone;
`n` requests of `--tokens` greedy tokens each are submitted together, so every decode step carries all `n`.
Its methods and the model's modules are wrapped with timers (forward hooks on the attention and MLP blocks and
on the LM head; wall time of `_forward`, `_advance`, `_keep` and the step itself), and the totals per decode step
are printed as a table. Timers add a little overhead of their own (a `perf_counter` pair per hooked module).

    TUNEFORGE_MODEL_CACHE=$PWD/.cache/models .venv/bin/python bench/engine_profile.py [--tokens 64] [--batch 1 16]

The last line is JSON: milliseconds per decode step by part, per batch size.
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
    for layer in model.model.layers:
        timers.hook(layer.self_attn, "attention")
        timers.hook(layer.mlp, "mlp")
    timers.hook(model.lm_head, "lm_head")
    timers.wrap(engine, "_forward", "forward")
    timers.wrap(engine, "_advance", "advance")
    timers.wrap(engine, "_keep", "keep")
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

    model_parts = sum(per_step(k) for k in ("attention", "mlp", "lm_head"))
    return {
        "decode step": per_step("step"),
        "  model forward": per_step("forward"),
        "    attention x 30 layers": per_step("attention"),
        "    mlp x 30 layers": per_step("mlp"),
        "    lm_head": per_step("lm_head"),
        "    rest of the model (norms, embeddings, rotary, LoRA rows)": per_step("forward") - model_parts,
        "  sampling, text, stop checks (_advance)": per_step("advance"),
        "  cache and mask bookkeeping, Python around them": per_step("step") - per_step("forward")
        - per_step("advance") - per_step("keep"),
        "  dropping finished rows (_keep)": per_step("keep"),
        "prefill of all requests, ms in all": t["prefill:step"] * 1000,
        "tokens per second (wall, prefill included)": n * tokens / wall,
        "decode steps": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    folder = str(registry.materialize(MODEL))
    results = {}
    for n in args.batch:
        engine = Engine(folder, max_batch=max(args.batch))
        profile(engine, 1, 4)  # warm up (first-call allocations)
        engine.close()
        engine = Engine(folder, max_batch=max(args.batch))
        results[n] = profile(engine, n, args.tokens)
        engine.close()
    parts = list(results[args.batch[0]])
    print(f"{'ms per decode step':60s}" + "".join(f"{f'batch {n}':>12s}" for n in args.batch))
    for part in parts:
        print(f"{part:60s}" + "".join(f"{results[n][part]:12.2f}" for n in args.batch))
    print(json.dumps({"bench": "engine_profile", "torch_threads": torch.get_num_threads(),
                      "results": {str(n): {k.strip(): round(v, 3) for k, v in r.items()} for n, r in results.items()}}))


if __name__ == "__main__":
    main()
