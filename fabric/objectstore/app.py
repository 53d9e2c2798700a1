"""The objectstore's WSGI application: S3's routing on Falcon, S3's XML errors.

S3 routes by method, by whether a bucket and a key are named, and by
sub-resource query parameters (``?uploads``, ``?delete``, ``?acl`` ...), so
one Falcon sink takes every request and :func:`route` picks the operation.
Sub-resources fabric does not implement (policies, CORS, lifecycle, tagging,
versions ...) answer NotImplemented (501) rather than being mistaken for a
plain GET or PUT.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import falcon

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


class S3Sink:
    """Every request: parse, authenticate, route, answer."""

    def __init__(self, service: Objectstore) -> None:
        self.service = service
        self.suffix = virtual_host_suffix(service)

    def __call__(self, req: falcon.Request, resp: falcon.Response, **_: str) -> None:
        started = time.monotonic()
        request_id = secrets.token_hex(8).upper()
        req.context.request_id = request_id
        req.context.started = started
        s3req = S3Request.from_environ(req.env, request_id, self.suffix)
        s3req.caller = self.service.auth.authenticate(s3req)
        handler = route(s3req)
        render(handler(self.service, s3req), resp, request_id)


def render(reply: Reply, resp: falcon.Response, request_id: str) -> None:
    resp.status = reply.status
    for name, value in reply.headers.items():
        resp.set_header(name, value)
    resp.set_header("x-amz-request-id", request_id)
    if isinstance(reply.body, bytes):
        resp.data = reply.body
    elif reply.body is not None:
        resp.stream = reply.body
    if reply.length is not None:
        resp.content_length = reply.length


def _request_id(req: falcon.Request) -> str:
    return getattr(req.context, "request_id", None) or secrets.token_hex(8).upper()


def handle_s3_error(req: falcon.Request, resp: falcon.Response, err: S3Error, params) -> None:
    request_id = _request_id(req)
    resp.status = err.status
    for name, value in err.headers.items():
        resp.set_header(name, value)
    resp.set_header("x-amz-request-id", request_id)
    if err.status == 304:
        return
    resp.content_type = "application/xml"
    fields = dict(err.fields)
    resp.data = documents.error_document(err.code, err.message, request_id, fields)
    ACCESS_LOG.info("%s %s -> %s %s", req.method, req.relative_uri[:200], err.status, err.code)


def handle_unexpected(req: falcon.Request, resp: falcon.Response, err: Exception, params) -> None:
    LOG.exception("Unexpected error in %s %s", req.method, req.path)
    handle_s3_error(req, resp, S3Error("InternalError"), params)


def handle_http_error(req: falcon.Request, resp: falcon.Response, err: falcon.HTTPError, params) -> None:
    handle_s3_error(req, resp, S3Error("InvalidRequest", err.description or err.title), params)


def build_app(service: Objectstore) -> falcon.App:
    """The objectstore as a WSGI callable over ``service``."""
    app = falcon.App()
    app.req_options.strip_url_path_trailing_slash = False
    app.req_options.keep_blank_qs_values = True
    app.req_options.auto_parse_qs_csv = False
    app.add_sink(S3Sink(service), prefix="/")
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(S3Error, handle_s3_error)
    return app
