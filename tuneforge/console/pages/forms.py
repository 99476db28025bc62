"""What the pages' form handlers share: the status a refused form is shown again with, and cancelling a job from
its page (a job that has already ended is said on the page, not as an error page)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.responses import RedirectResponse

from tuneforge.errors import Conflict, TuneforgeError
from tuneforge.server.errors import STATUS


def status_of(exc: TuneforgeError) -> int:
    """The HTTP status the API answers this error with: a form shown again with it answers the same."""
    return next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 400)


def cancel_then(cancel: Callable[[], Any], show: Callable[[str], Any], back_to: str):
    """`cancel()`, then back to `back_to`; when the job had already ended, `show(reason)`: its page with the
    reason (409)."""
    try:
        cancel()
    except Conflict as exc:
        return show(str(exc))
    return RedirectResponse(back_to, status_code=303)
