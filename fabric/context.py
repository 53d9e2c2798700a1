"""The request context that travels with every message and every log line.

A context names who asked (user, project, roles) and carries one request id
from the API through every worker the request touches. The current context is
held in a :mod:`contextvars` variable, which green threads each get their own
copy of, so the log formatter can always find the request id.
"""

from __future__ import annotations

import contextvars
import dataclasses
import uuid
from typing import Any

_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "fabric_request_context", default=None
)


def new_request_id() -> str:
    return "req-" + str(uuid.uuid4())


@dataclasses.dataclass(frozen=True)
class RequestContext:
    """Who is asking, and which request this work belongs to."""

    request_id: str = dataclasses.field(default_factory=new_request_id)
    user_id: str | None = None
    project_id: str | None = None
    roles: tuple[str, ...] = ()
    is_admin: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["roles"] = list(self.roles)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestContext:
        """Rebuild a context from wire data; unknown keys are ignored."""
        return cls(
            request_id=str(data.get("request_id") or new_request_id()),
            user_id=data.get("user_id"),
            project_id=data.get("project_id"),
            roles=tuple(data.get("roles") or ()),
            is_admin=bool(data.get("is_admin", False)),
        )

    @classmethod
    def admin(cls) -> RequestContext:
        """A context for the system's own work (periodic tasks, reconcilers)."""
        return cls(user_id="fabric", roles=("admin",), is_admin=True)

    def activate(self) -> contextvars.Token:
        """Make this the current context; returns a token for :func:`reset`."""
        return _current.set(self)


def current() -> RequestContext | None:
    return _current.get()


def reset(token: contextvars.Token) -> None:
    _current.reset(token)
