"""The dashboard's only way into the cloud: HTTP to the public API.

:func:`login` asks Identity v3 for a project-scoped token and reads the
service catalog it comes with; :class:`ApiClient` then calls the Compute,
Image, Network and admin endpoints with that token. An answer of 401 becomes
:class:`TokenExpired` (the dashboard sends the user back to the login page);
any other error answer becomes :class:`ApiError` carrying the API's own
message, never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode, urlsplit

import urllib3

#: Seconds a call to the API may take (connect, then each read).
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0

#: One keep-alive pool per API host for the whole process; thread (and green thread) safe.
_POOL = urllib3.PoolManager(num_pools=4, maxsize=32, retries=False,
                            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT))


class ApiError(Exception):
    """The API refused or failed a request: ``status`` and its readable ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class TokenExpired(ApiError):
    """The token is no longer valid (expired or revoked): log in again."""

    def __init__(self, message: str = "your session has expired; log in again") -> None:
        super().__init__(401, message)


def error_message(status: int, body: bytes) -> str:
    """The human message in an API error body, whatever the API's error format
    (identity ``{"error": {...}}``, compute ``{"itemNotFound": {...}}``,
    network ``{"NeutronError": {...}}``, admin ``{"message": ...}``)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if isinstance(doc, dict):
        if isinstance(doc.get("message"), str):
            return doc["message"]
        for value in doc.values():
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return value["message"]
    text = body.decode("utf-8", "replace").strip()
    return text[:300] if text and not text.startswith("<") else f"the API answered HTTP {status}"


@dataclasses.dataclass(frozen=True)
class Endpoints:
    """Where each API lives, as the service catalog says (admin beside identity)."""

    identity: str
    compute: str
    image: str
    network: str
    admin: str

    @classmethod
    def from_catalog(cls, catalog: list[dict], identity_url: str) -> Endpoints:
        """The public endpoint of each service in ``catalog``; image and network at their
        v2 / v2.0 versions. Raises ApiError naming a service the catalog lacks."""
        urls: dict[str, str] = {}
        for service in catalog:
            for endpoint in service.get("endpoints", []):
                if endpoint.get("interface", "public") == "public":
                    urls.setdefault(service.get("type", ""), endpoint["url"].rstrip("/"))
        missing = [kind for kind in ("compute", "image", "network") if kind not in urls]
        if missing:
            raise ApiError(502, f"the service catalog has no {', '.join(missing)} endpoint")
        identity = urls.get("identity", identity_url).rstrip("/")
        image = urls["image"] if urls["image"].endswith("/v2") else urls["image"] + "/v2"
        network = urls["network"] if urls["network"].endswith("/v2.0") else urls["network"] + "/v2.0"
        # fabric's admin API is mounted beside Identity v3 on the same server (not in the catalog).
        root = identity[: -len("/v3")] if identity.endswith("/v3") else identity
        return cls(identity=identity, compute=urls["compute"], image=image, network=network,
                   admin=root + "/fabric/v1")


@dataclasses.dataclass(frozen=True)
class Login:
    """What a successful login yields."""

    token: str
    expires_at: str
    user: str
    project: str
    project_id: str
    roles: tuple[str, ...]
    endpoints: Endpoints


def _request(method: str, url: str, *, headers: dict[str, str], body: Any = None,
             raw: bytes | Iterable[bytes] | None = None, length: int | None = None) -> urllib3.BaseHTTPResponse:
    headers = dict(headers)
    data: Any = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    elif raw is not None:
        data = raw
        headers["Content-Type"] = "application/octet-stream"
        if length is not None:
            headers["Content-Length"] = str(length)
    try:
        return _POOL.request(method, url, body=data, headers=headers, redirect=False,
                             chunked=raw is not None and length is None and not isinstance(raw, bytes))
    except urllib3.exceptions.HTTPError as exc:
        raise ApiError(503, f"the API at {urlsplit(url).netloc} cannot be reached ({exc.__class__.__name__})") \
            from None


def login(identity_url: str, *, user: str, password: str, project: str, domain: str = "Default") -> Login:
    """A project-scoped token for ``user`` and the endpoints of its catalog.

    Raises ApiError with the API's message (401 for a wrong password or
    project, 503 when the API cannot be reached).
    """
    domain_ref = {"name": domain}
    payload = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": domain_ref, "password": password}}},
        "scope": {"project": {"name": project, "domain": domain_ref}}}}
    response = _request("POST", identity_url.rstrip("/") + "/auth/tokens", headers={}, body=payload)
    if response.status != 201:
        message = error_message(response.status, response.data)
        raise ApiError(response.status, message)
    token = response.headers.get("X-Subject-Token", "")
    doc = json.loads(response.data)["token"]
    return Login(token=token, expires_at=doc["expires_at"], user=doc["user"]["name"],
                 project=doc["project"]["name"], project_id=doc["project"]["id"],
                 roles=tuple(role["name"] for role in doc.get("roles", [])),
                 endpoints=Endpoints.from_catalog(doc.get("catalog", []), identity_url))


class ApiClient:
    """Calls to the API as one logged-in user (``token``) through ``endpoints``."""

    def __init__(self, endpoints: Endpoints, token: str) -> None:
        self.endpoints = endpoints
        self.token = token

    def url(self, service: str, path: str, query: dict[str, Any] | None = None) -> str:
        base = getattr(self.endpoints, service)
        query = {k: v for k, v in (query or {}).items() if v is not None}
        return base + path + (f"?{urlencode(query)}" if query else "")

    def call(self, method: str, service: str, path: str, *, body: Any = None, query: dict | None = None,
             raw: bytes | Iterable[bytes] | None = None, length: int | None = None,
             headers: dict[str, str] | None = None) -> Any:
        """The decoded JSON answer (None for an empty one).

        Raises TokenExpired on 401, ApiError with the API's message on any
        other error status.
        """
        response = _request(method, self.url(service, path, query),
                            headers={"X-Auth-Token": self.token, **(headers or {})},
                            body=body, raw=raw, length=length)
        if response.status == 401:
            raise TokenExpired()
        if response.status >= 400:
            raise ApiError(response.status, error_message(response.status, response.data))
        if not response.data:
            return None
        try:
            return json.loads(response.data)
        except ValueError:
            return None

    def get(self, service: str, path: str, **query: Any) -> Any:
        return self.call("GET", service, path, query=query)

    def available(self, service: str, path: str) -> bool:
        """Whether the API offers ``path`` (a listing answering anything but 404 / 405)."""
        try:
            self.call("GET", service, path, query={"limit": 1})
        except TokenExpired:
            raise
        except ApiError as err:
            return err.status not in (404, 405)
        return True

    def revoke(self) -> None:
        """Revoke this client's token (logout); a token already invalid is fine."""
        try:
            self.call("DELETE", "identity", "/auth/tokens", headers={"X-Subject-Token": self.token})
        except ApiError:
            pass
