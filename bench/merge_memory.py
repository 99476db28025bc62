"""Merge memory: peak RSS and wall time of `tuneforge merge` vs `mergekit-yaml` on the same config, one run each.

The inputs are SmolLM2-135M-Instruct (the registry's materialized folder, fp32) and a copy of it with every
weight perturbed by small noise (written once into a temp folder, fp32 safetensors); the config is a slerp
with a per-layer `t` gradient and attention / mlp filters, naming both by folder, so that both tools read
the very same file. Each CLI runs as a subprocess of a fresh `python -c` wrapper, which times it and reads
`getrusage(RUSAGE_CHILDREN).ru_maxrss`: the exact peak RSS of that one child (the figure the ratio uses).
This process also polls the RSS of the wrapper's whole child tree every 20 ms, as a cross-check.

Our CLI does more than mergekit's around the merge (resolving names, hashing the inputs for the manifest),
so its time includes that; the machine's other load distorts the times more than the memory.

    TUNEFORGE_MODEL_CACHE=$PWD/.cache/models .venv/bin/python bench/merge_memory.py [--model smollm2-135m-instruct]

The last line is JSON; `ratio` is our peak RSS / mergekit's (the goal: <= 1.05).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

BIN = Path(sys.executable).parent
T_GRADIENT = [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
              {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]}, {"value": 0.5}]
# Runs argv[2:] and writes its wall time and the child's peak RSS (ru_maxrss, KiB on Linux) to argv[1].
WRAPPER = ("import json, resource, subprocess, sys, time\n"
           "t = time.perf_counter(); rc = subprocess.call(sys.argv[2:]); s = time.perf_counter() - t\n"
           "kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
           "open(sys.argv[1], 'w').write(json.dumps({'rc': rc, 'seconds': s, 'peak_kib': kib}))\n")


def perturbed_copy(base: Path, out: Path, scale: float = 1e-2, seed: int = 0) -> Path:
    """The base's folder with every float weight plus noise (scale x the tensor's std), in fp32."""
    import torch
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True)
    for f in base.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy(f, out / f.name)
    gen = torch.Generator().manual_seed(seed)
    for shard in sorted(base.glob("*.safetensors")):
        tensors = load_file(shard)
        for name, t in tensors.items():
            t = t.float()
            noise = torch.randn(t.shape, generator=gen) * (scale * (t.std().item() if t.numel() > 1 else 1.0))
            tensors[name] = (t + noise).contiguous()
        save_file(tensors, out / shard.name, metadata={"format": "pt"})
        del tensors
    return out


def slerp_config(a: Path, b: Path, layers: int) -> dict:
    return {"merge_method": "slerp", "base_model": str(a), "dtype": "float32", "parameters": {"t": T_GRADIENT},
            "slices": [{"sources": [{"model": str(a), "layer_range": [0, layers]},
                                    {"model": str(b), "layer_range": [0, layers]}]}]}


def measure(cmd: list[str], work: Path, poll_s: float = 0.02) -> dict:
    """Run `cmd` under the wrapper: wall time, exact peak RSS of the child, polled peak of the child tree."""
    result = work / "result.json"
    wrapper = subprocess.Popen([sys.executable, "-c", WRAPPER, str(result), *cmd],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    me, polled = psutil.Process(wrapper.pid), 0
    while wrapper.poll() is None:
        total = 0
        try:
            for child in me.children(recursive=True):
                total += child.memory_info().rss
        except psutil.Error:
            pass  # a child ended between listing and reading
        polled = max(polled, total)
        time.sleep(poll_s)
    err = wrapper.stderr.read().decode(errors="replace")
    found = json.loads(result.read_text())
    if found["rc"] != 0:
        sys.exit(f"{cmd[0]} failed ({found['rc']}):\n{err[-3000:]}")
    return {"peak_mb": found["peak_kib"] / 1024, "polled_mb": polled / 2**20, "seconds": found["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a registry name or a model folder")
    args = parser.parse_args()

    from tuneforge.models import registry

    base = Path(registry.resolve(args.model).base)
    layers = json.loads((base / "config.json").read_text())["num_hidden_layers"]
    env_note = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs"
    with tempfile.TemporaryDirectory(prefix="tuneforge-bench-merge-") as tmp:
        work = Path(tmp)
        other = perturbed_copy(base, work / "perturbed")
        cfg = work / "slerp.yaml"
        cfg.write_text(yaml.safe_dump(slerp_config(base, other, layers), sort_keys=False))
        print(f"slerp of {args.model} ({layers} layers, fp32) and a perturbed copy; {env_note}")
        runs = {"ours": [str(BIN / "tuneforge"), "merge", str(cfg), "--out", str(work / "ours")],
                "mergekit": [str(BIN / "mergekit-yaml"), str(cfg), str(work / "mergekit")]}
        results = {name: measure(cmd, work) for name, cmd in runs.items()}
    print(f"{'tool':10s} {'peak RSS MB':>12s} {'polled tree MB':>15s} {'wall s':>8s}")
    for name, r in results.items():
        print(f"{name:10s} {r['peak_mb']:12.0f} {r['polled_mb']:15.0f} {r['seconds']:8.1f}")
    ours, theirs = results["ours"], results["mergekit"]
    print(json.dumps({
        "bench": "merge_memory", "ours_peak_rss_mb": round(ours["peak_mb"], 1),
        "mergekit_peak_rss_mb": round(theirs["peak_mb"], 1), "ratio": round(ours["peak_mb"] / theirs["peak_mb"], 3),
        "ours_polled_rss_mb": round(ours["polled_mb"], 1), "mergekit_polled_rss_mb": round(theirs["polled_mb"], 1),
        "ours_s": round(ours["seconds"], 2), "mergekit_s": round(theirs["seconds"], 2),
        "time_ratio": round(ours["seconds"] / theirs["seconds"], 2),
    }))


if __name__ == "__main__":
    main()
