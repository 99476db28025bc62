"""What capturing costs the app: direct calls vs the tuneforge SDK wrapper vs the logging proxy.

A local OpenAI-compatible upstream (tests/fake_upstream.py) answers after a fixed latency. In one run, after
a warm-up of every path, in --rounds rounds that take the paths in turn (so that drift on a shared machine
touches all three alike), for each path:
  - latency: one client, calls one after another; the added latency is that path's p50/p99 minus direct's;
  - throughput: K concurrent clients, N calls; calls/s, and whether every call was logged (SDK: after
    `flush()`; proxy: after the server's log writer drains).
All three paths use the official `openai` AsyncOpenAI client (the wrapper is its subclass) on its aiohttp
transport (`openai.DefaultAioHttpClient`), which keeps up with 64 concurrent calls where its default httpx
transport does not. Everything runs on this machine: the clients, the upstream and the platform share its
two cores, so the throughput figures are of the whole system.

    .venv/bin/python bench/capture_overhead.py [--clients 64] [--requests 2000] [--latency-ms 20]

The last line is JSON; `ratio` is proxy throughput / direct throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import fake_upstream  # noqa: E402
from serve_throughput import start_platform  # noqa: E402

import tuneforge  # noqa: E402

PATHS = ("direct", "sdk", "proxy")
MESSAGES = [{"role": "system", "content": "You turn key=value pairs into JSON."},
            {"role": "user", "content": "Convert: name=Ada; city=London; year=1843"}]


def client(path: str, upstream: str, platform: str, key: str, run: str):
    common = {"max_retries": 0, "http_client": openai.DefaultAioHttpClient()}
    if path == "direct":
        return openai.AsyncOpenAI(base_url=upstream, api_key="sk-provider", **common), {}
    if path == "sdk":
        return tuneforge.AsyncOpenAI(base_url=upstream, api_key="sk-provider", **common,
                                     tuneforge={"base_url": platform, "api_key": key, "tags": {"run": run}}), {}
    headers = {"X-Upstream-Authorization": "Bearer sk-provider", "X-Tuneforge-Tags": json.dumps({"run": run})}
    return openai.AsyncOpenAI(base_url=platform + "/v1", api_key=key, **common), {"extra_headers": headers}


async def drive(path: str, upstream: str, platform: str, key: str, run: str, clients: int, n: int) -> dict:
    c, extra = client(path, upstream, platform, key, run)
    latencies: list[float] = []
    failures = 0
    queue = iter(range(n))

    async def worker() -> None:
        nonlocal failures
        for _ in queue:
            t0 = time.perf_counter()
            try:
                await c.chat.completions.create(model="gpt-4o", messages=MESSAGES, **extra)
            except openai.OpenAIError:
                failures += 1
                continue
            latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - t0
    if path == "sdk":
        delivered = await asyncio.to_thread(c.flush, 60)
        assert delivered, "the SDK wrapper did not deliver its reports within 60 s"
    await c.close()
    return {"calls": n, "failed": failures, "seconds": elapsed, "latencies": latencies}


def combine(runs: list[dict]) -> dict:
    latencies = sorted(x for r in runs for x in r["latencies"])
    calls, seconds = sum(r["calls"] for r in runs), sum(r["seconds"] for r in runs)
    return {"calls": calls, "failed": sum(r["failed"] for r in runs), "calls_per_s": calls / seconds,
            "p50_ms": statistics.median(latencies), "p99_ms": latencies[int(0.99 * (len(latencies) - 1))]}


async def raw_load(url: str, headers: dict, n: int, clients: int) -> dict:
    """Capacity without the openai SDK's own cost per call: a bare aiohttp client
    posting the same body. Shows how many calls per second the path itself can carry and log."""
    import aiohttp

    body = json.dumps({"model": "gpt-4o", "messages": MESSAGES}).encode()
    failures = 0
    queue = iter(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients + 8)) as session:

        async def worker() -> None:
            nonlocal failures
            for _ in queue:
                async with session.post(url + "/chat/completions", data=body,
                                        headers={"content-type": "application/json", **headers}) as r:
                    await r.read()
                    failures += r.status != 200

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return {"calls": n, "failed": failures, "calls_per_s": n / elapsed}


async def raw_load_httpx(url: str, n: int, clients: int) -> dict:
    """The same bare load through httpx's async client: why the proxy forwards with aiohttp instead."""
    body = json.dumps({"model": "gpt-4o", "messages": MESSAGES}).encode()
    queue = iter(range(n))
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients + 8)) as http:

        async def worker() -> None:
            for _ in queue:
                await http.post(url + "/chat/completions", content=body, headers={"content-type": "application/json"})

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return {"calls": n, "calls_per_s": n / (time.perf_counter() - t0)}


def ingest_rate(platform: str, key: str, batches: int = 20, size: int = 256) -> float:
    """Records/s the platform stores from SDK-style report batches (POST /v1/logs), sent one batch at a time."""
    import uuid

    reply = {"role": "assistant", "content": '{"name": "Ada"}'}
    response = {"id": "c", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
                "choices": [{"index": 0, "message": reply, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 30, "completion_tokens": 8}}
    record = {"source": "sdk", "model": "gpt-4o", "request": {"model": "gpt-4o", "messages": MESSAGES},
              "response": response, "status": 200, "started_at": time.time(), "latency_ms": 20.0,
              "tags": {"run": "ingest"}}
    bodies = [json.dumps({"logs": [{**record, "id": f"log-{uuid.uuid4().hex}"} for _ in range(size)]})
              for _ in range(batches)]
    with httpx.Client(headers={"authorization": f"Bearer {key}", "content-type": "application/json"}) as http:
        t0 = time.perf_counter()
        for body in bodies:
            assert http.post(platform + "/v1/logs", content=body, timeout=60).json()["stored"] == size
        return batches * size / (time.perf_counter() - t0)


def logged(platform: str, key: str, run: str, expected: int, timeout: float = 30) -> int:
    """Logs stored with tag run=RUN, waiting (up to timeout) for the platform's writer to catch up."""
    deadline = time.time() + timeout
    while True:
        total = httpx.get(platform + "/v1/logs", params={"tag": f"run={run}", "limit": 1},
                          headers={"authorization": f"Bearer {key}"}, timeout=30).json()["total"]
        if total >= expected or time.time() > deadline:
            return total
        time.sleep(0.2)


def main() -> None:
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # the SDK's aiohttp client leaves sessions to GC
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--sequential", type=int, default=300, help="calls one after another, for latency")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="tuneforge-capture-bench-"))
    atexit.register(shutil.rmtree, data, True)  # hundreds of MB per run
    with fake_upstream.running(args.latency_ms) as upstream:
        env = {**os.environ, "TUNEFORGE_DATA_DIR": str(data), "TUNEFORGE_UPSTREAM_URL": upstream,
               "TUNEFORGE_PROXY_REQUESTS_PER_MINUTE": "1000000"}  # the bench measures capacity, not the limit
        server, platform, key = start_platform(env, workers=0)
        os.environ["TUNEFORGE_DATA_DIR"] = str(data / "app")  # the app's spool, apart from the platform's data
        try:
            for path in PATHS:
                asyncio.run(drive(path, upstream, platform, key, "warmup", args.clients, 4 * args.clients))
            runs: dict = {p: {"sequential": [], "concurrent": []} for p in PATHS}
            for _ in range(args.rounds):
                for path in PATHS:
                    runs[path]["sequential"].append(asyncio.run(drive(
                        path, upstream, platform, key, path, 1, args.sequential // args.rounds)))
                    runs[path]["concurrent"].append(asyncio.run(drive(
                        path, upstream, platform, key, path, args.clients, args.requests // args.rounds)))
            proxy_headers = {"authorization": f"Bearer {key}", "x-tuneforge-tags": json.dumps({"run": "capacity"}),
                             "x-upstream-authorization": "Bearer sk-provider"}
            capacity = {
                "direct": asyncio.run(raw_load(upstream, {}, args.requests, args.clients)),
                "proxy": asyncio.run(raw_load(platform + "/v1", proxy_headers, args.requests, args.clients)),
            }
            capacity["proxy"]["logged"] = logged(platform, key, "capacity", args.requests)
            capacity["ingest_records_per_s"] = ingest_rate(platform, key)
            capacity["direct_httpx"] = asyncio.run(raw_load_httpx(upstream, args.requests // 4, args.clients))
            results = {}
            for path in PATHS:
                seq, par = combine(runs[path]["sequential"]), combine(runs[path]["concurrent"])
                sent = seq["calls"] + par["calls"]
                stored = None if path == "direct" else logged(platform, key, path, sent)
                results[path] = {"sequential": seq, "concurrent": par, "sent": sent, "logged": stored}
        finally:
            server.terminate()
            server.wait(timeout=30)
    report(results, capacity, args)


def report(results: dict, capacity: dict, args) -> None:
    direct = results["direct"]
    sent = direct["sent"]
    print(f"upstream latency {args.latency_ms:g} ms; per path, in {args.rounds} rounds: {args.sequential} calls one "
          f"at a time, {args.requests} calls from {args.clients} concurrent clients")
    print(f"{'path':8} {'p50 ms':>8} {'p99 ms':>8} {'+p50':>7} {'+p99':>7} {'calls/s':>9} {'failed':>7} {'logged':>12}")
    for path, r in results.items():
        seq, par = r["sequential"], r["concurrent"]
        add50 = seq["p50_ms"] - direct["sequential"]["p50_ms"]
        add99 = seq["p99_ms"] - direct["sequential"]["p99_ms"]
        logged_ = "-" if r["logged"] is None else f"{r['logged']}/{sent}"
        print(f"{path:8} {seq['p50_ms']:8.2f} {seq['p99_ms']:8.2f} {add50:7.2f} {add99:7.2f} "
              f"{par['calls_per_s']:9.1f} {seq['failed'] + par['failed']:7d} {logged_:>12}")
    cap = capacity["proxy"]
    print(f"capacity with a bare aiohttp client ({args.clients} clients x {args.requests} calls): direct "
          f"{capacity['direct']['calls_per_s']:.1f} calls/s, proxy {cap['calls_per_s']:.1f} calls/s, "
          f"{cap['logged']}/{cap['calls']} logged, {cap['failed']} failed; the platform stores SDK reports at "
          f"{capacity['ingest_records_per_s']:.0f} records/s (batches of 256); direct through httpx's async client "
          f"instead of aiohttp: {capacity['direct_httpx']['calls_per_s']:.1f} calls/s")
    summary = {
        "name": "capture_overhead", "ours": round(results["proxy"]["concurrent"]["calls_per_s"], 1),
        "baseline": round(direct["concurrent"]["calls_per_s"], 1),
        "sdk_added_p50_ms": round(results["sdk"]["sequential"]["p50_ms"] - direct["sequential"]["p50_ms"], 3),
        "proxy_added_p50_ms": round(results["proxy"]["sequential"]["p50_ms"] - direct["sequential"]["p50_ms"], 3),
        "sdk_added_p99_ms": round(results["sdk"]["sequential"]["p99_ms"] - direct["sequential"]["p99_ms"], 3),
        "proxy_added_p99_ms": round(results["proxy"]["sequential"]["p99_ms"] - direct["sequential"]["p99_ms"], 3),
        "direct_calls_per_s": round(direct["concurrent"]["calls_per_s"], 1),
        "sdk_calls_per_s": round(results["sdk"]["concurrent"]["calls_per_s"], 1),
        "proxy_calls_per_s": round(results["proxy"]["concurrent"]["calls_per_s"], 1),
        "sent_per_path": sent,
        "sdk_logged": results["sdk"]["logged"], "proxy_logged": results["proxy"]["logged"],
        "lost": sum(results[p]["sent"] - results[p]["logged"] for p in ("sdk", "proxy")) + cap["calls"] - cap["logged"],
        "failed": sum(r["sequential"]["failed"] + r["concurrent"]["failed"] for r in results.values()),
        "proxy_capacity_calls_per_s": round(cap["calls_per_s"], 1), "proxy_capacity_logged": cap["logged"],
        "proxy_capacity_sent": cap["calls"], "ingest_records_per_s": round(capacity["ingest_records_per_s"]),
        "direct_httpx_calls_per_s": round(capacity["direct_httpx"]["calls_per_s"], 1),
        "ratio": round(results["proxy"]["concurrent"]["calls_per_s"] / direct["concurrent"]["calls_per_s"], 3),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
