"""Serving many fine-tunes of one base: tuneforge's server vs one-request-at-a-time `generate`.

Both sides serve the same 4 LoRA adapters of SmolLM2-135M-Instruct (fine-tuned here through tuneforge's
own API: 4 short jobs) behind the same streaming OpenAI chat route, and both get the same load: 16
concurrent streaming clients, each sending its requests one after another, spread over the 4 adapters,
greedy, `max_tokens` fixed.

- tuneforge: `tuneforge serve` (one copy of the base, adapters in PEFT's mixed-adapter batches, continuous
  batching).
- baseline ("naive"): a FastAPI process holding the base with the 4 adapters loaded in PEFT; each request
  takes a lock, `set_adapter`s its adapter and runs `model.generate` with a streamer: one request at a time.

Prints, for both: aggregate generated tokens/s, p50/p95 latency, p50/p95 time to first token. The last
line is JSON with `ratio` = tuneforge tokens/s / baseline tokens/s.

    .venv/bin/python bench/serve_throughput.py [--clients 16] [--requests-per-client 2] [--max-tokens 48]
"""


import argparse
import asyncio
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOPICS = ["a lighthouse keeper", "a lost umbrella", "the first snow", "a robot gardener", "an old map",
          "a night train", "a tiny dragon", "a chess match", "a bakery at dawn", "a broken clock",
          "a desert well", "a paper boat", "a quiet library", "a mountain fox", "a city of bridges", "a last letter"]


def prompt(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Write a short story about {TOPICS[i % len(TOPICS)]}."}]


# ------------------------------------------------------------------------------------------- load generator
async def one_request(client, model: str, messages: list[dict], max_tokens: int) -> dict:
    start = time.perf_counter()
    first = None
    tokens = 0
    stream = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return {"latency": time.perf_counter() - start, "ttft": first or 0.0, "tokens": tokens}


async def load(url: str, key: str, models: list[str], clients: int, per_client: int, max_tokens: int) -> dict:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=3600)

    async def run_client(c: int) -> list[dict]:
        out = []
        for r in range(per_client):
            out.append(await one_request(client, models[c % len(models)], prompt(c * per_client + r), max_tokens))
        return out

    start = time.perf_counter()
    results = [x for batch in await asyncio.gather(*(run_client(c) for c in range(clients))) for x in batch]
    wall = time.perf_counter() - start
    await client.close()
    return summarize(results, wall)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def summarize(results: list[dict], wall: float) -> dict:
    lat, ttft = [r["latency"] for r in results], [r["ttft"] for r in results]
    tokens = sum(r["tokens"] for r in results)
    return {
        "requests": len(results), "tokens": tokens, "wall_s": round(wall, 1), "tokens_per_s": round(tokens / wall, 1),
        "p50_latency_s": round(statistics.median(lat), 2), "p95_latency_s": round(pct(lat, 0.95), 2),
        "p50_ttft_s": round(statistics.median(ttft), 2), "p95_ttft_s": round(pct(ttft, 0.95), 2),
    }


async def warm(url: str, key: str, models: list[str]) -> None:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=600)
    for m in models:
        await one_request(client, m, prompt(0), 2)
    await client.close()


# ------------------------------------------------------------------------------------------- the baseline
def naive_app(base: str, adapters: dict[str, str]):
    """One request at a time: set the request's adapter, run `generate` with a streamer."""
    import threading

    import torch
    from fastapi import FastAPI, Request
    from fastapi.responses import StreamingResponse
    from peft import PeftModel
    from transformers import TextIteratorStreamer

    from tuneforge.data.render import encode_prompt
    from tuneforge.models.loading import compute_dtype, default_device, load_model, load_tokenizer, stop_token_ids

    tokenizer = load_tokenizer(base)
    device = default_device()  # the GPU where there is one, as the server uses it: a like-for-like baseline
    model = load_model(base, dtype=compute_dtype(device), device=device).eval()
    names = list(adapters)
    peft = PeftModel.from_pretrained(model, adapters[names[0]], adapter_name=names[0])
    for name in names[1:]:
        peft.load_adapter(adapters[name], adapter_name=name)
    stops = stop_token_ids(model, tokenizer)
    lock = threading.Lock()
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        ids = torch.tensor([encode_prompt(tokenizer, body["messages"])], device=device)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        counted = {"n": 0}

        def work() -> None:
            with lock, torch.no_grad():
                peft.set_adapter(body["model"])
                out = peft.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                                    max_new_tokens=body["max_tokens"], do_sample=False, eos_token_id=stops,
                                    pad_token_id=stops[0])
                counted["n"] = out.shape[1] - ids.shape[1] - int(int(out[0, -1]) in stops)

        def chunk(delta: dict, usage=None, finish=None) -> str:
            choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
            return "data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 0,
                                          "model": body["model"], "choices": choices, "usage": usage}) + "\n\n"

        async def events():
            thread = threading.Thread(target=work)
            thread.start()
            yield chunk({"role": "assistant", "content": ""})
            loop = asyncio.get_running_loop()
            while True:
                piece = await loop.run_in_executor(None, next, streamer, None)
                if piece is None:
                    break
                if piece:
                    yield chunk({"content": piece})
            await loop.run_in_executor(None, thread.join)
            yield chunk({}, finish="stop")
            yield chunk({}, usage={"prompt_tokens": ids.shape[1], "completion_tokens": counted["n"],
                                   "total_tokens": ids.shape[1] + counted["n"]})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


# ------------------------------------------------------------------------------------------- orchestration
def wait_healthy(url: str, proc: subprocess.Popen, path: str = "/health", timeout: float = 300) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not come up")


def fine_tune_adapters(url: str, key: str, n: int) -> list[str]:
    """n short real fine-tunes through tuneforge's API (different seeds and data order)."""
    import io

    from openai import OpenAI

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import toy_rows

    client = OpenAI(base_url=url + "/v1", api_key=key)
    names = []
    for i in range(n):
        data = "".join(json.dumps(r) + "\n" for r in toy_rows(8, seed=i)).encode()
        f = client.files.create(file=(f"a{i}.jsonl", io.BytesIO(data)), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=f.id, suffix=f"a{i}",
                                             seed=i, hyperparameters={"n_epochs": 1})
        while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
            time.sleep(1)
        if job.status != "succeeded":
            raise SystemExit(f"fine-tune {job.id} {job.status}: {job.error}")
        names.append(job.fine_tuned_model)
    return names


def start_platform(env: dict, workers: int, extra: list[str] = ()) -> tuple[subprocess.Popen, str, str]:
    """`tuneforge serve` on a free port with a fresh API key: (process, base URL, key), once healthy."""
    key = subprocess.run([sys.executable, "-m", "tuneforge", "keys", "create", "--project", "bench"], env=env,
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    url = f"http://127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "tuneforge", "serve", "--port", url.rsplit(":", 1)[1], "--workers", str(workers),
           *extra]
    proc = subprocess.Popen(cmd, env=env)
    wait_healthy(url, proc)
    return proc, url, key


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--quantize", help="tuneforge serve --quantize (fp16, int4); default: float32 weights")
    parser.add_argument("--naive-server", nargs=3, metavar=("PORT", "BASE", "ADAPTERS_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_server:
        import uvicorn

        port, base, adapters = args.naive_server
        uvicorn.run(naive_app(base, json.loads(adapters)), host="127.0.0.1", port=int(port), log_level="warning")
        return

    data = Path(tempfile.mkdtemp(prefix="tuneforge-serve-bench-"))
    atexit.register(shutil.rmtree, data, True)  # hundreds of MB per run
    extra = ["--quantize", args.quantize] if args.quantize else []
    ours, url, key = start_platform({**os.environ, "TUNEFORGE_DATA_DIR": str(data)}, workers=1, extra=extra)
    try:
        models = fine_tune_adapters(url, key, args.adapters)
        print(f"adapters: {models}", file=sys.stderr)
        asyncio.run(warm(url, key, models))
        mine = asyncio.run(load(url, key, models, args.clients, args.requests_per_client, args.max_tokens))
        print(f"tuneforge: {mine}", file=sys.stderr)
    finally:
        ours.terminate()
        ours.wait()

    from tuneforge.models import registry

    base = str(registry.materialize("smollm2-135m-instruct"))
    paths = {m: str(next((data / "jobs").glob(f"ftjob-{m.rsplit(':', 1)[1]}*"))) for m in models}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    naive = subprocess.Popen([sys.executable, __file__, "--naive-server", str(port), base, json.dumps(paths)])
    try:
        wait_healthy(url, naive, path="/docs")
        asyncio.run(warm(url, "none", models))
        theirs = asyncio.run(load(url, "none", models, args.clients, args.requests_per_client, args.max_tokens))
        print(f"naive: {theirs}", file=sys.stderr)
    finally:
        naive.terminate()
        naive.wait()

    table = [("", "tuneforge", "naive generate"), *[(k, mine[k], theirs[k]) for k in mine]]
    for row in table:
        print(f"{row[0]:>16} {row[1]!s:>12} {row[2]!s:>16}")
    print(json.dumps({
        "name": "serve_throughput", "unit": "generated tokens/s", "ours": mine["tokens_per_s"],
        "baseline": theirs["tokens_per_s"], "ratio": round(mine["tokens_per_s"] / theirs["tokens_per_s"], 2),
        "baseline_name": "one request at a time, PEFT set_adapter + generate", "clients": args.clients,
        "adapters": args.adapters, "max_tokens": args.max_tokens, "quantize": args.quantize,
        "ours_detail": mine, "baseline_detail": theirs,
    }))


if __name__ == "__main__":
    main()
