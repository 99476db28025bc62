"""Playground: chat with two or three models side by side, each reply streamed as it is generated.

The page only lays out the form: the browser (static/playground.js) calls the API's own /v1/chat/completions with
the session (tf.streamChat), once per column at the same time, so a reply is generated, routed (hosted model or
upstream), limited and logged exactly as an API call is. Each column keeps its own conversation in the page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from tuneforge.console.auth import User
from tuneforge.console.render import page
from tuneforge.server.deps import StateDep
from tuneforge.store import models

router = APIRouter(include_in_schema=False)
COLUMNS = 3
MAX_LISTED = 300  # models in each column's list (the bases, then the newest made here); others by name
MAX_TOKENS = 4096


def starting_models(listed: list[str], asked: list[str]) -> list[str]:
    """The model each column starts on: those asked for (`?model=`, e.g. from a model's page), then the listed
    ones in order, the last repeated if there are too few."""
    start = [m for m in asked if m][:COLUMNS]
    start += [m for m in listed if m not in start][:COLUMNS - len(start)]
    return start + [start[-1] if start else ""] * (COLUMNS - len(start))


@router.get("/playground")
def index(request: Request, state: StateDep, user: User,
          model: Annotated[list[str], Query(max_length=300)] = []):  # noqa: B006 (FastAPI copies the default)
    with state.db.session() as s:
        found = models.list_(s, user.project.id)  # what GET /v1/models lists
    bases = [m.id for m in found if m.source == "base"]
    made = [m.id for m in reversed(found) if m.source != "base"][:max(0, MAX_LISTED - len(bases))]
    start = starting_models(made + bases, model)  # the newest fine-tune or merge first, when there is one
    listed = set(bases) | set(made)
    return page(request, "playground.html", user, bases=bases, made=made, start=start,
                custom=[m if m not in listed else "" for m in start],
                count=min(COLUMNS, max(2, len([m for m in model if m]))), max_tokens=MAX_TOKENS)
