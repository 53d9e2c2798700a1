"""The objectstore's WSGI application: S3's routing, S3's XML errors.

S3 routes by method, by whether a bucket and a key are named, and by
sub-resource query parameters (``?uploads``, ``?delete``, ``?acl`` ...), so
one callable takes every request and :func:`route` picks the operation. It is
plain WSGI, not a framework's: a framework's request and response objects and
its routing, which S3 does not use, were a tenth of a small request's CPU.
Sub-resources fabric does not implement (policies, CORS, lifecycle, tagging,
versions ...) answer NotImplemented (501) rather than being mistaken for a
plain GET or PUT.
"""

from __future__ import annotations

import datetime
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from fabric.objectstore import buckets, documents, listing, multipart, objects
from fabric.objectstore.core import Objectstore
from fabric.objectstore.errors import S3Error
from fabric.objectstore.request import Reply, S3Request

LOG = logging.getLogger(__name__)
ACCESS_LOG = logging.getLogger("fabric.objectstore.access")

Handler = Callable[[Objectstore, S3Request], Reply]

#: Sub-resources answered NotImplemented wherever they appear.
UNSUPPORTED = frozenset({
    "accelerate", "analytics", "cors", "encryption", "intelligent-tiering", "inventory", "legal-hold", "lifecycle",
    "logging", "metrics", "notification", "object-lock", "ownershipControls", "policy", "policyStatus",
    "publicAccessBlock", "replication", "requestPayment", "restore", "retention", "select", "tagging", "torrent",
    "versioning", "versions", "website", "attributes", "session",
})


def _bucket_route(req: S3Request) -> Handler:
    params, method = req.params, req.method
    if method == "GET":
        if "location" in params:
            return buckets.get_bucket_location
        if "acl" in params:
            return buckets.get_bucket_acl
        if "uploads" in params:
            return multipart.list_uploads
        if params.get("list-type") == "2":
            return listing.list_objects_v2
        return listing.list_objects
    if method == "PUT":
        return buckets.put_bucket_acl if "acl" in params else buckets.create_bucket
    if method == "HEAD":
        return buckets.head_bucket
    if method == "DELETE":
        return buckets.delete_bucket
    if method == "POST" and "delete" in params:
        return objects.delete_objects
    raise S3Error("MethodNotAllowed", Method=method, ResourceType="BUCKET")


def _object_route(req: S3Request) -> Handler:
    params, method = req.params, req.method
    copying = "x-amz-copy-source" in req.headers
    if method in ("GET", "HEAD"):
        if "uploadId" in params and method == "GET":
            return multipart.list_parts
        if "acl" in params:
            raise S3Error("NotImplemented", "object ACLs are not supported: objects follow their bucket's ACL")
        return objects.get_object
    if method == "PUT":
        if "uploadId" in params or "partNumber" in params:
            if "uploadId" not in params:
                raise S3Error("InvalidRequest", "partNumber needs uploadId")
            return multipart.upload_part_copy if copying else multipart.upload_part
        if "acl" in params:
            raise S3Error("NotImplemented", "object ACLs are not supported: objects follow their bucket's ACL")
        return objects.copy_object if copying else objects.put_object
    if method == "DELETE":
        return multipart.abort if "uploadId" in params else objects.delete_object
    if method == "POST":
        if "uploads" in params:
            return multipart.create
        if "uploadId" in params:
            return multipart.complete
    raise S3Error("MethodNotAllowed", Method=method, ResourceType="OBJECT")


def route(req: S3Request) -> Handler:
    """The operation a request asks for; NotImplemented or MethodNotAllowed when there is none."""
    unsupported = UNSUPPORTED.intersection(req.params)
    if unsupported:
        raise S3Error("NotImplemented", f"the {', '.join(sorted(unsupported))} sub-resource is not supported")
    if req.bucket is None:
        if req.method == "GET":
            return buckets.list_buckets
        raise S3Error("MethodNotAllowed", Method=req.method, ResourceType="SERVICE")
    if req.key is None:
        return _bucket_route(req)
    return _object_route(req)


def virtual_host_suffix(service: Objectstore) -> str:
    """The DNS suffix under which ``Host: <bucket>.<suffix>`` names a bucket."""
    configured = service.settings.objectstore.virtual_host_suffix
    return configured or (urlsplit(service.settings.objectstore_url).hostname or "")


#: Answers that never carry a body (RFC 9110), and so no Content-Length of one.
BODILESS = frozenset({204, 304})


class S3App:
    """Every request: parse, authenticate, route, answer; any error as S3's XML document."""

    def __init__(self, service: Objectstore) -> None:
        self.service = service
        self.suffix = virtual_host_suffix(service)

    def __call__(self, environ: dict[str, Any], start_response) -> Iterable[bytes]:
        request_id = secrets.token_hex(8).upper()
        try:
            s3req = S3Request.from_environ(environ, request_id, self.suffix)
            s3req.caller = self.service.auth.authenticate(s3req)
            reply = route(s3req)(self.service, s3req)
        except S3Error as err:
            reply = error_reply(err, environ, request_id)
        except Exception:
            LOG.exception("Unexpected error in %s %s", environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""))
            reply = error_reply(S3Error("InternalError"), environ, request_id)
        return respond(reply, environ["REQUEST_METHOD"], request_id, start_response)


_STATUS_LINES: dict[int, str] = {}


def status_line(status: int) -> str:
    """``"200 OK"`` for 200: WSGI's status string."""
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        line = _STATUS_LINES[status] = f"{status} {phrase}"
    return line


_date: tuple[int, str] = (0, "")


def date_header() -> str:
    """Now as an HTTP date, formatted once a second (formatted for every answer, it was a fiftieth
    of a small GET's CPU)."""
    global _date
    second = int(time.time())
    if _date[0] != second:
        _date = (second, objects.http_date(datetime.datetime.fromtimestamp(second, datetime.UTC)))
    return _date[1]


def respond(reply: Reply, method: str, request_id: str, start_response) -> Iterable[bytes]:
    """Start the WSGI response of ``reply``: its headers, the request id, the body's length (the
    announced one for a HEAD, none for 204 and 304); the body to send (nothing for a HEAD)."""
    headers = list(reply.headers.items())
    headers.append(("x-amz-request-id", request_id))
    headers.append(("Date", date_header()))
    body = reply.body
    if isinstance(body, bytes):
        length: int | None = len(body) if reply.length is None or method != "HEAD" else reply.length
        chunks: Iterable[bytes] = (body,) if body else ()
    else:
        length = reply.length
        chunks = body if body is not None else ()
    if reply.status in BODILESS:
        length, chunks = None, ()
    elif length is not None:
        headers.append(("Content-Length", str(length)))
    if method == "HEAD" and chunks:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # a stream's generator: its file closed now
        chunks = ()
    start_response(status_line(reply.status), headers)
    return chunks


def error_reply(err: S3Error, environ: dict[str, Any], request_id: str) -> Reply:
    """S3's XML document of ``err`` (none for 304), logged as an access line."""
    query = environ.get("QUERY_STRING")
    uri = environ.get("RAW_PATH_INFO") or environ.get("PATH_INFO", "")
    ACCESS_LOG.info("%s %s -> %s %s", environ["REQUEST_METHOD"], (f"{uri}?{query}" if query else uri)[:200],
                    err.status, err.code)
    headers = dict(err.headers)
    if err.status == 304:
        return Reply(304, headers)
    headers["Content-Type"] = "application/xml"
    return Reply(err.status, headers, documents.error_document(err.code, err.message, request_id, dict(err.fields)))


def build_app(service: Objectstore) -> S3App:
    """The objectstore as a WSGI callable over ``service``."""
    return S3App(service)
