"""Overview (not built yet)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from tuneforge.console.auth import User
from tuneforge.console.render import page

router = APIRouter(include_in_schema=False)


@router.get("/")
def index(request: Request, user: User):
    return page(request, "placeholder.html", user, title="Overview")
