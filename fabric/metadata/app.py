"""The WSGI application behind one listener: who is asking, then what they asked for.

The requester is the connection's source address (``REMOTE_ADDR``, which the
WSGI server takes from the socket) on the networks the listener serves; the
app is built per listener, so the network comes from where the request
arrived. Nothing in the request itself can name an instance: a request that
carries a header claiming an identity or a forwarded address (the headers
Nova's and Neutron's metadata proxies use) is refused with 403 before any
lookup, so no combination of headers reaches another instance's data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from fabric.metadata import ec2, openstack
from fabric.metadata.facts import InstanceFacts

LOG = logging.getLogger(__name__)

#: WSGI names of request headers that claim who is asking; never trusted, always refused.
IDENTITY_HEADERS = ("HTTP_X_INSTANCE_ID", "HTTP_X_INSTANCE_ID_SIGNATURE", "HTTP_X_TENANT_ID",
                    "HTTP_X_METADATA_PROVIDER", "HTTP_X_METADATA_PROVIDER_SIGNATURE",
                    "HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_FORWARDED")

Finder = Callable[[tuple[str, ...], str], InstanceFacts | None]


def resolve(facts: InstanceFacts, path: str) -> tuple[str, bytes] | None:
    """(content type, body) at ``path`` for this instance, or None when there is nothing there.

    ``/`` lists the EC2 versions (as EC2 and Nova do), ``/openstack/...`` is
    OpenStack's format, ``/<ec2 version>/...`` EC2's.
    """
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "text/plain", "\n".join(ec2.VERSIONS).encode()
    if parts[0] == "openstack":
        return openstack.resolve(facts, parts[1:])
    if parts[0] in ec2.VERSIONS:
        return ec2.resolve(facts, parts[1:])
    return None


class MetadataApp:
    """Serves requests that arrived on ``network_ids`` (the networks of one device)."""

    def __init__(self, network_ids: tuple[str, ...], find: Finder, device: str = "") -> None:
        self.network_ids = network_ids
        self.find = find
        self.device = device

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        address = environ.get("REMOTE_ADDR", "")
        status, content_type, body = self._answer(method, path, address, environ)
        LOG.info("metadata: %s %s from %s on %s: %s", method, path, address, self.device or self.network_ids,
                 status)
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [b""] if method == "HEAD" else [body]

    def _answer(self, method: str, path: str, address: str, environ: dict[str, Any]) -> tuple[str, str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", f"{method} is not supported; use GET\n".encode()
        claimed = sorted(h[5:].replace("_", "-").title() for h in IDENTITY_HEADERS if h in environ)
        if claimed:
            return ("403 Forbidden", "text/plain",
                    f"header {', '.join(claimed)} is not accepted: an instance is known by its address "
                    "and network only\n".encode())
        try:
            facts = self.find(self.network_ids, address)
        except Exception:  # noqa: BLE001 - the guest gets a retryable answer, the log the cause
            LOG.exception("metadata: looking up %s on %s failed", address, self.network_ids)
            return "503 Service Unavailable", "text/plain", b"metadata is unavailable; try again\n"
        if facts is None:
            return "404 Not Found", "text/plain", f"no instance has address {address} on this network\n".encode()
        found = resolve(facts, path)
        if found is None:
            return "404 Not Found", "text/plain", f"{path} is not a metadata path\n".encode()
        content_type, body = found
        return "200 OK", content_type, body
