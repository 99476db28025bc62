"""Serving on a CPU: `tuneforge serve` against llama.cpp's OpenAI-compatible server, same model, same prompts.

Both serve SmolLM2-135M-Instruct: llama.cpp from the bundled GGUF (Q4_1 weights, Q8_0 embeddings), tuneforge
from the same file materialized as an HF folder, with `--quantize` (default int4: llama.cpp's Q4_1 layout).
Every request is a chat with one shared system prompt (about 120 tokens, as a fine-tuned task's traffic
has) and its own question, greedy, `max_tokens` fixed. Two loads, each run on one server at a time:

- single stream: requests one after another; generated tokens / wall seconds, and time to first token;
- 16 clients: 16 concurrent streams, each sending its requests one after another; aggregate tokens/s and
  time to first token (p50 / p95).

Both servers are up for the whole run and take turns, `--rounds` times at each load (this machine's speed
drifts by up to a quarter within minutes; alternating spreads the drift over both); the round with the
median tokens/s is reported for each.

llama.cpp is either `llama-server` (C++, continuous batching: `--llama-server PATH`, run with `-np` slots)
or `python -m llama_cpp.server` from a Python that has llama-cpp-python (`--llama-python PATH`; it serves
one request at a time). Neither is a tuneforge dependency; docs/benchmarks.md says how they were built.
The last line is JSON with `ratio` = tuneforge / llama.cpp single-stream tokens/s.

    .venv/bin/python bench/serve_cpu.py --llama-server /path/to/llama-server [--quantize int4] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_throughput import free_port, one_request, start_platform, summarize, wait_healthy  # noqa: E402

SYSTEM = (
    "You are the support assistant of Northwind Outfitters, an online shop for hiking and camping gear. "
    "Answer the customer's question in two or three friendly sentences. Orders ship within two working days "
    "from our warehouse in Leeds; standard delivery takes three to five days and express delivery one to two. "
    "Returns are free within 30 days if the item is unused and in its original packaging. Refunds reach the "
    "customer's account five to seven days after we receive the return. Never promise anything else."
)
QUESTIONS = [
    "Where is my order 4471? I ordered it on Monday.", "Can I return a tent I used once?",
    "How long does express delivery take?", "Do you ship to Ireland?", "My refund has not arrived yet.",
    "Can I change the size of the boots I ordered?", "Is the sleeping bag waterproof?",
    "What if my parcel arrives damaged?", "Can I pay with PayPal?", "Do you have a shop I can visit?",
    "How do I track my parcel?", "The zip on my jacket broke after a week.", "Can I cancel my order?",
    "Do you offer gift cards?", "How much is express delivery?", "Can I return an item bought on sale?",
]


def messages(i: int) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]


async def run_load(url: str, key: str, model: str, clients: int, per_client: int, max_tokens: int) -> dict:
    from openai import AsyncOpenAI

    # retries: a keep-alive connection that the server has just closed (llama-server does) is tried again
    client = AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=2, timeout=3600)

    async def one_client(c: int) -> list[dict]:
        return [await one_request(client, model, messages(c * per_client + r), max_tokens) for r in range(per_client)]

    start = time.perf_counter()
    results = [x for batch in await asyncio.gather(*(one_client(c) for c in range(clients))) for x in batch]
    wall = time.perf_counter() - start
    await client.close()
    return summarize(results, wall)


def warm_up(name: str, url: str, key: str, model: str) -> None:
    for _ in range(20):  # load the model, first allocations (a server may still be starting)
        try:
            asyncio.run(run_load(url, key, model, 1, 2, 8))
            return
        except Exception as exc:  # noqa: BLE001 - connection refused or reset while the server starts
            print(f"{name}: not ready ({type(exc).__name__}), retrying", file=sys.stderr)
            time.sleep(2)


def one_round(name: str, url: str, key: str, model: str, load: str, args) -> dict:
    clients, per_client = (1, args.single_requests) if load == "single" else (args.clients, args.requests_per_client)
    result = asyncio.run(run_load(url, key, model, clients, per_client, args.max_tokens))
    print(f"{name} {load}: {result}", file=sys.stderr, flush=True)
    return result


def median_round(rounds: list[dict]) -> dict:
    """The round with the median tokens/s (its other figures come with it)."""
    return sorted(rounds, key=lambda r: r["tokens_per_s"])[len(rounds) // 2]


def llama_cpp_server(args, gguf: Path, port: int) -> subprocess.Popen:
    common = ["--host", "127.0.0.1", "--port", str(port)]
    if args.llama_server:
        env = {**os.environ, "LD_LIBRARY_PATH": str(Path(args.llama_server).resolve().parent)}
        cmd = [args.llama_server, "-m", str(gguf), "-t", str(args.threads), "-c", str(512 * args.clients),
               "-np", str(args.clients), "--no-webui", *common]
        log = open(Path(tempfile.gettempdir()) / "serve_cpu_llama_server.log", "w")  # noqa: SIM115 - the server's life
        print(f"llama-server log: {log.name}", file=sys.stderr)
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    cmd = [args.llama_python, "-m", "llama_cpp.server", "--model", str(gguf), "--n_threads", str(args.threads),
           "--n_ctx", "2048", "--interrupt_requests", "False", "--model_alias", "smollm2", *common]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--llama-server", help="path to llama.cpp's llama-server binary")
    where.add_argument("--llama-python", help="a Python with llama-cpp-python[server] installed")
    parser.add_argument("--quantize", default="int4", help="tuneforge serve --quantize (fp16, int4, none)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--single-requests", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="turns each server takes at each load (median kept)")
    args = parser.parse_args()

    from tuneforge.models import registry

    gguf = registry.BUNDLED["smollm2-135m-instruct"].locate_gguf()
    registry.materialize("smollm2-135m-instruct")
    data = Path(tempfile.mkdtemp(prefix="tuneforge-cpu-bench-"))
    atexit.register(shutil.rmtree, data, True)  # hundreds of MB per run
    env = {**os.environ, "TUNEFORGE_DATA_DIR": str(data)}
    extra = [] if args.quantize == "none" else ["--quantize", args.quantize]
    ours, url, key = start_platform(env, workers=0, extra=extra)
    port = free_port()
    theirs_proc = llama_cpp_server(args, gguf, port)
    servers = [("tuneforge", url, key, "smollm2-135m-instruct"), ("llama.cpp", f"http://127.0.0.1:{port}", "none",
                                                                   "smollm2")]
    rounds: dict[tuple[str, str], list[dict]] = {}
    try:
        wait_healthy(servers[1][1], theirs_proc, path="/v1/models")
        for server in servers:
            warm_up(*server)
        # both servers stay up (an idle one uses no CPU) and take turns, round after round: this machine's
        # speed drifts by up to a quarter within minutes, and alternating spreads that over both sides
        for _ in range(args.rounds):
            for load in ("single", "many"):
                for server in servers:
                    rounds.setdefault((server[0], load), []).append(one_round(*server, load, args))
    finally:
        for proc in (ours, theirs_proc):
            proc.terminate()
            proc.wait()
    mine = {load: median_round(rounds["tuneforge", load]) for load in ("single", "many")}
    theirs = {load: median_round(rounds["llama.cpp", load]) for load in ("single", "many")}

    rows = [("", "tuneforge", "llama.cpp")]
    for load in ("single", "many"):
        for k in ("tokens_per_s", "p50_ttft_s", "p95_ttft_s"):
            rows.append((f"{load} {k}", mine[load][k], theirs[load][k]))
    for row in rows:
        print(f"{row[0]:>22} {row[1]!s:>10} {row[2]!s:>10}")
    single = theirs["single"]["tokens_per_s"]
    print(json.dumps({
        "name": "serve_cpu", "unit": "generated tokens/s", "ours": mine["single"]["tokens_per_s"], "baseline": single,
        "ratio": round(mine["single"]["tokens_per_s"] / single, 2),
        "baseline_name": "llama-server" if args.llama_server else "llama_cpp.server",
        "quantize": args.quantize, "clients": args.clients, "max_tokens": args.max_tokens,
        "many_over_their_single": round(mine["many"]["tokens_per_s"] / single, 2),
        "many_ratio": round(mine["many"]["tokens_per_s"] / theirs["many"]["tokens_per_s"], 2),
        "rounds": args.rounds, "ours_detail": mine, "baseline_detail": theirs,
    }))


if __name__ == "__main__":
    main()
