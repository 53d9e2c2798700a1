"""One S3 request as the handlers see it, and the reply they give back.

:class:`S3Request` is read from the WSGI environ: the raw path and query (what
SigV4 signs), decoded parameters, lower-case headers, and the bucket and key
it addresses, path-style (``/bucket/key``) or virtual-host style (``Host:
bucket.<suffix>``). Bucket names are checked against S3's rules, keys against
its length limit, before any handler runs.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from fabric.db.models.objectstore import MAX_KEY_BYTES
from fabric.objectstore import sigv4
from fabric.objectstore.errors import S3Error

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


@functools.lru_cache(maxsize=4096)
def bucket_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid S3 bucket name (S3's general-purpose bucket rules), or None.
    Remembered: every request names a bucket, few distinct ones, and the checks (an IPv4 parse
    among them) were a twentieth of a small GET's CPU."""
    if not 3 <= len(name) <= 63:
        return f"bucket name {name!r} must be 3 to 63 characters long"
    if not _BUCKET.fullmatch(name):
        return (f"bucket name {name!r} may contain only lower-case letters, digits, dots and hyphens, and must "
                "begin and end with a letter or digit")
    if ".." in name or ".-" in name or "-." in name:
        return f"bucket name {name!r} must not contain two adjacent periods or a period next to a hyphen"
    try:
        ipaddress.IPv4Address(name)
        return f"bucket name {name!r} must not be formatted as an IP address"
    except ValueError:
        pass
    if name.startswith(_RESERVED_PREFIXES) or name.endswith(_RESERVED_SUFFIXES):
        return f"bucket name {name!r} uses a prefix or suffix S3 reserves"
    return None


def check_bucket_name(name: str) -> None:
    problem = bucket_name_problem(name)
    if problem:
        raise S3Error("InvalidBucketName", problem, BucketName=name)


def check_key(key: str) -> bytes:
    """The key as UTF-8 bytes; KeyTooLongError past 1,024 bytes."""
    encoded = key.encode("utf-8", "surrogateescape")
    if len(encoded) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", f"the key is {len(encoded)} bytes long; S3 allows at most {MAX_KEY_BYTES}",
                      Size=len(encoded), MaxSizeAllowed=MAX_KEY_BYTES)
    if not key:
        raise S3Error("InvalidArgument", "the object key must not be empty")
    return encoded


def _decode(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error("InvalidURI", f"the {what} is not valid UTF-8 once percent-decoded") from None


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    """The request's headers by lower-case name: as the objectstore's server gives them
    (fabric.objectstore.http_server), or from a WSGI environ's CGI variables."""
    given = environ.get("fabric.headers")
    if given is not None:
        return given
    headers = {}
    for name, value in environ.items():
        if name.startswith("HTTP_"):
            headers[name[5:].replace("_", "-").lower()] = value
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    if environ.get("CONTENT_LENGTH"):
        headers["content-length"] = environ["CONTENT_LENGTH"]
    return headers


@dataclasses.dataclass
class S3Request:
    """What a handler needs of one request. ``caller`` and ``claim`` are set by authentication."""

    method: str
    raw_path: str
    raw_query: str
    params: dict[str, str]
    headers: dict[str, str]
    bucket: str | None
    key: str | None
    environ: dict[str, Any]
    request_id: str
    caller: Any = None
    claim: sigv4.Claim | None = None
    signing_key: bytes | None = None

    @classmethod
    def from_environ(cls, environ: dict[str, Any], request_id: str, virtual_host_suffix: str) -> S3Request:
        """Parse the request; InvalidURI for an undecodable path, InvalidBucketName, KeyTooLongError."""
        raw_path = environ.get("RAW_PATH_INFO") or quote(environ.get("PATH_INFO", "/"), safe="/~")
        raw_query = environ.get("QUERY_STRING", "")
        params: dict[str, str] = {}
        for name, value in sigv4.query_pairs(raw_query):
            params.setdefault(_decode(name, "query string"), _decode(value, "query string"))
        headers = _headers(environ)
        path = _decode(unquote_to_bytes(raw_path), "path")
        host = headers.get("host", "").rsplit(":", 1)[0] if not headers.get("host", "").startswith("[") else ""
        bucket: str | None
        if virtual_host_suffix and host.endswith("." + virtual_host_suffix):
            bucket = host[:-len(virtual_host_suffix) - 1]
            key = path[1:] if path.startswith("/") else path
        else:
            bucket, _, key = path.lstrip("/").partition("/") if path.startswith("/") else (None, "", "")
        if bucket:
            check_bucket_name(bucket)
        else:
            bucket = None
        if key:
            check_key(key)
        return cls(environ["REQUEST_METHOD"], raw_path, raw_query, params, headers, bucket, key or None, environ,
                   request_id)

    @property
    def key_bytes(self) -> bytes:
        return (self.key or "").encode("utf-8", "surrogateescape")

    def header_int(self, name: str) -> int | None:
        """A header as a whole number (None when absent); InvalidArgument naming it otherwise."""
        value = self.headers.get(name)
        if value is None or value == "":
            return None
        try:
            number = int(value)
        except ValueError:
            number = -1
        if number < 0:
            raise S3Error("InvalidArgument", f"header {name} {value!r} is not a non-negative whole number",
                          ArgumentName=name, ArgumentValue=value)
        return number

    def param_int(self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
        """A query parameter as a whole number in range; InvalidArgument naming it otherwise."""
        value = self.params.get(name)
        if value is None or value == "":
            return default
        try:
            number = int(value)
        except ValueError:
            raise S3Error("InvalidArgument", f"{name} {value!r} is not a whole number", ArgumentName=name,
                          ArgumentValue=value) from None
        if number < minimum or (maximum is not None and number > maximum):
            bound = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
            raise S3Error("InvalidArgument", f"{name} {number} must be {bound}", ArgumentName=name,
                          ArgumentValue=value)
        return number


@dataclasses.dataclass
class Reply:
    """A handler's answer: status, headers and a body (bytes, or a stream of ``length`` bytes)."""

    status: int = 200
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: bytes | Iterator[bytes] | None = None
    length: int | None = None

    @classmethod
    def xml(cls, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, dict(headers or {}, **{"Content-Type": "application/xml"}), body)
