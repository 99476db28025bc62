"""Tenant isolation: how long a quiet project waits while another floods the server, with the per-project
limits and without them (the baseline: the same server with the limits set out of reach).

One `tuneforge serve` per run on the bundled SmolLM2 (CPU, `--max-batch 32`). Project `flood` keeps
`--flood` requests in flight (chat, `--flood-tokens` each) for `--seconds`; project `calm` sends one request
at a time (`--calm-tokens`) meanwhile. With the limits (`TUNEFORGE_PROJECT_REQUESTS_IN_FLIGHT`, default here
8) the flood holds at most 8 of the engine's 32 batch slots and is answered 429 past that, so calm's request
joins the running batch at once; without them, the flood fills the batch and the engine's queue, and calm's
request waits behind it.

    TUNEFORGE_MODEL_CACHE=$PWD/.cache/models .venv/bin/python bench/tenant_isolation.py [--seconds 40]

The last line is JSON; `ratio` is calm's median latency without the limits / with them.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from serve_throughput import start_platform  # noqa: E402

MODEL = "smollm2-135m-instruct"
ASK = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]


def run(limited: bool, args) -> dict:
    data = Path(tempfile.mkdtemp(prefix="tuneforge-tenants-"))
    atexit.register(shutil.rmtree, data, True)  # hundreds of MB per run
    off = "1000000"
    env = {**os.environ, "TUNEFORGE_DATA_DIR": str(data),
           "TUNEFORGE_PROJECT_REQUESTS_IN_FLIGHT": str(args.in_flight) if limited else off,
           "TUNEFORGE_ENGINE_QUEUE": "256" if limited else off}
    proc, url, calm = start_platform(env, workers=0)
    flood = subprocess.run([sys.executable, "-m", "tuneforge", "keys", "create", "--project", "flood"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    statuses: Counter = Counter()
    stop = threading.Event()

    def flooder():
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {flood}"}, timeout=600) as c:
            while not stop.is_set():
                r = c.post("/v1/chat/completions", json={"model": MODEL, "messages": ASK,
                                                         "max_tokens": args.flood_tokens, "temperature": 1.0})
                statuses[r.status_code] += 1
                if r.status_code == 429:
                    stop.wait(float(r.headers.get("retry-after", "1")))
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {calm}"}, timeout=600) as c:
            c.post("/v1/chat/completions", json={"model": MODEL, "messages": ASK, "max_tokens": 1})  # load it
            threads = [threading.Thread(target=flooder) for _ in range(args.flood)]
            for t in threads:
                t.start()
            time.sleep(5)  # the flood is under way
            latencies = []
            deadline = time.time() + args.seconds
            while time.time() < deadline:
                started = time.perf_counter()
                r = c.post("/v1/chat/completions", json={"model": MODEL, "messages": ASK,
                                                         "max_tokens": args.calm_tokens, "temperature": 0})
                r.raise_for_status()
                latencies.append(time.perf_counter() - started)
        stop.set()
        for t in threads:
            t.join()
    finally:
        proc.terminate()
        proc.wait(60)
    return {"limited": limited, "calm_requests": len(latencies), "calm_median_s": statistics.median(latencies),
            "calm_max_s": max(latencies), "flood": dict(statuses)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="How long calm sends requests, per run.")
    parser.add_argument("--flood", type=int, default=64, help="Flood requests kept in flight.")
    parser.add_argument("--in-flight", type=int, default=8, help="The per-project limit, in the limited run.")
    parser.add_argument("--flood-tokens", type=int, default=64)
    parser.add_argument("--calm-tokens", type=int, default=16)
    args = parser.parse_args()
    results = [run(False, args), run(True, args)]
    for r in results:
        print(f"{'with' if r['limited'] else 'without'} limits: calm {r['calm_requests']} requests, median "
              f"{r['calm_median_s']:.2f} s, max {r['calm_max_s']:.2f} s; flood {r['flood']}")
    ratio = results[0]["calm_median_s"] / results[1]["calm_median_s"]
    print(json.dumps({"bench": "tenant_isolation", "without": results[0], "with": results[1],
                      "ratio": round(ratio, 2)}))


if __name__ == "__main__":
    main()
