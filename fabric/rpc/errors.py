"""Errors as wire data, and back.

A handler's exception travels as ``{"type", "code", "message", "fields"}`` plus the
formatted traceback. On the caller's side :func:`from_wire` rebuilds registered
:class:`~fabric.exception.FabricError` types as themselves and anything else as
:class:`~fabric.exception.RemoteError` carrying the remote type, message and
traceback. The type name is only ever looked up in the registry: nothing named in a
message is imported.
"""

from __future__ import annotations

import traceback as tb
from typing import Any

from fabric import exception
from fabric.exception import FabricError


def to_wire(exc: BaseException) -> tuple[dict[str, Any], str]:
    """(error data, formatted traceback) for an exception raised by a handler."""
    trace = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, FabricError):
        return exc.to_dict(), trace
    return {"type": type(exc).__name__, "code": 500, "message": str(exc), "fields": {}}, trace


def from_wire(error: dict[str, Any], traceback: str = "") -> FabricError:
    """The exception a caller raises for a remote error (never imports anything)."""
    return exception.rebuild(error, traceback)
