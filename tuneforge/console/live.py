"""Live job events for the console, as server-sent events: a job's events as they are written (training steps with
their loss, eval progress, messages), then its status, until it ends. The browser's EventSource reconnects by
itself and says the last event it saw (Last-Event-ID), so nothing is shown twice or missed.

Bounded: each stream lives at most `MAX_STREAM_S` (the browser reconnects), polls the store every `POLL_S`, and a
project may hold at most `MAX_STREAMS_PER_PROJECT` at once in this process (429 past that)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from tuneforge.console.auth import User
from tuneforge.errors import RateLimited
from tuneforge.server.deps import StateDep
from tuneforge.store import jobs
from tuneforge.store.tables import Job, JobEvent

router = APIRouter(include_in_schema=False)
POLL_S = 0.5
MAX_STREAM_S = 600.0
HEARTBEAT_S = 15.0
MAX_STREAMS_PER_PROJECT = 16
BATCH = 200

_open: dict[str, int] = {}
_lock = threading.Lock()


def _poll(state, job_id: str, after: int) -> tuple[list[dict], str, dict]:
    with state.db.session() as s:
        rows = s.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > after)
                         .order_by(JobEvent.seq).limit(BATCH)).all()
        job = s.get(Job, job_id)
        events = [{"seq": e.seq, "id": e.id, "created_at": e.created_at, "level": e.level, "type": e.type,
                   "message": e.message, "data": e.data} for e in rows]
        return events, job.status, {"error": job.error, "result": job.result or {}}


def sse(event: str, data: dict, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.get("/jobs/{job_id}/live")
async def live(request: Request, state: StateDep, user: User, job_id: str, after: int = 0):
    """`job_event` for each event (oldest first), `status` when the status changes, `end` once the job has
    ended and every event is sent."""
    with state.db.session() as s:
        jobs.get(s, job_id, project_id=user.project.id)  # NotFound for another project's job
    last = request.headers.get("last-event-id", "")
    after = int(last) if last.isdigit() else max(after, 0)
    project_id = user.project.id
    with _lock:
        if _open.get(project_id, 0) >= MAX_STREAMS_PER_PROJECT:
            raise RateLimited(f"This project has {MAX_STREAMS_PER_PROJECT} live views open: close some tabs.",
                              retry_after=10)
        _open[project_id] = _open.get(project_id, 0) + 1

    async def stream():
        nonlocal after
        status, beat, deadline = None, time.monotonic(), time.monotonic() + MAX_STREAM_S
        try:
            yield "retry: 2000\n\n"
            while time.monotonic() < deadline and not await request.is_disconnected():
                events, now_status, info = await run_in_threadpool(_poll, state, job_id, after)
                for e in events:
                    after = e["seq"]
                    yield sse("job_event", e, e["seq"])
                if now_status != status:
                    status = now_status
                    yield sse("status", {"status": status, **info})
                if status in jobs.FINAL and len(events) < BATCH:
                    yield sse("end", {"status": status})
                    return
                if time.monotonic() - beat > HEARTBEAT_S:
                    beat = time.monotonic()
                    yield ": keep-alive\n\n"
                if len(events) < BATCH:
                    await asyncio.sleep(POLL_S)
        finally:
            with _lock:
                _open[project_id] -= 1
                if not _open[project_id]:
                    del _open[project_id]

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
