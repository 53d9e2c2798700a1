"""Error bodies in the shapes each OpenStack API uses, chosen by the request path.

Identity: ``{"error": {"code", "title", "message"}}``; Compute:
``{"badRequest": {"code", "message"}}`` (the key names the status);
Network: ``{"NeutronError": {"type", "message", "detail"}}``; Image and fabric's
admin API: ``{"code", "title", "message"}``. Every message comes from a
:class:`~fabric.exception.FabricError`, which names the bad field or value.

A request that failed because the database could not be reached (refused,
lost mid-request, restarting: :func:`fabric.db.retry.is_connection_error`),
however the error reached here, is answered 503 with ``Retry-After``, never
500: nothing it wrote was committed unless the answer says so, and the same
request can be sent again. Every 503 carries ``Retry-After``. A write a unique or
foreign-key constraint refused (a race the handler's own check lost) is answered 409.
"""

from __future__ import annotations

import http
import json
import logging

import falcon

from fabric import exception
from fabric.db import constraints
from fabric.db.retry import describe, is_connection_error

LOG = logging.getLogger(__name__)

#: Seconds a client is told to wait before sending a request again after a 503.
RETRY_AFTER_SECONDS = 2

#: Compute's fault key per status (as nova's wsgi layer names them).
_COMPUTE_KEYS = {
    400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
    405: "badMethod", 406: "notAcceptable", 409: "conflictingRequest", 413: "overLimit",
    415: "badMediaType", 500: "computeFault", 501: "notImplemented", 503: "serviceUnavailable",
}


def api_of(path: str) -> str:
    """Which API a path belongs to: identity, compute, image, network, volume or admin."""
    if path.startswith("/compute"):
        return "compute"
    if path.startswith("/image"):
        return "image"
    if path.startswith("/networking"):
        return "network"
    if path.startswith("/volume"):
        return "volume"
    if path.startswith("/fabric"):
        return "admin"
    return "identity"


def status_for(api: str, err: exception.FabricError) -> int:
    """The HTTP status of an error in one API (quota is 403 in compute, as nova does, and 409 in
    network, Neutron's OverQuota)."""
    if isinstance(err, exception.QuotaExceeded) and api in ("compute", "network"):
        return 403 if api == "compute" else 409
    code = err.code
    return code if 400 <= code <= 599 else 500


def body_for(api: str, status: int, message: str, type_name: str = "") -> dict:
    """The error document for ``status`` in the shape of ``api``."""
    title = http.HTTPStatus(status).phrase
    if api in ("compute", "volume"):  # Cinder's faults have Nova's shape and keys
        return {_COMPUTE_KEYS.get(status, "computeFault"): {"code": status, "message": message}}
    if api == "network":
        return {"NeutronError": {"type": type_name or title.replace(" ", ""), "message": message, "detail": ""}}
    if api == "identity":
        return {"error": {"code": status, "title": title, "message": message}}
    return {"code": status, "title": title, "message": message}


def _render(req: falcon.Request, resp: falcon.Response, status: int, message: str, type_name: str = "") -> None:
    api = api_of(req.path)
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(body_for(api, status, message, type_name))
    if status == 503:
        resp.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
    if status == 401 and api == "identity":
        resp.set_header("WWW-Authenticate", f'Keystone uri="{req.prefix}/v3"')


def handle_fabric_error(req, resp, ex: exception.FabricError, params) -> None:
    if ex.code >= 500 and is_connection_error(ex):
        _database_unreachable(req, resp, ex)
        return
    status = status_for(api_of(req.path), ex)
    if status >= 500:
        LOG.error("%s %s failed: %s", req.method, req.path, ex.message)
    type_name = type(ex).__name__
    if isinstance(ex, exception.QuotaExceeded) and api_of(req.path) == "network":
        type_name = "OverQuota"  # Neutron's name for it
    _render(req, resp, status, ex.message, type_name)


def handle_http_error(req, resp, ex: falcon.HTTPError, params) -> None:
    message = ex.description or ex.title or "error"
    _render(req, resp, ex.status_code, message)
    for name, value in (ex.headers or {}).items():
        resp.set_header(name, value)


def _database_unreachable(req: falcon.Request, resp: falcon.Response, ex: BaseException) -> None:
    reason = describe(ex)
    LOG.warning("%s %s: the database is unreachable (%s); answered 503", req.method, req.path, reason)
    _render(req, resp, 503, f"The database is unreachable right now ({reason}); "
                            f"try again in {RETRY_AFTER_SECONDS} seconds.", "DatabaseUnavailable")


def handle_unexpected(req, resp, ex: Exception, params) -> None:
    if is_connection_error(ex):
        _database_unreachable(req, resp, ex)
        return
    broken = constraints.violation(ex)
    if broken is not None:
        # A race the handler's own check lost (two creates of one name at once; a delete
        # under a create that refers to it): the database refused it, nothing was written.
        LOG.info("%s %s: a %s constraint refused the write: %s", req.method, req.path, broken, ex.orig)
        message = ("It already exists: a concurrent request created the same thing first." if broken == constraints.UNIQUE
                   else "Something it refers to was deleted, or something still refers to it, meanwhile.")
        _render(req, resp, 409, message, "Conflict")
        return
    LOG.exception("Unexpected error in %s %s", req.method, req.path)
    _render(req, resp, 500, "An unexpected error occurred; the request id names it in the API log.")


def install(app: falcon.App) -> None:
    """Register the handlers; the most specific class wins in Falcon."""
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(exception.FabricError, handle_fabric_error)
