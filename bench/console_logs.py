"""The console's request-log page at scale: its time to render with 1k and with 100k captured calls.

One run seeds two fresh stores (SQLite in a temporary data dir, or `--database-url` Postgres databases), one with
1,000 and one with 100,000 calls in a project (6 models, tags team/env/feature, 5% errors, ~600-byte requests),
starts a real `tuneforge serve` on each, signs in through the console's form, and times with httpx, as a browser
would request them:

- page:      GET /logs (the newest 50, no filter)
- filtered:  GET /logs?model=...&tag=team=...&status=ok (model, tag and status filters)
- deep:      the 20th page of the filtered view (keyset `after` from the 19th)
- text:      GET /logs?q=... (a text search in requests and replies, a common word pair; not in the ratio)
- text_rare: a text only the oldest log has (so every log is read; not in the ratio: see below)

Each is timed `--repeats` times after a warm-up; the median is kept. The baseline is the same page over the
1k store in the same run. The last line is JSON with `ratio` = the worst of page/filtered/deep's 100k/1k
median (target <= 2). Text search is a LIKE over request and reply text: it stops as soon as a page is full, so
a common word costs little, but a rare word reads every log in the project's time range (SQLite has no index for
it); it is printed so that the cost is visible.

    .venv/bin/python bench/console_logs.py [--small 1000] [--large 100000] [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "claude-sonnet-4-5", "o3-mini", "gpt-4o-2024-08-06"]
TEAMS = ["search", "support", "billing", "ads"]
WORDS = ("invoice refund order shipping account password address delivery warranty discount subscription "
         "payment cancel upgrade receipt tracking").split()


def seed(database_url: str | None, data_dir: Path, n: int) -> str:
    """n calls in project `bench`, newest now; returns an API key of that project."""
    os.environ["TUNEFORGE_DATA_DIR"] = str(data_dir)
    from tuneforge.store import logs, projects
    from tuneforge.store.db import Database

    db = Database(database_url)
    db.migrate()
    rng = random.Random(0)
    start = time.time() - n * 30.0
    with db.session() as s:
        key = projects.create_key(s, project="bench")
        project_id = projects.authenticate(s, key).id
    batch = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(60))
        ok = rng.random() > 0.05
        model = MODELS[i % len(MODELS)]
        batch.append({
            "id": f"log-{i:07d}", "source": "sdk", "model": model, "status": 200 if ok else 500,
            "started_at": start + i * 30.0, "latency_ms": rng.uniform(200, 3000),
            "request": {"model": model, "messages": [{"role": "system", "content": "Route the ticket."},
                                                     {"role": "user", "content": f"Ticket {i}: {words}"}]},
            "response": {"model": model, "choices": [{"message": {"role": "assistant", "content": rng.choice(TEAMS)}}],
                         "usage": {"prompt_tokens": 80, "completion_tokens": 2}} if ok else None,
            "error": None if ok else {"message": "upstream error"},
            "tags": {"team": TEAMS[i % len(TEAMS)], "env": "prod" if i % 3 else "staging", "feature": f"f{i % 17}"},
        })
        if len(batch) == 2000 or i == n - 1:
            with db.session() as s:
                logs.ingest(s, project_id, batch)
            batch = []
    db.engine.dispose()
    return key


class Serve:
    def __init__(self, data_dir: Path, database_url: str | None):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        env = {**os.environ, "TUNEFORGE_DATA_DIR": str(data_dir)}
        if database_url:
            env["TUNEFORGE_DATABASE_URL"] = database_url
        self.proc = subprocess.Popen([sys.executable, "-m", "tuneforge", "serve", "--port", str(self.port),
                                      "--workers", "0"], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(240):
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.25)
        raise SystemExit("the server did not start")

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def timed(client: httpx.Client, url: str, repeats: int) -> tuple[float, str]:
    r = client.get(url)
    r.raise_for_status()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        r = client.get(url)
        times.append(time.perf_counter() - t)
        r.raise_for_status()
    return statistics.median(times) * 1000, r.text


def measure(key: str, server: Serve, repeats: int) -> dict[str, float]:
    import re

    out = {}
    with httpx.Client(base_url=server.url, timeout=120) as client:
        assert client.post("/signin", data={"key": key, "next": "/"}).status_code == 303
        assert "tf_session" in client.cookies
        filtered = f"/logs?model={MODELS[1]}&tag=team%3Dsupport&status=ok"
        out["page"], _ = timed(client, "/logs", repeats)
        out["filtered"], html = timed(client, filtered, repeats)
        url = filtered
        for _ in range(19):  # walk to the 20th page, as a user clicking "Older" would
            html = client.get(url).text
            m = re.search(r'href="/logs\?([^"]*after=[^"]*)" rel="next"', html)
            if not m:
                break
            url = "/logs?" + m.group(1).replace("&amp;", "&")
        out["deep"], _ = timed(client, url, repeats)
        out["text"], _ = timed(client, "/logs?q=warranty+discount", repeats)
        out["text_rare"], _ = timed(client, "/logs?q=ticket+17%3A", max(3, repeats // 5))  # one log, the oldest
        assert "log-" in html
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--database-url", nargs=2, metavar=("SMALL_URL", "LARGE_URL"),
                    help="two empty Postgres databases instead of SQLite")
    args = ap.parse_args()
    results = {}
    for i, n in enumerate((args.small, args.large)):
        url = args.database_url[i] if args.database_url else None
        data_dir = Path(tempfile.mkdtemp(prefix=f"console-logs-{n}-"))
        t = time.time()
        key = seed(url, data_dir, n)
        print(f"seeded {n:,} logs in {time.time() - t:.0f} s", flush=True)
        server = Serve(data_dir, url)
        try:
            results[n] = measure(key, server, args.repeats)
        finally:
            server.close()
        print(f"{n:>7,} logs: " + ", ".join(f"{k} {v:.1f} ms" for k, v in results[n].items()), flush=True)
    small, large = results[args.small], results[args.large]
    ratios = {k: large[k] / small[k] for k in small}
    print("ratios (100k/1k): " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    print(json.dumps({"small": args.small, "large": args.large, "ms": {str(k): v for k, v in results.items()},
                      "ratios": ratios, "ratio": max(ratios[k] for k in ("page", "filtered", "deep")),
                      "store": "postgres" if args.database_url else "sqlite"}))


if __name__ == "__main__":
    main()
