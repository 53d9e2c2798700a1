"""Addresses: IPAM's allocations against the ports that should hold them.

- orphan: an allocation held for no port (its ``port_id`` is empty: the port row was
  deleted, or it was never given one) and for no floating IP (whose address has no port);
- stale: a port that should hold an address and holds none in its pool: a NIC port
  of a resting server whose ``network_info`` records the address (a server with a
  task running is its handler's business), or a host's DHCP port;
- unsynced: a NIC port holding an address other than the one its server's
  ``network_info`` records.

Fixes go through IPAM's own handlers (the caller passes them in): an orphan is freed by
``release(pool, address)``; a stale NIC port gets its recorded address again with
``allocate`` and the request token its build used (so a later delete releases it as
usual), a stale DHCP port an address with the DHCP port's token, as a build asks for
it. Unsynced findings are reported only: which of the two addresses the guest uses is
not something the database can tell.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from fabric.compute import states
from fabric.compute.collaborators import dhcp_request_token, request_token
from fabric.context import RequestContext
from fabric.db import Database
from fabric.db.models import AddressAllocation, FloatingIp, Instance, Port, Subnet
from fabric.network.model import DHCP_PORT_OWNER, floating_request_token
from fabric.reconcile import ORPHAN, STALE, UNSYNCED, Finding, Fixes

LOG = logging.getLogger(__name__)


def find(db: Database) -> list[Finding]:
    """Every address finding (changes nothing)."""
    findings = []
    with db.begin() as session:
        port_ids = set(session.scalars(sa.select(Port.id)))
        floating_tokens = {floating_request_token(f) for f in session.scalars(sa.select(FloatingIp.id))}
        held: dict[str, list[AddressAllocation]] = {}
        for row in session.scalars(sa.select(AddressAllocation).order_by(AddressAllocation.id)):
            # A deleted port empties port_id (the foreign key's ON DELETE SET NULL, on every database).
            if row.port_id is None and row.request_token not in floating_tokens:
                findings.append(Finding(ORPHAN, "allocation", f"{row.pool_id}/{row.address}",
                                        f"held for no port (token {row.request_token})"))
            elif row.port_id is not None:
                held.setdefault(row.port_id, []).append(row)
        servers = session.execute(sa.select(Instance.id, Instance.network_info, Instance.host)
                                  .where(Instance.deleted.is_(False), Instance.task_state.is_(None)))
        for instance_id, network_info, _host in servers:
            for vif in network_info or []:
                if not vif.get("address") or vif.get("id") not in port_ids:
                    continue
                addresses = {r.address for r in held.get(vif["id"], [])}
                if not addresses:
                    findings.append(Finding(STALE, "port", vif["id"], f"server {instance_id}'s NIC records "
                                            f"{vif['address']}, which no allocation holds"))
                elif vif["address"] not in addresses:
                    findings.append(Finding(UNSYNCED, "port", vif["id"], f"server {instance_id}'s NIC records "
                                            f"{vif['address']}, IPAM holds {', '.join(sorted(addresses))}"))
        # A DHCP port holds an address only where an IPv4 subnet serves DHCP; on an IPv6-only
        # network its address is the EUI-64 of its MAC (fabric.network.dbstate.ipv6_service).
        served4 = set(session.scalars(sa.select(Subnet.network_id).where(Subnet.ip_version == 4, Subnet.enable_dhcp)))
        for port in session.scalars(sa.select(Port).where(Port.device_owner == DHCP_PORT_OWNER)):
            if port.id not in held and port.network_id in served4:
                findings.append(Finding(STALE, "port", port.id, f"DHCP port of host {port.host} on network "
                                        f"{port.network_id} holds no address"))
    return findings


def fix(db: Database, ctx: RequestContext, findings: list[Finding], fixes: Fixes,
        allocate: Callable[..., Any], release: Callable[..., Any]) -> None:
    """Repair the findings of the kinds ``fixes`` names with IPAM's ``allocate`` and
    ``release`` handlers (see the module docstring), marking each ``fixed`` or with its
    ``error``; never raises for one finding's failure."""
    for finding in findings:
        if not fixes.wants(finding.kind):
            continue
        try:
            if finding.kind == ORPHAN:
                pool, address = finding.ident.split("/", 1)
                finding.fixed = bool(release(ctx, pool=pool, address=address))
                finding.error = None if finding.fixed else "no longer held"
            elif finding.kind == STALE:
                request = _allocation_request(db, finding.ident)
                if request is None:
                    finding.error = "the port or its server changed since the report; left alone"
                    continue
                allocate(ctx, **request)
                finding.fixed = True
            else:
                finding.error = "reported only: the database cannot tell which address the guest uses"
        except Exception as exc:  # noqa: BLE001 - one failed fix must not stop the others
            LOG.warning("reconcile: fixing %s failed: %s", finding.line(), exc)
            finding.error = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"


def _allocation_request(db: Database, port_id: str) -> dict[str, Any] | None:
    """The ``allocate`` arguments that give ``port_id`` its address back, read again now."""
    with db.begin() as session:
        port = session.get(Port, port_id)
        if port is None:
            return None
        if port.device_owner == DHCP_PORT_OWNER:
            subnet_id = session.scalar(sa.select(Subnet.id).where(Subnet.network_id == port.network_id,
                                                                  Subnet.ip_version == 4, Subnet.enable_dhcp)
                                       .order_by(Subnet.created_at).limit(1))
            if subnet_id is None or not port.host:
                return None
            return {"request_token": dhcp_request_token(port.network_id, port.host), "subnet_id": subnet_id,
                    "port_id": port.id}
        if not port.device_id:
            return None
        row = session.get(Instance, port.device_id)
        if row is None:
            return None
        instance = states.as_dict(row)
    if instance["deleted"] or instance["task_state"] is not None:
        return None
    for index, vif in enumerate(instance["network_info"] or []):
        if vif.get("id") == port_id and vif.get("address"):
            return {"request_token": request_token(instance["id"], vif.get("index", index)),
                    "subnet_id": vif.get("subnet_id"), "segment_id": vif.get("segment_id"),
                    "host": instance["host"], "address": vif["address"], "port_id": port_id}
    return None
