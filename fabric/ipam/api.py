"""What other services import from ipam (no RPC needed for these).

* :func:`validate_subnet`: the subnet rules, pure. The Network API calls it
  in-process (``fabric.api.network``) and stores the normalised result, so a
  bad CIDR, gateway or range is a 400 with nothing stored; it then casts
  ``subnet_created`` through :class:`fabric.ipam.rpcapi.IpamAPI`.
* :func:`move_subnet_gateway`: a subnet's gateway moved, the row and its pool's
  definition in the caller's transaction (``subnet set --gateway``); the API then
  casts ``subnet_updated`` so every ipam worker forgets its cached definition.
* :class:`Layout`: the pure bit arithmetic of the L3 layout (host blocks,
  segment gateways), e.g. for the network worker's nftables rules on tenant
  and segment bits.
* :class:`IpamAPI`: allocations, releases and topology operations over RPC.
"""

from fabric.ipam.gateways import move_subnet_gateway
from fabric.ipam.layout import FIRST_ENDPOINT_OFFSET, GATEWAY_OFFSET, SERVICE_OFFSET, Layout
from fabric.ipam.manager import segment_pool_id
from fabric.ipam.pools import SubnetSpec, validate_subnet
from fabric.ipam.rpcapi import IpamAPI
from fabric.ipam.topology import DEFAULT_DATACENTER

__all__ = ["DEFAULT_DATACENTER", "FIRST_ENDPOINT_OFFSET", "GATEWAY_OFFSET", "SERVICE_OFFSET", "IpamAPI",
           "Layout", "SubnetSpec", "move_subnet_gateway", "segment_pool_id", "validate_subnet"]
