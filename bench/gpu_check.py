"""The whole GPU check in one command: training vs TRL at real model shapes, the CLI on CUDA, the serving bench.

Meant for a lent CUDA machine without network and without our model files: throughput does not depend on weight
values, so the models are random-init ones of real shapes (SmolLM2-135M, SmolLM2-1.7B, Mistral-7B), built from
a config on the device in seconds; only SmolLM2's tokenizer files (a few MB) and the wheels the machine lacks
travel (`scripts/gpu-wheels DEST` gathers both). Every stage runs in its own process under a timeout, so a stage
that fails or hangs becomes one JSON line with its error tail and the next stage still runs. Output: one JSON
line per result on stdout (progress on stderr).

    python3 bench/gpu_check.py --wheels .cache/gpu/wheels --tokenizer .cache/gpu/tok     # on the GPU machine
    .venv/bin/python bench/gpu_check.py --device cpu --shapes tiny                       # the check of the check

Stages, in order (`--only` picks some): env, models, equal (packed rows' loss and gradients through
training/varlen.py, the fused varlen kernel on CUDA, vs the masked SDPA path, plain and shared-prefix rows, and
the time of each), cli,
train:<shape> (tuneforge's trainer, then TRL's SFTTrainer with its defaults, then ours with gradient checkpointing as
TRL has it, for memory compared alike; each in its own process), serve (bench/serve_throughput.py), profile:<shape>
(our first steps under torch.profiler: the operators that take the device's time). The training
comparison uses bench/train_throughput.py's rows and settings: LoRA r16 all-linear, batch 8, lr 1e-3, one epoch.
At each shape on CUDA, `peak_fraction` = 4 x params x tokens/s / the GPU's dense bf16 peak (LoRA's forward and
backward cost about 4 FLOP per parameter per token; the frozen weights get no gradient).

This orchestrator imports only the standard library (the wheels may not be installed yet when it starts).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json",
                   "special_tokens_map.json")
# Overrides of SmolLM2-135M's config.json (a llama) that give each shape.
SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16),
    "smol135": {},
    "smol1b7": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                    num_key_value_heads=32, head_dim=64),
    "mistral7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, head_dim=128, tie_word_embeddings=False),
}
SHAPE_SETS = {"real": ["smol135", "smol1b7", "mistral7b"], "tiny": ["tiny"]}
# The order stages run in: what the issue must show first (1.7B and 7B against TRL, the serving bench).
PLAN = {"real": ["env", "models", "equal", "cli", "train:smol1b7", "train:mistral7b", "serve", "profile:mistral7b",
                 "train:smol135"],
        "tiny": ["env", "models", "equal", "cli", "train:tiny", "serve", "profile:tiny"]}
TRAIN_TOKENS = {"tiny": 1_500, "smol135": 60_000, "smol1b7": 60_000, "mistral7b": 40_000}
# Seconds per stage (each is also cut to what is left of --budget).
TIMEOUTS = {"env": 60, "equal": 90, "wheels": 120, "models": 150, "cli": 150, "train:tiny": 120, "train:smol135": 150,
            "train:smol1b7": 180, "train:mistral7b": 240, "serve": 240, "profile:tiny": 60, "profile:mistral7b": 120}
# Dense (no sparsity) bf16 tensor TFLOP/s by part of the GPU's name, from NVIDIA's data sheets; the first match
# counts (the SXM parts last). The JSON line says which figure it used; --peak-tflops overrides it.
PEAK_TFLOPS = {"H200 NVL": 835.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H200": 989.0, "H100": 989.0,
               "A100": 312.0}
SERVE_ARGS = {"real": ["--clients", "32", "--requests-per-client", "2", "--max-tokens", "48", "--adapters", "4"],
              "tiny": ["--clients", "2", "--requests-per-client", "1", "--max-tokens", "8", "--adapters", "1"]}


def emit(result: dict) -> None:
    print(json.dumps(result), flush=True)


def note(message: str) -> None:
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- orchestration
class Check:
    """What every stage shares: the work folder, the environment of its processes, the time left."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = args.work.resolve()
        self.deadline = time.monotonic() + args.budget
        site = self.work / "site"
        path = [str(site)] if args.wheels else []
        self.env = {
            **os.environ, "PYTHONPATH": os.pathsep.join([*path, str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "TUNEFORGE_DATA_DIR": str(self.work / "data"), "TUNEFORGE_MODEL_CACHE": str(self.work / "cache"),
        }
        self.facts: dict = {}  # what later stages need from earlier ones (params per shape, the GPU's name)

    def run(self, name: str, cmd: list[str], timeout: float | None = None,
            prefix: str | None = "RESULT ") -> dict | None:
        """Run one stage's process. Its result: the last output line starting with `prefix` (`RESULT {json}`, or a
        bench's own JSON line), with `seconds`; only `seconds` when `prefix` is None. On a failure, a timeout or
        no such line, emits the failure as a JSON line with the output's tail and returns None."""
        left = self.deadline - time.monotonic()
        limit = min(timeout or TIMEOUTS.get(name, 120), left)
        if left < 5:
            emit({"name": name, "ok": False, "skipped": True, "error": f"no time left in --budget {self.args.budget}"})
            return None
        note(f"{name}: {' '.join(cmd[1:])} (timeout {limit:.0f} s)")
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)  # its own group: a timeout kills its children
        try:
            out, _ = proc.communicate(timeout=limit)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            timed_out = True
        seconds = round(time.monotonic() - t0, 1)
        ok = not timed_out and proc.returncode == 0
        if ok and prefix is None:
            return {"seconds": seconds}
        line = next((x for x in reversed(out.splitlines()) if prefix and x.startswith(prefix)), None)
        if ok and line is not None:
            return {**json.loads(line[7:] if prefix == "RESULT " else line), "seconds": seconds}
        why = f"timed out after {limit:.0f} s" if timed_out else f"exit status {proc.returncode}" if not ok else \
            f"no line starting {prefix!r} in its output"
        emit({"name": name, "ok": False, "error": why, "seconds": seconds, "tail": out[-self.args.tail:]})
        return None

    def worker(self, name: str, *argv: str, timeout: float | None = None) -> dict | None:
        return self.run(name, [sys.executable, __file__, "--work", str(self.work), "--device", self.args.device,
                               "--worker", *argv], timeout)


def stage_wheels(check: Check) -> None:
    wheels = sorted(glob.glob(str(check.args.wheels / "*.whl")))
    if not wheels:
        emit({"name": "wheels", "ok": False, "error": f"no .whl files in {check.args.wheels}"})
        return
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--no-cache-dir", "--upgrade", "--target", str(check.work / "site"), *wheels]
    result = check.run("wheels", cmd, prefix=None)
    if result:
        emit({"name": "wheels", "ok": True, "installed": len(wheels), "seconds": result["seconds"]})


def stage_env(check: Check) -> None:
    result = check.worker("env", "env")
    if result:
        check.facts.update(result)
        emit({"name": "env", "ok": True, **result})


def stage_models(check: Check, shapes: list[str]) -> None:
    for shape in shapes:
        result = check.worker("models", "model", shape, check.args.tokenizer)
        if result:
            check.facts[f"params:{shape}"] = result["params"]
            emit({"name": f"model:{shape}", "ok": True, **result})
    small = "tiny" if "tiny" in shapes else "smol135"
    cache = check.work / "cache" / "smollm2-135m-instruct"  # the serving bench's base: the small random model
    if (check.work / "models" / small / "config.json").exists() and not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.symlink_to(check.work / "models" / small)


def stage_equal(check: Check, shape: str) -> None:
    """training/varlen.py against the masked SDPA path on the device: losses, gradients, time of one 4k row."""
    result = check.worker("equal", "equal", shape)
    if result:
        emit({"name": "varlen_equal", "ok": True, **result})


def stage_cli(check: Check, shape: str) -> None:
    """`tuneforge train` then `tuneforge generate` on the device, as a user runs them."""
    model, out = check.work / "models" / shape, check.work / "cli-train"
    shutil.rmtree(out, ignore_errors=True)
    budget = ["--token-budget", "800"] if shape == "tiny" else []
    train = [sys.executable, "-m", "tuneforge", "train", "--model", str(model), "--data",
             "examples/email_extraction/train.jsonl", "--out", str(out), "--epochs", "1", *budget]
    result = check.run("cli", train, prefix=None)
    if not result:
        return
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    emit({"name": "cli_train", "ok": True, "shape": shape, "steps": last["step"],
          "trained_tokens": last["trained_tokens"], "train_seconds": last["elapsed_s"],
          "tokens_per_s": round(last["trained_tokens"] / last["elapsed_s"], 1), "seconds": result["seconds"]})
    rows = (ROOT / "examples/email_extraction/test.jsonl").read_text().splitlines()[:16]
    (check.work / "cli-rows.jsonl").write_text("".join(r + "\n" for r in rows))
    gen = [sys.executable, "-m", "tuneforge", "generate", "--model", str(out), "--data",
           str(check.work / "cli-rows.jsonl"), "--out", str(check.work / "cli-out.jsonl"), "--max-tokens", "32"]
    result = check.run("cli", gen, prefix=None)
    if result:
        answered = sum(1 for x in (check.work / "cli-out.jsonl").read_text().splitlines() if json.loads(x)["output"])
        emit({"name": "cli_generate", "ok": True, "rows": len(rows), "answered": answered, "max_tokens": 32,
              "seconds": result["seconds"]})


def stage_train(check: Check, shape: str) -> None:
    """Our trainer, then TRL's, on the same rows; one JSON line comparing them."""
    name = f"train:{shape}"
    sides = {}
    for side in ("ours", "trl", "ours_checkpointed"):
        result = check.worker(name, "train", side, shape)
        if result is None and side != "ours_checkpointed":
            return
        sides[side] = result
    ours, trl, checkpointed = sides["ours"], sides["trl"], sides["ours_checkpointed"]
    line = {"name": "train_vs_trl", "ok": True, "shape": shape, "device": check.args.device,
            "tokens": ours["tokens"], "ours_tokens_per_s": round(ours["tokens"] / ours["train_seconds"], 1),
            "trl_tokens_per_s": round(trl["tokens"] / trl["train_seconds"], 1),
            "ratio": round(trl["train_seconds"] / ours["train_seconds"], 2),
            "ours_peak_gb": ours["peak_gb"], "trl_peak_gb": trl["peak_gb"], "memory": ours["memory"],
            "trl_settings": trl["settings"], "ours_settings": ours["settings"], "ours_loss": ours["loss"]}
    if checkpointed:  # TRL checkpoints by default: ours the same way, for memory compared alike
        line.update(ours_checkpointed_tokens_per_s=round(ours["tokens"] / checkpointed["train_seconds"], 1),
                    ratio_checkpointed=round(trl["train_seconds"] / checkpointed["train_seconds"], 2),
                    ours_checkpointed_peak_gb=checkpointed["peak_gb"])
    params = check.facts.get(f"params:{shape}")
    gpu = check.facts.get("gpu", "")
    peak = check.args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in gpu), None)
    if params and peak and check.args.device == "cuda":
        line.update(params=params, peak_tflops=peak,
                    peak_fraction=round(4 * params * line["ours_tokens_per_s"] / (peak * 1e12), 3),
                    trl_peak_fraction=round(4 * params * line["trl_tokens_per_s"] / (peak * 1e12), 3))
    emit(line)


def stage_profile(check: Check, shape: str) -> None:
    """Where our training steps spend the device's time (the top operators), to know what to make faster next."""
    result = check.worker(f"profile:{shape}", "profile", shape)
    if result:
        emit({"name": "train_profile", "ok": True, **result})


def stage_serve(check: Check, kind: str) -> None:
    cmd = [sys.executable, "bench/serve_throughput.py", *SERVE_ARGS[kind]]
    result = check.run("serve", cmd, prefix='{"name": "serve_throughput"')
    if result:
        emit({"name": "serve_throughput", "ok": True, "seconds": result.pop("seconds"), **result})


def default_tokenizer() -> str:
    """SmolLM2's folder in the model cache (any copy holding its config and tokenizer files)."""
    caches = [os.environ.get("TUNEFORGE_MODEL_CACHE"), os.environ.get("TUNEFORGE_DATA_DIR") and
              Path(os.environ["TUNEFORGE_DATA_DIR"]) / "models", Path.home() / ".tuneforge" / "models",
              ROOT / ".cache" / "models"]
    for cache in filter(None, caches):
        folder = Path(cache) / "smollm2-135m-instruct"
        if (folder / "tokenizer.json").exists() and (folder / "config.json").exists():
            return str(folder)
    sys.exit("no SmolLM2 tokenizer found: pass --tokenizer FOLDER (config.json and tokenizer files; "
             "scripts/gpu-wheels copies them)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--shapes", choices=list(SHAPE_SETS), default="real",
                        help="real: the 1.7B, 7B and 135M shapes; tiny: a 4-layer model (checks the script)")
    parser.add_argument("--wheels", type=Path, help="a folder of wheels to install first (scripts/gpu-wheels)")
    parser.add_argument("--tokenizer", default="", help="SmolLM2's tokenizer folder (default: the model cache's)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tuneforge-gpu-check"))
    parser.add_argument("--only", default="", help="comma-separated stages: env,models,equal,cli,train,serve,profile")
    parser.add_argument("--budget", type=float, default=560, help="seconds for all stages together")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak (default: known GPUs)")
    parser.add_argument("--tail", type=int, default=2000, help="characters of a failed stage's output to show")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        from gpu_check_worker import run_worker  # beside this file; imports torch and the project

        return run_worker(args.worker, args.work, args.device)
    args.tokenizer = args.tokenizer or default_tokenizer()
    only = set(filter(None, args.only.split(","))) or {"env", "models", "equal", "cli", "train", "serve", "profile"}
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    check = Check(args)
    if args.wheels:
        stage_wheels(check)
    for stage in PLAN[args.shapes]:
        kind, _, shape = stage.partition(":")
        if kind == "env" and "env" in only:
            stage_env(check)
        elif kind == "models" and only - {"env"}:  # every other stage needs the models
            stage_models(check, SHAPE_SETS[args.shapes])
        elif kind == "equal" and "equal" in only:
            stage_equal(check, "tiny" if args.shapes == "tiny" else "smol135")
        elif kind == "cli" and "cli" in only:
            stage_cli(check, "tiny" if args.shapes == "tiny" else "smol135")
        elif kind == "train" and "train" in only:
            stage_train(check, shape)
        elif kind == "serve" and "serve" in only:
            stage_serve(check, args.shapes)
        elif kind == "profile" and "profile" in only:
            stage_profile(check, shape)
    emit({"name": "gpu_check_done", "ok": True, "seconds": round(args.budget - (check.deadline - time.monotonic()), 1)})


if __name__ == "__main__":
    main()
