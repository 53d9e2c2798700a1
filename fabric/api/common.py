"""What every API resource shares: its dependencies, the caller's context,
body parsing through marshmallow schemas, and the authorisation checks."""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

import falcon
import marshmallow
import sqlalchemy as sa

from fabric import config, exception
from fabric.api import input_limits
from fabric.api.clients import Clients
from fabric.context import RequestContext
from fabric.db import Database


@dataclasses.dataclass
class ApiDeps:
    """Everything a resource needs: settings, the database and the worker clients."""

    settings: config.Settings
    db: Database
    clients: Clients
    #: The port actually bound (differs from settings when it was 0).
    bound_port: int | None = None
    #: The API's cast outbox (:mod:`fabric.rpc.outbox`) over ``clients``; build_app makes it.
    outbox: Any = None

    def base_url(self, req: falcon.Request | None = None) -> str:
        """The public base URL: ``[api] public_url``, else http://listen:port."""
        if self.settings.api.public_url:
            return self.settings.api.public_url.rstrip("/")
        listen = self.settings.api.listen
        port = self.bound_port or self.settings.api.port
        if listen in ("0.0.0.0", "::", "") and req is not None:
            return req.prefix
        return config.reachable_url(listen, port)


def deps(req: falcon.Request) -> ApiDeps:
    return req.context.deps


def ctx(req: falcon.Request) -> RequestContext:
    """The caller's context (set by the auth middleware)."""
    return req.context.fabric


def visible(context: RequestContext, project_id: str | None) -> bool:
    """Whether a resource of ``project_id`` may be seen by the caller."""
    return context.is_admin or (project_id is not None and project_id == context.project_id)


def require_project(context: RequestContext) -> str:
    if not context.project_id:
        raise exception.Forbidden(reason="this request needs a project-scoped token")
    return context.project_id


def read_json(req: falcon.Request) -> Any:
    """The request body as JSON, held to :mod:`fabric.api.input_limits`; Invalid naming
    the problem otherwise, RequestTooLarge past ``[api] max_request_body``."""
    raw = input_limits.read_body(req, deps(req).settings.api.max_request_body)
    if not raw:
        raise exception.Invalid(reason="the request body is empty; a JSON document is required")
    return input_limits.parse_json(raw)


def _flatten(messages: Any, data: Any, prefix: str = "") -> list[str]:
    out: list[str] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            sub = data.get(key) if isinstance(data, dict) else (
                data[key] if isinstance(data, list) and isinstance(key, int) and key < len(data) else None)
            out += _flatten(value, sub, path)
    elif isinstance(messages, list) and messages and all(isinstance(m, str) for m in messages):
        shown = "" if data is None else f" (got {json.dumps(data, default=str)[:80]})"
        out.append(f"'{prefix}': {' '.join(messages)}{shown}")
    elif isinstance(messages, list):
        for item in messages:
            out += _flatten(item, data, prefix)
    else:
        out.append(f"'{prefix}': {messages}")
    return out


def load(schema: marshmallow.Schema, data: Any) -> dict:
    """Validate ``data`` with ``schema``; Invalid naming every bad field and value."""
    try:
        return schema.load(data)
    except marshmallow.ValidationError as err:
        problems = "; ".join(_flatten(err.messages, data))
        raise exception.Invalid(reason=f"invalid field {problems}") from None


def body(req: falcon.Request, schema: marshmallow.Schema) -> dict:
    return load(schema, read_json(req))


def get_or_404(session, model: type, ident: Any, kind: str) -> Any:
    """The ``model`` row whose primary key is ``ident``; NotFound (404) naming ``kind`` and
    ``ident`` when there is none."""
    row = session.get(model, ident)
    if row is None:
        raise exception.NotFound(kind=kind, ident=ident)
    return row


def respond(resp: falcon.Response, doc: Any, status: int = 200) -> None:
    resp.status = status
    resp.media = doc


def isotime(value: datetime.datetime | None, micro: bool = False) -> str | None:
    """Naive UTC as ISO 8601 with a Z (the clients' format)."""
    if value is None:
        return None
    return value.isoformat(timespec="microseconds" if micro else "seconds") + "Z"


def equal_filters(query: sa.Select, req: falcon.Request, columns: dict[str, Any]) -> sa.Select:
    """``query`` narrowed to the rows whose column equals each of these query parameters
    the request gives (absent or empty ones do not filter)."""
    for param, column in columns.items():
        value = req.get_param(param)
        if value:
            query = query.where(column == value)
    return query


#: The largest whole number a query parameter or a body's INTEGER-column field may carry: the
#: largest an INTEGER column holds on every backend (PostgreSQL refuses a bigger value, even as
#: a comparand or a LIMIT, with an error rather than an empty answer), and far beyond any real
#: page size, offset or flavor size.
INT_MAX = 2**31 - 1


def int_param(req: falcon.Request, name: str, default: int | None = None, minimum: int = 0) -> int | None:
    """Query parameter ``name`` as a whole number from ``minimum`` to :data:`INT_MAX`
    (``default`` when absent); Invalid (400) naming the parameter and its value otherwise."""
    raw = req.get_param(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise exception.Invalid(reason=f"query parameter {name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise exception.Invalid(reason=f"query parameter {name}={value} must be at least {minimum}")
    if value > INT_MAX:
        raise exception.Invalid(reason=f"query parameter {name}={value} must be at most {INT_MAX}")
    return value


class StrictBoolean(marshmallow.fields.Boolean):
    """A JSON ``true`` or ``false`` only, as Keystone's schemas ask: ``"False"``, ``1`` or
    ``"yes"`` is refused (400 naming the field), not read as a truth value."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):  # 1 == True in Python: membership tests would take it
            raise self.make_error("invalid", input=value)
        return value
