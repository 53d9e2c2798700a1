"""OpenStack's metadata format: ``/openstack/<version>/meta_data.json`` and its neighbours.

Every listed version serves the same documents (fabric has one format; the
dates are there because clients such as cloud-init ask for one they know).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from fabric.metadata.facts import InstanceFacts

VERSIONS = ("2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30", "latest")


def meta_data(facts: InstanceFacts) -> dict[str, Any]:
    """``meta_data.json``: identity, keys, placement and the server's metadata items."""
    keys = []
    public_keys = {}
    if facts.key_name and facts.key_data:
        public_keys[facts.key_name] = facts.key_data
        keys.append({"name": facts.key_name, "type": "ssh", "data": facts.key_data})
    return {
        "uuid": facts.uuid,
        "name": facts.name,
        "hostname": facts.hostname,
        "project_id": facts.project_id,
        "availability_zone": facts.availability_zone or "",
        "launch_index": facts.launch_index,
        "public_keys": public_keys,
        "keys": keys,
        "meta": dict(facts.meta),
        "devices": [],
    }


def _link_name(port_id: str) -> str:
    return f"tap{port_id[:11]}"


def network_data(facts: InstanceFacts) -> dict[str, Any]:
    """``network_data.json``: one link per NIC and one network per IPv4 address.

    A subnet with DHCP is ``ipv4_dhcp``; otherwise the address, netmask and a
    default route via the subnet's gateway are given (a routed network with no
    subnet row: the address as a /32).
    """
    links, networks = [], []
    for index, port in enumerate(facts.ports):
        link = _link_name(port.id)
        links.append({"id": link, "vif_id": port.id, "type": "phy", "mtu": port.mtu,
                      "ethernet_mac_address": port.mac})
        if port.address is None:
            continue
        network: dict[str, Any] = {"id": f"network{index}", "link": link, "network_id": port.network_id}
        if port.dhcp:
            network["type"] = "ipv4_dhcp"
        else:
            cidr = ipaddress.ip_network(port.cidr) if port.cidr else ipaddress.ip_network(f"{port.address}/32")
            routes = ([{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": port.gateway}]
                      if port.gateway else [])
            network.update(type="ipv4", ip_address=port.address, netmask=str(cidr.netmask), routes=routes)
        networks.append(network)
    return {"links": links, "networks": networks, "services": []}


def _json(document: dict[str, Any]) -> tuple[str, bytes]:
    return "application/json", json.dumps(document, sort_keys=True).encode()


def _text(lines: list[str]) -> tuple[str, bytes]:
    return "text/plain", "\n".join(lines).encode()


def resolve(facts: InstanceFacts, parts: list[str]) -> tuple[str, bytes] | None:
    """(content type, body) for the path below ``/openstack/``, or None when there is nothing there."""
    if not parts:
        return _text(list(VERSIONS))
    if parts[0] not in VERSIONS or len(parts) > 2:
        return None
    documents = ["meta_data.json", "network_data.json", "vendor_data.json"]
    if facts.user_data is not None:
        documents.append("user_data")
    if len(parts) == 1:
        return _text(documents)
    name = parts[1]
    if name == "meta_data.json":
        return _json(meta_data(facts))
    if name == "network_data.json":
        return _json(network_data(facts))
    if name == "vendor_data.json":
        return _json({})
    if name == "user_data" and facts.user_data is not None:
        return "application/octet-stream", facts.user_data
    return None
