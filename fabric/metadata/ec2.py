"""EC2's metadata format: ``/<version>/meta-data/...`` (a tree of plain-text leaves) and ``user-data``.

A directory answers with its entries, one per line, subdirectories ending in
``/``; ``public-keys/`` lists ``<index>=<name>`` as EC2 does.
"""

from __future__ import annotations

from typing import Any

from fabric.metadata.facts import InstanceFacts

VERSIONS = ("1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15", "2008-02-01",
            "2008-09-01", "2009-04-04", "latest")


def instance_id(uuid: str) -> str:
    """An EC2-style id (``i-`` and 17 hex digits) derived from the server's UUID."""
    return "i-" + uuid.replace("-", "")[:17]


def meta_data(facts: InstanceFacts) -> dict[str, Any]:
    """The ``meta-data/`` tree: a leaf is a string, a directory a dict."""
    tree: dict[str, Any] = {
        "ami-id": "ami-" + (facts.image_id or "").replace("-", "")[:8].rjust(8, "0"),
        "ami-launch-index": str(facts.launch_index),
        "hostname": facts.hostname,
        "instance-id": instance_id(facts.uuid),
        "instance-type": facts.flavor_name or "",
        "local-hostname": facts.hostname,
        "local-ipv4": facts.address,
        "placement": {"availability-zone": facts.availability_zone or ""},
        "reservation-id": "r-" + facts.uuid.replace("-", "")[:8],
        "security-groups": "default",
    }
    if facts.floating_address:
        tree["public-ipv4"] = facts.floating_address
    if facts.key_name and facts.key_data:
        tree["public-keys"] = {"0": {"openssh-key": facts.key_data}}
    return tree


def _listing(facts: InstanceFacts, path: list[str], node: dict[str, Any]) -> bytes:
    if path == ["public-keys"]:
        return f"0={facts.key_name}".encode()
    return "\n".join(f"{name}/" if isinstance(value, dict) else name
                     for name, value in sorted(node.items())).encode()


def resolve(facts: InstanceFacts, parts: list[str]) -> tuple[str, bytes] | None:
    """(content type, body) for the path below ``/<version>/``, or None when there is nothing there."""
    if not parts:
        return "text/plain", ("meta-data/\nuser-data" if facts.user_data is not None else "meta-data/").encode()
    if parts == ["user-data"]:
        return ("application/octet-stream", facts.user_data) if facts.user_data is not None else None
    if parts[0] != "meta-data":
        return None
    node: Any = meta_data(facts)
    for name in parts[1:]:
        if not isinstance(node, dict) or name not in node:
            return None
        node = node[name]
    if isinstance(node, dict):
        return "text/plain", _listing(facts, parts[1:], node)
    return "text/plain", node.encode()
