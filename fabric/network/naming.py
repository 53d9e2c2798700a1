"""Names of the kernel objects fabric creates.

Every name is ``<prefix><kind><10 hex digits of a hash of the owner's id>`` (the
gateway of routed mode is ``<prefix>gw``), so it fits Linux's 15 characters with
a prefix of up to 4 and fabric can tell its objects from everyone else's with
:meth:`Names.owns` without any record of what it made.
"""

from __future__ import annotations

import hashlib
import re

from fabric import exception

MAX_PREFIX = 4
BRIDGE, VXLAN, VLAN, ENDPOINT = "b", "x", "v", "t"


class Names:
    """Name maker for one prefix (``settings.network.prefix``)."""

    def __init__(self, prefix: str) -> None:
        if not re.fullmatch(rf"[a-z][a-z0-9]{{0,{MAX_PREFIX - 1}}}", prefix or ""):
            raise exception.Invalid(
                reason=f"network prefix {prefix!r} must be 1-{MAX_PREFIX} lowercase letters or digits, "
                       "starting with a letter (interface names are limited to 15 characters)")
        self.prefix = prefix
        self._ours = re.compile(rf"{re.escape(prefix)}(?:[{BRIDGE}{VXLAN}{VLAN}{ENDPOINT}][0-9a-f]{{10}}|gw)")

    def _name(self, kind: str, ident: str) -> str:
        return f"{self.prefix}{kind}{hashlib.sha1(ident.encode()).hexdigest()[:10]}"

    def bridge(self, network_id: str) -> str:
        return self._name(BRIDGE, network_id)

    def vxlan(self, network_id: str) -> str:
        return self._name(VXLAN, network_id)

    def vlan(self, network_id: str) -> str:
        return self._name(VLAN, network_id)

    def endpoint(self, endpoint_id: str) -> str:
        """Host side of an endpoint: its tap, or its veth end."""
        return self._name(ENDPOINT, endpoint_id)

    @property
    def endpoints(self) -> str:
        """A wildcard (shell and dnsmasq style) matching every endpoint's host-side device."""
        return f"{self.prefix}{ENDPOINT}*"

    @property
    def gateway(self) -> str:
        return f"{self.prefix}gw"

    @property
    def table(self) -> str:
        """The nftables table (family ip) fabric owns."""
        return f"{self.prefix}fabric"

    def owns(self, name: str) -> bool:
        """True when ``name`` is a name fabric would give an object of its own."""
        return bool(self._ours.fullmatch(name))
