"""What one project spent today through the logging proxy on the operator's provider keys, for its daily limit
(`limits.proxy_usd_per_day`).

Counted: the project's proxied calls (`source = "proxy"`) started since 00:00 UTC, priced by the shared table
(`capture/pricing.py`; not the project's own prices, which a tenant sets), except the calls made with the caller's
own provider key, which the proxy tags `tuneforge.upstream_key=caller`. Not counted: calls on models the pricing
table does not know (their cost is unknown: allowlist priced models only), and calls still in flight, so
concurrent calls can overshoot the limit by what they cost. The proxy reads this now and then and adds its own
calls as they finish (`server/rate.py`): the sum covers the whole day's logs, too slow for every call.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from tuneforge.capture import pricing
from tuneforge.capture.record import usage_of
from tuneforge.store.tables import LogTag, RequestLog

CALLER_KEY_TAG = ("tuneforge.upstream_key", "caller")  # the tag on a proxied call the caller's own key paid for
DAY_S = 86400


def day_start(now: float | None = None) -> float:
    """Unix seconds of the last 00:00 UTC."""
    now = time.time() if now is None else now
    return now - now % DAY_S


def proxied_usd_today(s: Session, project_id: str, now: float | None = None) -> float:
    """USD the project's proxied calls cost the operator since 00:00 UTC."""
    key, value = CALLER_KEY_TAG
    own = exists().where(LogTag.project_id == RequestLog.project_id, LogTag.log_id == RequestLog.id,
                         LogTag.key == key, LogTag.value == value)
    q = select(RequestLog.model, func.sum(RequestLog.prompt_tokens), func.sum(RequestLog.completion_tokens)).where(
        RequestLog.project_id == project_id, RequestLog.source == "proxy", RequestLog.started_at >= day_start(now),
        ~own,
    ).group_by(RequestLog.model)
    table = pricing.load()  # the shared prices, never the project's own: a tenant's $0 must not lift its cap
    return sum(table.cost(model, p or 0, c or 0) or 0.0 for model, p, c in s.execute(q))


def record_usd(record: dict[str, Any]) -> float:
    """What one capture record will be logged as costing (priced as `store/logs.py` prices it; 0 if unpriced)."""
    response = record.get("response")
    usage = usage_of(response)
    if not usage:
        return 0.0
    model = (response or {}).get("model") or record.get("model")
    return pricing.load().cost(model, *usage) or 0.0
