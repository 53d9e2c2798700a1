"""Browser sessions: the API token stays on the server, the browser holds only a
random session id in an HttpOnly, SameSite cookie.

Every session, anonymous or logged in, has its own CSRF token; every form
and every script request that changes something must send it back
(:func:`csrf_ok`). Logging in starts a new session (a new id and a new CSRF
token) so an id planted before login is worthless after it.
"""

from __future__ import annotations

import collections
import dataclasses
import hmac
import secrets
import threading
import time
from typing import Any

from fabric.dashboard.client import ApiClient, Endpoints

#: The session cookie; scoped to the dashboard's path.
COOKIE = "fabric_dashboard"
COOKIE_PATH = "/dashboard"

#: Seconds an anonymous session (one that only shows the login form) lives.
ANONYMOUS_TTL = 3600.0

#: Most sessions kept; the least recently used go first (each holds a few KiB).
MAX_SESSIONS = 10_000


@dataclasses.dataclass
class Session:
    """One browser's state. ``token`` is None until the user logs in."""

    id: str
    csrf: str
    expires: float
    token: str | None = None
    user: str = ""
    project: str = ""
    project_id: str = ""
    roles: tuple[str, ...] = ()
    endpoints: Endpoints | None = None
    #: Small per-session memo (feature probes, the last listing a page polled).
    cache: dict[str, tuple[float, Any]] = dataclasses.field(default_factory=dict)

    @property
    def logged_in(self) -> bool:
        return self.token is not None and self.endpoints is not None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def client(self) -> ApiClient:
        assert self.token is not None and self.endpoints is not None
        return ApiClient(self.endpoints, self.token)

    def remembered(self, key: str, max_age: float) -> Any:
        """What :meth:`remember` stored under ``key`` less than ``max_age`` seconds ago, else None."""
        entry = self.cache.get(key)
        if entry is None or time.monotonic() - entry[0] > max_age:
            return None
        return entry[1]

    def remember(self, key: str, value: Any) -> Any:
        self.cache[key] = (time.monotonic(), value)
        return value


class SessionStore:
    """Sessions in this process's memory, by id (a dashboard restart logs everyone out;
    several dashboard processes behind one address need sticky routing)."""

    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        self._sessions: collections.OrderedDict[str, Session] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.max_sessions = max_sessions

    def __len__(self) -> int:
        return len(self._sessions)

    def new(self) -> Session:
        """A fresh anonymous session with its own CSRF token."""
        session = Session(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32),
                          expires=time.time() + ANONYMOUS_TTL)
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session ``session_id`` names, or None (unknown or expired)."""
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if session.expires <= time.time():
                del self._sessions[session_id]
                return None
            self._sessions.move_to_end(session_id)
            return session

    def drop(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.id, None)


def csrf_ok(session: Session | None, sent: str | None) -> bool:
    """Whether ``sent`` is this session's CSRF token (compared in constant time)."""
    if session is None or not sent:
        return False
    return hmac.compare_digest(session.csrf.encode(), sent.encode())


def cookie_attributes(secure: bool) -> dict[str, Any]:
    """The session cookie's flags: HttpOnly (no script reads it), SameSite=Lax (no other
    site's form or script sends it), the dashboard's path, Secure when served over HTTPS."""
    return {"path": COOKIE_PATH, "http_only": True, "same_site": "Lax", "secure": secure}
