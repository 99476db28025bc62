"""The web console's sessions. Signing in with an API key makes a session; the browser keeps a random token in
an HttpOnly cookie and the store keeps only its sha256. A session acts for its key: revoking the key, or the
key's project losing it, ends every session made with it. Each session has its own CSRF token, which every
state-changing console request must echo."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tuneforge.store import projects
from tuneforge.store.db import now
from tuneforge.store.tables import ApiKey, ConsoleSession, Project

COOKIE = "tf_session"  # the cookie that carries the token
CSRF_HEADER = "x-csrf-token"  # where console scripts send the CSRF token
LIFETIME_S = 7 * 86400
MAX_PER_KEY = 50  # a key's newest sessions kept; signing in again past that ends its oldest


@dataclass(frozen=True)
class SignedIn:
    project: Project
    key_id: str
    key_prefix: str
    csrf: str
    expires_at: int


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign_in(s: Session, key: str | None, lifetime_s: int = LIFETIME_S) -> tuple[str, SignedIn]:
    """A new session for a valid key: the cookie's token (shown once) and who it signs in. Unauthorized for a
    missing, unknown or revoked key (projects.key_of's message)."""
    row = projects.key_of(s, (key or "").strip() or None)
    token = secrets.token_urlsafe(32)
    created = time.time()
    session = ConsoleSession(id=_hash(token), project_id=row.project_id, key_id=row.id,
                             csrf=secrets.token_urlsafe(24), created_at=created,
                             expires_at=int(created) + lifetime_s)
    s.add(session)
    s.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < created))  # the expired, of everyone
    s.flush()
    kept = (select(ConsoleSession.id).where(ConsoleSession.key_id == row.id)
            .order_by(ConsoleSession.created_at.desc()).limit(MAX_PER_KEY))
    s.execute(delete(ConsoleSession).where(ConsoleSession.key_id == row.id, ConsoleSession.id.not_in(kept)))
    return token, SignedIn(s.get(Project, row.project_id), row.id, row.prefix, session.csrf, session.expires_at)


def resolve(s: Session, token: str | None) -> SignedIn | None:
    """Who a cookie's token signs in; None when it is unknown, expired, or its key was revoked."""
    if not token:
        return None
    found = s.execute(select(ConsoleSession, ApiKey).join(ApiKey, ApiKey.id == ConsoleSession.key_id)
                      .where(ConsoleSession.id == _hash(token))).first()
    if found is None:
        return None
    session, key = found
    if session.expires_at < now() or key.revoked_at is not None:
        return None
    return SignedIn(s.get(Project, session.project_id), key.id, key.prefix, session.csrf, session.expires_at)


def project_of(s: Session, token: str | None, csrf: str | None) -> Project | None:
    """The project of a console session's API call: its cookie's token and, in a header, its CSRF token (the
    cookie alone never: a browser sends it along with another site's requests too)."""
    user = resolve(s, token) if csrf else None
    return user.project if user is not None and hmac.compare_digest(csrf, user.csrf) else None


def sign_out(s: Session, token: str | None) -> None:
    if token:
        s.execute(delete(ConsoleSession).where(ConsoleSession.id == _hash(token)))
