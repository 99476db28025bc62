"""The FastAPI application: routers, error handlers, the request guard (body cap, x-request-id) and /health."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import text

from tuneforge import console
from tuneforge.capture import upstreams as upstreams_
from tuneforge.capture.forward import Forwarder
from tuneforge.server import errors, guard
from tuneforge.server.deps import Settings, State
from tuneforge.server.log_sink import LogSink
from tuneforge.server.proxy import ProxyMiddleware
from tuneforge.server.routes import (
    admin,
    bakeoffs,
    chat,
    completions,
    datasets,
    evals,
    files,
    fine_tuning,
    logs,
    merges,
    models,
    reports,
)
from tuneforge.server.serving import Engines
from tuneforge.store.db import Database


def create_app(db: Database, engines: Engines | None = None, settings: Settings | None = None,
               upstreams: upstreams_.Upstreams | None = None) -> FastAPI:
    state = State(db=db, engines=engines or Engines(), settings=settings or Settings())
    upstreams = upstreams_.from_env() if upstreams is None else upstreams
    sink = LogSink(db)
    forwarder = Forwarder(timeout=state.settings.upstream_timeout)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await forwarder.close()
        sink.close()
        state.engines.close()

    app = FastAPI(
        title="tuneforge", version="0.1.0", lifespan=lifespan,
        description="OpenAI-compatible fine-tuning and serving (files, fine-tuning jobs, models, completions), "
                    "a logging proxy to upstream providers, request logs, datasets, evals and savings reports.",
    )
    app.state.tuneforge = state
    app.state.upstreams = upstreams  # what the proxy forwards to (the console's settings page shows it)
    errors.install(app)
    for module in (files, fine_tuning, models, chat, completions, logs, datasets, evals, merges, bakeoffs, reports,
                   admin):
        app.include_router(module.router)
    console.install(app)  # the web console at /

    @app.get("/health", tags=["health"])
    def health() -> dict:
        """200 when the store answers; with each loaded engine's load (sequences in flight)."""
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"status": "ok", "engines": app.state.tuneforge.engines.load()}

    # outermost of the app's middleware: a proxied call skips the app's body parsing and validation altogether
    app.add_middleware(ProxyMiddleware, state=state, upstreams=upstreams, sink=sink, forwarder=forwarder)
    # around everything, Starlette's 500 handling included: the body cap as bytes arrive, and x-request-id
    guard.install(app, state)

    return app
