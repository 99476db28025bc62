"""The stage processes of bench/gpu_check.py: what imports torch, transformers, TRL and the project.

Each entry prints one `RESULT {json}` line for the orchestrator (which owns the timeouts and the output).
"""

from __future__ import annotations

import importlib.util
import json
import platform
import resource
import shutil
import time
from pathlib import Path

from gpu_check import SHAPES, TOKENIZER_FILES, TRAIN_TOKENS
from train_throughput import make_data

RANK, BATCH, LR, SEED = 16, 8, 1e-3, 0  # bench/train_throughput.py's settings


def run_worker(argv: list[str], work: Path, device: str) -> None:
    kind, *rest = argv
    result = {"env": env, "model": make_model, "train": train, "equal": equal, "profile": profile}[kind](
        work, device, *rest)
    print("RESULT " + json.dumps(result), flush=True)


def env(work: Path, device: str) -> dict:
    """Versions, the GPU, and which fused attention kernels could be used."""
    import accelerate
    import peft
    import torch
    import transformers
    import trl

    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "transformers": transformers.__version__, "peft": peft.__version__, "trl": trl.__version__,
           "accelerate": accelerate.__version__,
           **{name: importlib.util.find_spec(name) is not None for name in ("flash_attn", "kernels", "liger_kernel")}}
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda, but torch sees no CUDA device (use --device cpu to check the script)")
        props = torch.cuda.get_device_properties(0)
        out.update(gpu=props.name, gpu_gb=round(props.total_memory / 2**30, 1), bf16=torch.cuda.is_bf16_supported())
    return out


def make_model(work: Path, device: str, shape: str, tokenizer: str) -> dict:
    """A random-init model of `shape` with SmolLM2's tokenizer, and the training rows for it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tuneforge.models.loading import load_tokenizer

    t0 = time.perf_counter()
    src, out = Path(tokenizer), work / "models" / shape
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    cfg = {**json.loads((src / "config.json").read_text()), **SHAPES[shape], "dtype": str(dtype).split(".")[1]}
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    torch.manual_seed(SEED)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(out), dtype=dtype)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    del model
    made = time.perf_counter() - t0
    data = work / "data" / shape
    data.mkdir(parents=True, exist_ok=True)
    _, _, tokens = make_data(load_tokenizer(str(out)), TRAIN_TOKENS[shape], data)
    (data / "tokens.json").write_text(json.dumps(tokens))
    return {"shape": shape, "params": params, "dtype": cfg["dtype"], "made_s": round(made, 1), "train_tokens": tokens}


def train(work: Path, device: str, side: str, shape: str) -> dict:
    """One side of the training comparison on the rows `make_model` wrote: time, peak memory, settings."""
    import torch

    model, data = str(work / "models" / shape), work / "data" / shape
    tokens = json.loads((data / "tokens.json").read_text())
    run = {"ours": _ours, "ours_checkpointed": _ours_checkpointed, "trl": _trl}[side]
    result = run(model, data / "train.jsonl", work / "runs" / shape / side, device)
    if device == "cuda":
        torch.cuda.synchronize()
        peak, memory = torch.cuda.max_memory_allocated() / 2**30, "gpu"
    else:
        peak, memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "rss"
    return {**result, "tokens": tokens, "peak_gb": round(peak, 2), "memory": memory}


def equal(work: Path, device: str, shape: str) -> dict:
    """Packed rows' loss and LoRA gradients through training/varlen.py (the fused kernel on CUDA) vs the masked
    SDPA path, plain rows and shared-prefix rows, on a model of `shape` in the dtype training uses there; and
    each path's forward+backward time (rows of ~4k tokens on CUDA). Then training/fused_head.py against the
    logits path (with peak memory), and DPO's pair rows through varlen against the masked batch."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tuneforge.data.render import IGNORE, Encoded
    from tuneforge.models.loading import compute_dtype, load_model
    from tuneforge.training import plan, varlen

    torch.manual_seed(SEED)
    dtype = compute_dtype(device)
    model = load_model(str(work / "models" / shape), dtype=dtype, device=device)
    model = get_peft_model(model, LoraConfig(r=RANK, target_modules="all-linear", init_lora_weights=False))
    g = torch.Generator().manual_seed(SEED)
    count, longest, prefix = (14, 600, 256) if device == "cuda" else (4, 120, 40)  # a quick check on a CPU
    plain = []
    for n in torch.randint(20, longest, (count,), generator=g).tolist():
        ids = torch.randint(0, 1000, (n,), generator=g).tolist()
        plain.append(Encoded(ids, [IGNORE] * (n // 2) + ids[n // 2:]))
    system = torch.randint(0, 1000, (prefix,), generator=g).tolist()
    shared = [Encoded(system + e.input_ids, [IGNORE] * prefix + e.labels) for e in plain]
    out = {"shape": shape, "dtype": str(dtype).split(".")[1], "applies": varlen.applies(model, device)}
    for kind, examples in (("plain", plain), ("shared_prefix", shared)):
        rows = plan.build_rows(examples, capacity=4096)
        model.get_base_model().set_attn_implementation("sdpa")
        _fwd_bwd(model, rows, device)  # warm-up (kernels, allocator)
        ref_loss, ref_grads, ref_s = _fwd_bwd(model, rows, device)
        varlen.use(model)
        rows = [varlen.with_boundaries(r) for r in rows]
        _fwd_bwd(model, rows, device)
        loss, grads, s = _fwd_bwd(model, rows, device)
        worst = max(float((x - ref_grads[n]).norm() / ref_grads[n].norm().clamp_min(1e-30)) for n, x in grads.items())
        out[kind] = {"rows": len(rows), "tokens": sum(r["input_ids"].shape[1] for r in rows),
                     "loss_rel_diff": abs(loss - ref_loss) / abs(ref_loss), "grad_rel_diff_max": worst,
                     "masked_fwd_bwd_s": round(ref_s, 4), "varlen_fwd_bwd_s": round(s, 4)}
    out["fused_head"] = _fused_head_vs_logits(model, plan.build_rows(plain, capacity=4096), device)
    out["pairs"] = _pairs_varlen_vs_masked(model, plain, device)
    return out


def _compare(reference: tuple, got: tuple) -> dict:
    loss, grads, seconds = got
    worst = max(float((x - reference[1][n]).norm() / reference[1][n].norm().clamp_min(1e-30)) for n, x in grads.items())
    return {"loss_rel_diff": abs(loss - reference[0]) / abs(reference[0]), "grad_rel_diff_max": worst,
            "reference_s": round(reference[2], 4), "s": round(seconds, 4)}


def _fused_head_vs_logits(model, rows, device: str) -> dict:
    """training/fused_head.py against the logits path (varlen attention both), with each one's peak memory."""
    import torch

    from tuneforge.training import fused_head, varlen

    varlen.use(model)
    rows = [varlen.with_boundaries(r) for r in rows]
    fused, out = fused_head.frozen_head, {}
    for name, head in (("logits", lambda m: None), ("fused", fused)):
        fused_head.frozen_head = head
        _fwd_bwd(model, rows, device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        out[name] = _fwd_bwd(model, rows, device)
        out[f"{name}_peak_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3) if device == "cuda" else None
    fused_head.frozen_head = fused
    return {**_compare(out["logits"], out["fused"]), "logits_peak_gb": out["logits_peak_gb"],
            "fused_peak_gb": out["fused_peak_gb"]}


def _pairs_varlen_vs_masked(model, examples, device: str) -> dict:
    """DPO's pair rows through varlen attention vs the padded, masked batch: log-probabilities and gradients."""
    import torch

    from tuneforge.data.preference import EncodedPair
    from tuneforge.training import varlen
    from tuneforge.training.pair_rows import collate_pairs, pair_logps, stack_rows, varlen_row

    pairs = [EncodedPair(e.input_ids[: len(e.input_ids) // 2], e.input_ids[len(e.input_ids) // 2 :],
                         e.input_ids[len(e.input_ids) // 2 :][::-1]) for e in examples]
    groups = [pairs[i : i + 4] for i in range(0, len(pairs), 4)]

    def run(batch) -> tuple[float, dict, float]:
        model.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            logps = pair_logps(model, batch, device)
        (logps[:, 0] - logps[:, 1]).sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        grads = {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}
        return float(logps.float().sum()), grads, time.perf_counter() - t0

    model.get_base_model().set_attn_implementation("sdpa")
    masked = stack_rows([collate_pairs(g) for g in groups])
    run(masked)
    reference = run(masked)
    varlen.use(model)
    row = varlen_row([collate_pairs(g, masked=False) for g in groups])
    run(row)
    return {"pairs": len(pairs), **_compare(reference, run(row))}


def _fwd_bwd(model, rows, device: str) -> tuple[float, dict, float]:
    """Summed loss, LoRA gradients and seconds of a forward and backward over `rows` (bf16 autocast on CUDA)."""
    import torch

    from tuneforge.models.loading import compute_dtype
    from tuneforge.training.sft import loss_sum

    model.zero_grad()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.autocast(device, dtype=compute_dtype(device), enabled=device == "cuda"):
        total = sum(loss_sum(model, {k: v.to(device) if torch.is_tensor(v) else v for k, v in row.items()})
                    for row in rows)
    total.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    grads = {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(total), grads, time.perf_counter() - t0


def _ours(model: str, data: Path, out: Path, device: str, **options) -> dict:
    from tuneforge.training.config import TrainConfig
    from tuneforge.training.trainer import train

    cfg = TrainConfig(model=model, data=data, out=out, epochs=1, learning_rate=LR, batch_size=BATCH, lora_rank=RANK,
                      seed=SEED, checkpoint_every=10_000, **options)
    said = []
    result = train(cfg, on_event=lambda ev: ev.kind == "message" and said.append(ev.message))
    return {"train_seconds": result.metrics["elapsed_s"], "steps": result.steps,
            "loss": result.metrics.get("train_loss"),
            "settings": {"pack_tokens": cfg.pack_tokens, "gradient_checkpointing": cfg.gradient_checkpointing,
                         "paths": next((m for m in said if "attention" in m), None)}}


def _ours_checkpointed(model: str, data: Path, out: Path, device: str) -> dict:
    """Ours with gradient checkpointing, as TRL's defaults have it: the memory of the two compared alike."""
    return _ours(model, data, out, device, gradient_checkpointing=True)


def profile(work: Path, device: str, shape: str, steps: str = "6") -> dict:
    """Our trainer's first steps on `shape` under torch.profiler: the operators that take the device's time (what
    to make faster next), and the share of the steps' wall time the device was busy."""
    import torch
    from torch.profiler import ProfilerActivity

    from tuneforge.training.config import TrainConfig
    from tuneforge.training.trainer import train

    data = work / "data" / shape
    budget = json.loads((data / "tokens.json").read_text()) * int(steps) // 40  # (rows average ~1/40 of a step)
    cfg = TrainConfig(model=str(work / "models" / shape), data=data / "train.jsonl", out=work / "runs" / shape /
                      "profile", epochs=1, learning_rate=LR, batch_size=BATCH, lora_rank=RANK, seed=SEED,
                      checkpoint_every=10_000, token_budget=budget)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        result = train(cfg)
    attr = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, attr), reverse=True)
    busy = sum(getattr(e, attr) for e in events) / 1e6
    top = [{"op": e.key[:80], "ms": round(getattr(e, attr) / 1e3, 1), "calls": e.count,
            "share": round(getattr(e, attr) / 1e6 / max(busy, 1e-9), 3)} for e in events[:20]]
    return {"shape": shape, "steps": result.steps, "tokens": result.trained_tokens,
            "wall_s": result.metrics["elapsed_s"], "device_busy_s": round(busy, 2), "top": top}


def _trl(model: str, data: Path, out: Path, device: str) -> dict:
    """TRL's SFTTrainer with its defaults (bf16 autocast on a GPU, padded batches, gradient checkpointing)."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    cpu = {"use_cpu": True, "bf16": False} if device == "cpu" else {}
    args = SFTConfig(output_dir=str(out), per_device_train_batch_size=BATCH, num_train_epochs=1, learning_rate=LR,
                     lr_scheduler_type="cosine", warmup_steps=0.05, seed=SEED, report_to="none", save_strategy="no",
                     logging_steps=5, **cpu)
    lora = LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, peft_config=lora,
                         train_dataset=load_dataset("json", data_files=str(data), split="train"))
    t0 = time.perf_counter()
    trainer.train()
    if device == "cuda":
        torch.cuda.synchronize()
    settings = {k: getattr(args, k) for k in ("bf16", "gradient_checkpointing", "packing", "padding_free")}
    losses = [x["loss"] for x in trainer.state.log_history if "loss" in x]
    return {"train_seconds": time.perf_counter() - t0, "steps": trainer.state.global_step,
            "loss": losses[-1] if losses else None,
            "settings": {**settings, "model_dtype": str(trainer.model.dtype).split(".")[1]}}

