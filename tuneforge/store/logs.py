"""Request logs: ingest captured calls (idempotent by id within a project), find them by filter, total their cost.

A filter is model, tags (`key=value` exact, `key~text` contains), status (`ok`, `error` or an HTTP code),
a time range and a text search over request and response.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tuneforge.capture import pricing
from tuneforge.capture.record import usage_of
from tuneforge.errors import NotFound, UserError
from tuneforge.store import prices
from tuneforge.store.db import now
from tuneforge.store.tables import LogTag, RequestLog

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
MAX_IDS = 1000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(value: str | float | None, param: str) -> float | None:
    """Unix seconds from seconds, an ISO date/time, or an age (`90m`, `24h`, `7d`: that long ago)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    if m := _RELATIVE.match(text):
        return time.time() - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise UserError(f"{param}: '{value}' is not a time: use an ISO date (2026-11-27T10:00), Unix seconds, "
                        "or an age like 90m, 24h, 7d", param=param) from None


@dataclass
class LogFilter:
    model: str | None = None
    tags: list[str] = field(default_factory=list)  # "key=value" (exact) or "key~text" (contains)
    status: str | None = None  # "ok" | "error" | an HTTP status code
    since: str | float | None = None
    until: str | float | None = None
    search: str | None = None
    ids: list[str] = field(default_factory=list)  # only these logs (e.g. rows picked in the console)

    def conditions(self, project_id: str) -> list:
        where = [RequestLog.project_id == project_id]
        if self.ids:
            if len(self.ids) > MAX_IDS:
                raise UserError(f"ids: at most {MAX_IDS} log ids at once; use a filter for more", param="ids")
            where.append(RequestLog.id.in_(self.ids))
        if self.model:
            where.append(RequestLog.model == self.model)
        for tag in self.tags:
            where.append(_tag_condition(project_id, tag))
        if self.status:
            where.append(_status_condition(self.status))
        if (since := parse_time(self.since, "since")) is not None:
            where.append(RequestLog.started_at >= since)
        if (until := parse_time(self.until, "until")) is not None:
            where.append(RequestLog.started_at < until)
        if self.search:
            pattern = f"%{self.search.lower()}%"
            where.append(func.lower(RequestLog.request).like(pattern) | func.lower(RequestLog.response).like(pattern))
        return where

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, [], "")}


def _tag_condition(project_id: str, tag: str):
    m = re.match(r"^([^=~]+)([=~])(.*)$", tag)
    if not m:
        raise UserError(f"tag filter '{tag}': write key=value (exact) or key~text (contains)", param="tag")
    key, op, value = m.group(1).strip(), m.group(2), m.group(3)
    match = LogTag.value == value if op == "=" else LogTag.value.contains(value, autoescape=True)
    # EXISTS, looked up by the tags' primary key row by row as the newest-first walk goes: a page stops after
    # `limit` hits. (An IN list would first collect every log with the tag: a quarter of 100k logs for a
    # common one, on every page.)
    return select(LogTag.log_id).where(LogTag.project_id == RequestLog.project_id, LogTag.log_id == RequestLog.id,
                                       LogTag.key == key, match).exists()


def _status_condition(status: str):
    if status == "ok":
        return RequestLog.ok.is_(True)
    if status == "error":
        return RequestLog.ok.is_(False)
    if status.isascii() and status.isdigit():
        return RequestLog.status == int(status)
    raise UserError(f"status filter '{status}': use ok, error or an HTTP status code like 429", param="status")


def _row(project_id: str, r: dict[str, Any], table: pricing.Pricing, created: int) -> dict[str, Any]:
    response = r.get("response")
    usage = usage_of(response)
    prompt, completion = usage or (0, 0)
    model = r.get("model") or (response or {}).get("model") or "unknown"
    priced = (response or {}).get("model") or model
    status = r.get("status")
    return {
        "id": r["id"], "project_id": project_id, "source": r.get("source") or "sdk",
        "model": model.replace("\x00", "")[:300],
        "status": status, "ok": status is not None and 200 <= status < 300 and not r.get("error"),
        "error": r.get("error"), "request": json.dumps(r.get("request") or {}, ensure_ascii=False),
        "response": None if response is None else json.dumps(response, ensure_ascii=False),
        "started_at": float(r["started_at"]),
        "latency_ms": float(r.get("latency_ms") or 0.0), "ttft_ms": r.get("ttft_ms"),
        "stream": bool(r.get("stream")), "prompt_tokens": prompt, "completion_tokens": completion,
        "cost_usd": table.cost(priced, prompt, completion) if usage else None, "tags": _clean_tags(r.get("tags")),
        "created_at": created,
    }


def _clean_tags(tags: dict | None) -> dict[str, str]:
    """Tags as stored: strings, keys cut to 64 and values to 500 characters, no NUL (Postgres refuses it)."""
    out: dict[str, str] = {}
    for k, v in (tags or {}).items():
        out.setdefault(str(k).replace("\x00", "")[:64], str(v).replace("\x00", "")[:500])
    return out


def _insert(s: Session, table):
    return (postgresql if s.bind.dialect.name == "postgresql" else sqlite).insert(table)


def ingest(s: Session, project_id: str, records: list[dict[str, Any]]) -> int:
    """Store records whose id is new in this project; returns how many were new (a redelivered record is skipped;
    another project's ids are no concern: each project has its own)."""
    if not records:
        return 0
    table, created = prices.table(s, project_id), now()  # the project's own prices over the shared table
    rows = {r["id"]: _row(project_id, r, table, created) for r in records}  # a batch may repeat an id, too
    stmt = _insert(s, RequestLog).on_conflict_do_nothing(index_elements=["project_id", "id"]).returning(RequestLog.id)
    inserted = set(s.scalars(stmt, list(rows.values())))
    tags = [{"project_id": project_id, "log_id": i, "key": k, "value": v}
            for i in inserted for k, v in rows[i]["tags"].items()]
    if tags:
        s.execute(_insert(s, LogTag), tags)
    return len(inserted)


def list_(s: Session, project_id: str, flt: LogFilter, *, after: str | None = None, before: str | None = None,
          limit: int = 20) -> tuple[list[RequestLog], bool]:
    """Newest first, a page at a time by keyset (never OFFSET: a page deep in 100k logs costs what the first
    does): `after` is the id of the last log of the previous page. With `before` (the first log of the next
    page), the page before that one, still newest first; the flag then says whether there are newer ones."""
    q = select(RequestLog).where(*flt.conditions(project_id))
    newest_first = before is None
    if anchor := s.get(RequestLog, {"project_id": project_id, "id": after or before}) if after or before else None:
        # the bound on started_at alone first: the index seeks straight to the anchor (an OR of the two would
        # make the database walk every newer log to get there)
        at = anchor.started_at
        if newest_first:
            q = q.where(RequestLog.started_at <= at, (RequestLog.started_at < at) | (RequestLog.id < anchor.id))
        else:
            q = q.where(RequestLog.started_at >= at, (RequestLog.started_at > at) | (RequestLog.id > anchor.id))
    order = (RequestLog.started_at.desc(), RequestLog.id.desc()) if newest_first else (RequestLog.started_at,
                                                                                       RequestLog.id)
    rows = list(s.scalars(q.order_by(*order).limit(limit + 1)))
    page = rows[:limit]
    return (page if newest_first else page[::-1]), len(rows) > limit


def recent_models(s: Session, project_id: str, scan: int = 2000) -> list[str]:
    """The models of the project's newest `scan` logs (a bounded query for a filter's suggestions: a DISTINCT
    over every log would read them all)."""
    newest = (select(RequestLog.model).where(RequestLog.project_id == project_id)
              .order_by(RequestLog.started_at.desc()).limit(scan).subquery())
    return sorted(s.scalars(select(newest.c.model).distinct()))


def count(s: Session, project_id: str, flt: LogFilter) -> int:
    return s.scalar(select(func.count()).select_from(RequestLog).where(*flt.conditions(project_id))) or 0


def matching(s: Session, project_id: str, flt: LogFilter):
    """Every matching log, oldest first, streamed in pages (for exports and datasets)."""
    q = select(RequestLog).where(*flt.conditions(project_id)).order_by(RequestLog.started_at, RequestLog.id)
    yield from s.scalars(q.execution_options(yield_per=500))


def get(s: Session, log_id: str, project_id: str) -> RequestLog:
    row = s.get(RequestLog, {"project_id": project_id, "id": log_id})
    if row is None:
        raise NotFound(f"No log {log_id} in this project: `tuneforge logs list` shows the ids", param="log_id")
    return row


GROUPS = ("model", "day", "tag:KEY")


def _day(s: Session):
    """A log's UTC date, as the database computes it."""
    if s.bind.dialect.name == "postgresql":
        return func.date(func.timezone("UTC", func.to_timestamp(RequestLog.started_at)))
    return func.date(RequestLog.started_at, "unixepoch")


def daily(s: Session, project_id: str, since: float) -> list[dict[str, Any]]:
    """Calls, errors and USD per UTC day and model since `since` (the console's overview charts), oldest first."""
    day = _day(s)
    q = (select(day, RequestLog.model, func.count(), func.sum(RequestLog.cost_usd),
                func.sum(case((RequestLog.ok.is_(False), 1), else_=0)))
         .where(RequestLog.project_id == project_id, RequestLog.started_at >= since)
         .group_by(day, RequestLog.model).order_by(day))
    return [{"day": str(d), "model": m, "calls": n, "cost_usd": float(c or 0.0), "errors": int(e or 0)}
            for d, m, n, c, e in s.execute(q)]


def costs(s: Session, project_id: str, flt: LogFilter, by: str = "model") -> list[dict[str, Any]]:
    """Calls, tokens and USD per model, per day (UTC) or per value of one tag (`tag:team`)."""
    if by == "model":
        key = RequestLog.model
        q = select(key)
    elif by == "day":
        key = _day(s)
        q = select(key)
    elif by.startswith("tag:") and len(by) > 4:
        key = LogTag.value
        q = select(key).join(LogTag, and_(LogTag.project_id == RequestLog.project_id, LogTag.log_id == RequestLog.id,
                                          LogTag.key == by[4:]))
    else:
        raise UserError(f"cannot group costs by '{by}': use one of {', '.join(GROUPS)}", param="by")
    q = q.add_columns(
        func.count(), func.sum(RequestLog.prompt_tokens), func.sum(RequestLog.completion_tokens),
        func.sum(RequestLog.cost_usd), func.count(RequestLog.cost_usd),
    ).where(*flt.conditions(project_id)).group_by(key).order_by(key)
    return [
        {"key": str(k), "calls": n, "prompt_tokens": int(p or 0), "completion_tokens": int(c or 0),
         "cost_usd": float(cost or 0.0), "unpriced_calls": n - priced}
        for k, n, p, c, cost, priced in s.execute(q)
    ]


def totals(s: Session, project_id: str, flt: LogFilter) -> dict[str, Any]:
    """Calls, tokens, cost and the time span of the matching calls (for the savings report)."""
    q = select(func.count(), func.sum(RequestLog.prompt_tokens), func.sum(RequestLog.completion_tokens),
               func.sum(RequestLog.cost_usd), func.count(RequestLog.cost_usd), func.min(RequestLog.started_at),
               func.max(RequestLog.started_at)).where(*flt.conditions(project_id))
    n, p, c, cost, priced, first, last = s.execute(q).one()
    return {"calls": n, "prompt_tokens": int(p or 0), "completion_tokens": int(c or 0), "cost_usd": float(cost or 0),
            "unpriced_calls": n - priced, "first": first, "last": last}
