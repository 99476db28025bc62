"""The FastAPI application: routers, error handlers, a request-size guard and /health."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from sqlalchemy import text

from tuneforge.capture import upstreams as upstreams_
from tuneforge.capture.forward import Forwarder
from tuneforge.server import errors
from tuneforge.server.deps import Settings, State
from tuneforge.server.log_sink import LogSink
from tuneforge.server.proxy import ProxyMiddleware
from tuneforge.server.routes import (
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
    errors.install(app)
    for module in (files, fine_tuning, models, chat, completions, logs, datasets, evals, merges, bakeoffs, reports):
        app.include_router(module.router)

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        settings = app.state.tuneforge.settings
        limit = settings.max_upload_bytes if request.url.path == "/v1/files" else settings.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return errors.error_response(413, f"Request body is over the {limit // (1 << 20)} MB limit: send less.",
                                         code="request_too_large")
        return await call_next(request)

    @app.get("/health", tags=["health"])
    def health() -> dict:
        """200 when the store answers; with each loaded engine's load (sequences in flight)."""
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"status": "ok", "engines": app.state.tuneforge.engines.load()}

    # outermost: a proxied call skips the app's body parsing and validation altogether
    app.add_middleware(ProxyMiddleware, state=state, upstreams=upstreams, sink=sink, forwarder=forwarder)

    return app
