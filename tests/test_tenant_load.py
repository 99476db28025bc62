"""One project floods the platform with generation requests and fine-tuning jobs; another keeps being served.

Bounded in count and time, on loopback: 24 threads of project `flood` send requests as fast as they are
answered and submit jobs until refused, for FLOOD_S seconds; project `calm` meanwhile sends one request at a
time. Stated bound: every one of calm's requests is answered 200 within CALM_LATENCY_S (without the
per-project limits it would wait behind the whole flood). No 5xx for anyone; the flood gets 429s with
Retry-After, for requests and for jobs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
from helpers import toy_rows, write_jsonl
from live_server import Server

FLOOD_S = 20.0
CALM_LATENCY_S = 10.0
FLOOD_THREADS = 24


def test_a_flooding_project_gets_429s_while_another_is_served(tmp_path, tiny_model):
    env = {"TUNEFORGE_PROJECT_REQUESTS_IN_FLIGHT": "4", "TUNEFORGE_PROJECT_QUEUED_JOBS": "3",
           "TUNEFORGE_PROJECT_RUNNING_JOBS": "1"}
    with Server(tmp_path / "data", workers=1, env=env, extra=("--base", f"tiny={tiny_model}")) as srv:
        flood, calm = srv.key("flood"), srv.key("calm")
        statuses: Counter = Counter()
        job_statuses: Counter = Counter()
        retry_after: set[str] = set()
        stop = threading.Event()
        chat = {"model": "tiny", "messages": [{"role": "user", "content": "Count to ten."}], "max_tokens": 48}

        def flood_requests():
            with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {flood}"}, timeout=120) as c:
                while not stop.is_set():
                    r = c.post("/v1/chat/completions", json=chat)
                    statuses[r.status_code] += 1
                    if r.status_code == 429:
                        retry_after.add(r.headers.get("retry-after", ""))
                        time.sleep(0.05)

        def flood_jobs():
            client = srv.client(flood)
            data = client.files.create(file=write_jsonl(tmp_path / "train.jsonl", toy_rows(16)).open("rb"),
                                       purpose="fine-tune")
            while not stop.is_set():
                r = httpx.post(srv.url + "/v1/fine_tuning/jobs", timeout=60,
                               headers={"Authorization": f"Bearer {flood}"},
                               json={"model": "tiny", "training_file": data.id,
                                     "hyperparameters": {"n_epochs": 1}})
                job_statuses[r.status_code] += 1
                time.sleep(0.2)

        threads = [threading.Thread(target=flood_requests) for _ in range(FLOOD_THREADS)]
        threads.append(threading.Thread(target=flood_jobs))
        for t in threads:
            t.start()
        time.sleep(2.0)  # the flood is under way
        latencies = []
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {calm}"}, timeout=120) as c:
            deadline = time.time() + FLOOD_S
            while time.time() < deadline:
                started = time.perf_counter()
                r = c.post("/v1/chat/completions", json={**chat, "max_tokens": 16})
                latencies.append(time.perf_counter() - started)
                assert r.status_code == 200, r.text
        stop.set()
        for t in threads:
            t.join()
        print(f"calm: {len(latencies)} requests, max {max(latencies):.2f} s, "
              f"median {sorted(latencies)[len(latencies) // 2]:.2f} s; flood requests {dict(statuses)}, "
              f"jobs {dict(job_statuses)}")
        assert max(latencies) < CALM_LATENCY_S
        assert not [s for s in (*statuses, *job_statuses) if s >= 500]
        assert statuses[429] > 0 and statuses[200] > 0 and retry_after and "" not in retry_after
        assert job_statuses[429] > 0 and job_statuses[200] >= 3
        assert httpx.get(srv.url + "/health").status_code == 200
