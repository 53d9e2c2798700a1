"""What the Block Storage resources share: the service, microversions, paging and bodies."""

from __future__ import annotations

from typing import Any

import falcon
import sqlalchemy as sa

from fabric import exception
from fabric.api import common
from fabric.volume.api import VolumeService

ROOT = "/volume"
PREFIX = "/volume/v3"
#: The microversions served: the base 3.0 only (openstacksdk then asks for nothing newer).
MIN_VERSION = MAX_VERSION = "3.0"
#: Largest page a listing answers when the request names none (Cinder's osapi_max_limit).
MAX_PAGE = 1000


def service(req: falcon.Request) -> VolumeService:
    """The volume service over the API's database and its volume workers' client."""
    deps = common.deps(req)
    return VolumeService(deps.db, deps.clients.volume, down_time=deps.settings.service.service_down_time,
                         availability_zone=deps.settings.volume.availability_zone)


def entity(req: falcon.Request, key: str) -> dict[str, Any]:
    """The request body's ``key`` object; Invalid naming ``key`` when it is absent or not an object."""
    doc = common.read_json(req)
    if not isinstance(doc, dict) or not isinstance(doc.get(key), dict):
        raise exception.Invalid(reason=f"the body must be a JSON object with a {key!r} object")
    return doc[key]


def text(value: Any, name: str, *, limit: int = 255) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > limit):
        raise exception.Invalid(reason=f"{name} {value!r} is not a string of at most {limit} characters")
    return value


def boolean(value: Any, name: str) -> bool:
    """A JSON boolean, or one of Cinder's accepted strings ("true"/"false", "1"/"0", ...)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "y", "t"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off", "n", "f"):
        return False
    raise exception.Invalid(reason=f"{name} {value!r} is not a boolean (true or false)")


def size(value: Any, name: str) -> int:
    """A size in GiB as Cinder accepts it: a whole number, also as a string ("1")."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= common.INT_MAX:
        raise exception.Invalid(reason=f"{name} {value!r} is not a whole number of GiB from 1 to {common.INT_MAX}")
    return value


def sort_order(req: falcon.Request, columns: dict[str, Any]) -> list[Any]:
    """ORDER BY clauses from ``sort=key:dir,key`` or ``sort_key``/``sort_dir`` (Cinder's two forms);
    created_at desc by default, the id always last so pages are stable. Invalid names the bad key."""
    pairs: list[tuple[str, str]] = []
    if req.get_param("sort"):
        for item in req.get_param("sort").split(","):
            key, _, direction = item.strip().partition(":")
            pairs.append((key, direction or "desc"))
    elif req.get_param("sort_key"):
        pairs.append((req.get_param("sort_key"), req.get_param("sort_dir") or "desc"))
    else:
        pairs.append(("created_at", "desc"))
    order = []
    for key, direction in pairs:
        if key not in columns:
            raise exception.Invalid(reason=f"sort key {key!r} is not supported; use one of {', '.join(sorted(columns))}")
        if direction.lower() not in ("asc", "desc"):
            raise exception.Invalid(reason=f"sort direction {direction!r} of {key} must be asc or desc")
        order.append(columns[key].asc() if direction.lower() == "asc" else columns[key].desc())
    return order + [columns["id"].asc()]


def page(session: Any, query: sa.Select, req: falcon.Request, model: Any, what: str) -> tuple[list, bool]:
    """One page of ``query``'s rows after ``marker`` (an id in the listing), at most ``limit``;
    (rows, whether the page is full). A full page gets a next link even when nothing follows
    (then to an empty page), as Cinder's: its clients expect the link whenever the page is full.
    Invalid for a marker that is not in the listing."""
    limit = common.int_param(req, "limit", minimum=0)
    limit = MAX_PAGE if limit is None else min(limit, MAX_PAGE)
    marker = req.get_param("marker")
    rows = list(session.scalars(query))
    if marker:
        index = next((i for i, row in enumerate(rows) if row.id == marker), None)
        if index is None:
            raise exception.Invalid(reason=f"marker {marker!r} is not a {what} in this listing")
        rows = rows[index + 1:]
    shown = rows[:limit]
    return shown, bool(shown) and len(shown) == limit


def next_link(req: falcon.Request, collection: str, rows: list, full: bool) -> list[dict] | None:
    if not (full and rows):
        return None
    base = common.deps(req).base_url(req)
    params = {k: v for k, v in req.params.items() if k != "marker"}
    query = "&".join([*(f"{k}={v}" for k, v in params.items()), f"marker={rows[-1].id}"])
    return [{"rel": "next", "href": f"{base}{PREFIX}/{collection}?{query}"}]


def version_header(resp: falcon.Response) -> None:
    resp.set_header("OpenStack-API-Version", f"volume {MAX_VERSION}")
    resp.set_header("Vary", "OpenStack-API-Version")


def _stamp_version(req: falcon.Request, resp: falcon.Response, resource: Any, *args: Any, **kwargs: Any) -> None:
    version_header(resp)


#: Class decorator of every Block Storage resource: each answer names the microversion it speaks,
#: as Cinder's do (clients that asked for one check the answer's header on every response).
versioned = falcon.after(_stamp_version)
