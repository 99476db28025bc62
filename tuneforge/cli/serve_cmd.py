"""`tuneforge serve` and `tuneforge worker`: the platform's processes (`tuneforge keys` is in keys_cmd.py)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from enum import StrEnum
from typing import Annotated

import typer

from tuneforge import paths
from tuneforge.cli.app import DataDir, app, console, use
from tuneforge.errors import UserError

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", envvar="TUNEFORGE_DATABASE_URL", show_default=False,
                 help="SQLAlchemy URL of the store (default: SQLite in the data dir), e.g. postgresql://u:p@host/db."),
]
StaleAfter = Annotated[
    float, typer.Option("--stale-after", help="Seconds without a heartbeat before a running job is requeued.")
]

class Backend(StrEnum):
    transformers = "transformers"
    vllm = "vllm"


def _database(database_url: str | None):
    from tuneforge.store.db import Database

    db = Database(database_url)
    db.migrate()
    return db


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Job worker processes to run beside the server (0: none).")] = 1,
    max_batch: Annotated[int, typer.Option(help="Sequences decoded together per model.")] = 32,
    max_adapters: Annotated[int, typer.Option(help="LoRA adapters kept loaded per base model.")] = 8,
    backend: Annotated[Backend, typer.Option(help="Serving engine: transformers (any machine) or vllm (CUDA).")] = (
        Backend.transformers),
    quantize: Annotated[str | None, typer.Option(
        help="CPU serving: store weights in fp16 (same answers on our tasks, about 2x faster) or int4 (llama.cpp's "
             "Q4_1 layout, fastest for a single stream; see docs/benchmarks.md for what it costs).")] = None,
    stale_after: StaleAfter = 30.0,
    base: Annotated[list[str] | None, typer.Option(
        help="NAME=FOLDER: offer this HF model folder to every project as the base NAME (repeat; adds to "
             "$TUNEFORGE_BASES).")] = None,
    upstream_timeout: Annotated[float, typer.Option(
        envvar="TUNEFORGE_UPSTREAM_TIMEOUT", help="Seconds the proxy waits on an upstream provider.")] = 600.0,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Start the platform: the OpenAI-compatible API (and logging proxy), and job workers.

    Models it does not host go to the upstream named by $TUNEFORGE_UPSTREAM_URL (key in
    $TUNEFORGE_UPSTREAM_API_KEY) or a routes file at $TUNEFORGE_UPSTREAMS."""
    import uvicorn

    from tuneforge.capture import upstreams
    from tuneforge.server.app import create_app
    from tuneforge.server.deps import Settings
    from tuneforge.server.serving import Engines

    use(data_dir)
    if backend is Backend.vllm:
        from tuneforge.inference.vllm_engine import available

        available()
        if quantize:
            raise UserError("--quantize is for the CPU engine; vLLM takes the model's own quantization")
    if quantize:
        from tuneforge.inference.quantize import MODES

        if quantize not in MODES:
            raise UserError(f"--quantize {quantize}: use one of {', '.join(MODES)}")
    _check_port(host, port)
    _add_bases(base or [])
    routes = upstreams.from_env()  # a bad routes file fails here, before anything starts
    db = _database(database_url)
    procs = [_spawn_worker(db.url, stale_after) for _ in range(workers)]
    console.print(f"tuneforge on http://{host}:{port}  (data {paths.data_dir()}, store {db.url.split(':')[0]}, "
                  f"{workers} worker{'s' if workers != 1 else ''}"
                  f"{', proxying other models upstream' if routes else ''})")
    engines = Engines(max_batch, max_adapters, backend.value, quantize=quantize)
    app_ = create_app(db, engines, Settings(upstream_timeout=upstream_timeout), upstreams=routes)
    # uvicorn re-raises the SIGTERM it handled once it has shut down; with the default handler that would
    # kill this process before the `finally` below stops the workers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(app_, host=host, port=port, log_level="warning")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def _add_bases(items: list[str]) -> None:
    """--base NAME=FOLDER into $TUNEFORGE_BASES, which the workers inherit; each folder checked now."""
    from tuneforge.models import registry

    if items:
        os.environ["TUNEFORGE_BASES"] = ",".join(filter(None, [os.environ.get("TUNEFORGE_BASES", ""), *items]))
    for name in registry.local_bases():
        registry.materialize(name)  # a folder without config.json is an error now, not at the first request


def _check_port(host: str, port: int) -> None:
    """Fail before starting anything (workers included) when the address cannot be served."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({os.strerror(exc.errno)}): pick another with --port, "
                        "or stop what is using it") from None


def _spawn_worker(url: str, stale_after: float) -> subprocess.Popen:
    env = {**os.environ, "TUNEFORGE_DATABASE_URL": url, "TUNEFORGE_DATA_DIR": str(paths.data_dir())}
    cmd = [sys.executable, "-m", "tuneforge", "worker", "--stale-after", str(stale_after),
           "--parent-pid", str(os.getpid())]
    return subprocess.Popen(cmd, env=env)


@app.command()
def worker(
    stale_after: StaleAfter = 30.0,
    poll: Annotated[float, typer.Option(help="Seconds between polls of an empty queue.")] = 1.0,
    parent_pid: Annotated[int | None, typer.Option(hidden=True, help="Stop when this process is gone.")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Run jobs from the queue until stopped (SIGTERM or Ctrl-C requeues the running job at once)."""
    from tuneforge.worker.loop import Worker

    use(data_dir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(process)d %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    w = Worker(_database(database_url), poll_s=poll, heartbeat_s=min(2.0, stale_after / 4), stale_after_s=stale_after)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: w.shutdown(stop))
    if parent_pid is not None:  # started by `serve`: never outlive it, however it ended
        threading.Thread(target=_watch_parent, args=(parent_pid, w, stop), daemon=True).start()
    try:
        w.run_forever(stop)
    except KeyboardInterrupt:
        w.shutdown(stop)


def _watch_parent(parent_pid: int, w, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        if os.getppid() != parent_pid:
            logging.getLogger("tuneforge.worker").warning("serve process %d is gone; stopping", parent_pid)
            w.shutdown(stop)
            return
