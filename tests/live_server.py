"""A real `tuneforge serve` in a subprocess, and keys made with the real CLI, for the platform tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from helpers import cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`tuneforge serve` on a free port; stopped (workers too) when the `with` block ends."""

    def __init__(self, data_dir: Path, *, database_url: str | None = None, workers: int = 1,
                 stale_after: float = 30.0, extra: tuple[str, ...] = (), env: dict[str, str] | None = None):
        self.data_dir, self.database_url = data_dir, database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "TUNEFORGE_DATA_DIR": str(data_dir), **(env or {})}
        if database_url:
            self.env["TUNEFORGE_DATABASE_URL"] = database_url
        self.args = ["--port", str(self.port), "--workers", str(workers), "--stale-after", str(stale_after), *extra]
        self.log = data_dir / f"server-{self.port}.log"

    def __enter__(self) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tuneforge", "serve", *self.args], env=self.env, stdout=open(self.log, "w"),
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"server not healthy in 120 s:\n{self.log.read_text()}")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)

    def key(self, project: str) -> str:
        env = {"TUNEFORGE_DATA_DIR": str(self.data_dir)}
        if self.database_url:
            env["TUNEFORGE_DATABASE_URL"] = self.database_url
        return cli("keys", "create", "--project", project, env=env).stdout.strip().splitlines()[-1]

    def client(self, key: str):
        from openai import OpenAI

        return OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=300)


def wait_for_job(client, job_id: str, timeout: float = 600, until=("succeeded", "failed", "cancelled")):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in until:
            return job
        time.sleep(1)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout} s")


def start_worker(server: Server, stale_after: float = 4.0) -> subprocess.Popen:
    """One more `tuneforge worker` process on the server's store."""
    log = open(server.data_dir / f"worker-{time.time_ns()}.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "tuneforge", "worker", "--stale-after", str(stale_after), "--poll", "0.5"],
        env=server.env, stdout=log, stderr=subprocess.STDOUT,
    )
