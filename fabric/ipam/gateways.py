"""Moving a subnet's gateway: the subnet row and its pool's definition, in the caller's transaction.

The Network API runs :func:`move_subnet_gateway` in-process (through :mod:`fabric.ipam.api`)
inside the transaction that updates the subnet, so a refusal writes nothing and the pool
never disagrees with its subnet. The pool's ranges stay as they are
(:func:`fabric.ipam.pools.move_gateway`); what changes is the address kept out of allocation
(the definition's ``excluded``) and the gateway every allocation reports (its ``info``).

Every ipam worker caches definitions: after the commit the caller tells them all
(``subnet_updated``, a fanout cast through :class:`fabric.ipam.rpcapi.IpamAPI`) to forget
theirs, and an address asked for by name is checked against the stored definition, not the
cache, so a worker that has not heard yet still never hands out the new gateway.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fabric.db.models import AddressAllocation, AddressPool, Port, Subnet
from fabric.exception import Conflict
from fabric.ipam import pools


def move_subnet_gateway(session: sa.orm.Session, subnet: Subnet, new_gateway: Any) -> bool:
    """Set ``subnet``'s gateway to ``new_gateway`` (an address, or None for none) in ``session``:
    the row, and its pool's definition (stored now if IPAM has not made the pool yet). Returns
    False when the gateway is already that. Raises Invalid (not an address of the subnet's
    hosts) and Conflict (inside an allocation pool; held by a port or a floating IP) naming the
    address, having written nothing."""
    spec = pools.move_gateway(subnet.cidr, subnet.gateway_ip, subnet.allocation_pools, subnet.reserved,
                              new_gateway)
    if spec.gateway_ip == subnet.gateway_ip:
        return False
    if spec.gateway_ip is not None:
        _check_unheld(session, subnet, spec.gateway_ip)
    definition = pools.subnet_pool(subnet.id, spec.cidr, spec.gateway_ip, spec.allocation_pools, spec.reserved)
    stored = session.scalar(sa.select(AddressPool.definition).where(AddressPool.id == subnet.id))
    if stored is None:
        # Stored here, not left to IPAM: IPAM may have read the row before this change and be
        # about to store the pool it had then. The primary key makes one of the two fail.
        session.add(AddressPool(id=subnet.id, kind=pools.SUBNET_POOL, subnet_id=subnet.id,
                                definition=definition.to_json(), size_limit=definition.limit, next_ordinal=0))
    else:
        ranges = pools.PoolDefinition.from_json(subnet.id, stored).ranges
        if ranges != definition.ranges:  # move_gateway keeps them; a guard for rows it cannot read alike
            raise Conflict(reason=f"subnet {subnet.id}'s pool would change its ranges "
                                  f"({definition.to_json()['ranges']}); its gateway cannot move to {new_gateway}")
        session.execute(sa.update(AddressPool).where(AddressPool.id == subnet.id)
                        .values(definition=definition.to_json()))
    subnet.gateway_ip = spec.gateway_ip
    subnet.allocation_pools = spec.allocation_pools
    session.flush()
    return True


def _check_unheld(session: sa.orm.Session, subnet: Subnet, address: str) -> None:
    """Conflict when ``address`` is allocated: in the subnet's pool (a port, a floating IP), or to
    a port of its network from another pool (a routed segment's)."""
    held = session.execute(
        sa.select(AddressAllocation.port_id, AddressAllocation.request_token)
        .outerjoin(Port, Port.id == AddressAllocation.port_id)
        .where(sa.or_(AddressAllocation.pool_id == subnet.id, Port.network_id == subnet.network_id),
               sa.or_(AddressAllocation.address == address, AddressAllocation.address.like(f"{address}/%")))
    ).first()
    if held is not None:
        holder = f"port {held.port_id}" if held.port_id else f"allocation {held.request_token}"
        raise Conflict(reason=f"Unable to complete operation for network {subnet.network_id}. The IP address "
                              f"{address} is in use (by {holder}); it cannot become subnet {subnet.id}'s gateway.")
