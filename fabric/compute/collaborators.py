"""What the compute manager needs from other services, as small interfaces.

The manager takes these as constructor arguments so unit tests can hand it
fakes; :func:`default_collaborators` wires the real RPC clients (IPAM, the
network worker on this host, the scheduler) and the images downloaded from the objectstore.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import uuid
from typing import Any, BinaryIO, NamedTuple, Protocol

import sqlalchemy as sa

from fabric import images
from fabric.context import RequestContext
from fabric.db import Database, constraints
from fabric.db.models import AddressAllocation, Network, Port, Subnet
from fabric.exception import Conflict, Invalid, NotFound, ObjectstoreError
from fabric.images import ImageCache, ImageRecord, resolve_boot
from fabric.network import ipv6
from fabric.network.model import COMPUTE_PORT_OWNER_PREFIX
from fabric.network.secgroups_db import bind_port_groups_in
from fabric.objectstore.client import S3Client
from fabric.virt.driver import BootImage

LOG = logging.getLogger(__name__)


def request_token(instance_id: str, index: int) -> str:
    """The IPAM request token of an instance's ``index``-th NIC (makes allocation idempotent)."""
    return f"instance:{instance_id}:{index}"


def request_token6(instance_id: str, index: int) -> str:
    """The IPAM request token of the allocated IPv6 address an instance's ``index``-th NIC takes
    beside its IPv4 one (a network with both kinds of subnet)."""
    return f"instance:{instance_id}:{index}:v6"


def port_id_for(instance_id: str, index: int) -> str:
    """A stable port id for an instance's NIC that asked for no particular port."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fabric:instance:{instance_id}:nic:{index}"))


def _stable_mac(seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return "fa:16:3e:" + ":".join(f"{b:02x}" for b in digest[:3])


def mac_for(instance_id: str, index: int, attempt: int = 0) -> str:
    """A stable, locally administered unicast MAC for an instance's NIC; ``attempt`` > 0 gives
    the next candidates, for a NIC whose MAC another port on its network has (24 random bits:
    a network of 10,000 ports holds about three such pairs)."""
    return _stable_mac(f"{instance_id}:{index}" + (f":{attempt}" if attempt else ""))


#: MACs a new NIC tries on its network before its build fails (each taken with odds of at most
#: a network's ports in 2**24).
MAC_ATTEMPTS = 8


def dhcp_mac(network_id: str, host: str) -> str:
    """A stable MAC for ``host``'s DHCP port on a network (one per host: unique per network)."""
    return _stable_mac(f"dhcp:{network_id}:{host}")


def dhcp_port_id(network_id: str, host: str) -> str:
    """The id of the port of ``host``'s DHCP server on an L2 network."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fabric:dhcp:{network_id}:{host}"))


def dhcp_request_token(network_id: str, host: str) -> str:
    """The IPAM request token of ``host``'s DHCP server address on an L2 network."""
    return f"dhcp:{network_id}:{host}"


#: A port's status as Neutron reports it: ACTIVE once its device is plugged on its host, DOWN otherwise.
PORT_ACTIVE, PORT_DOWN = "ACTIVE", "DOWN"


def set_port_status(db: Database, port_id: str, status: str) -> None:
    """Record ``status`` on the port (a port gone meanwhile is no error)."""
    with db.single_statement() as connection:
        connection.execute(sa.update(Port).where(Port.id == port_id).values(status=status))


class AddressAllocator(Protocol):
    def allocate(self, ctx: RequestContext, instance: dict, index: int, request: dict) -> dict:
        """The NIC for the instance's ``index``-th requested network:
        ``{"id", "network_id", "mac", "address", ...}``. Idempotent per (instance, index).
        Raises AddressExhausted, NotFound, Invalid."""

    def release(self, ctx: RequestContext, instance: dict, index: int, vif: dict) -> None:
        """Give the NIC's address back. Idempotent."""

    def bind_to_host(self, ctx: RequestContext, instance: dict, vif: dict, host: str) -> None:
        """Bind the NIC's port (address kept) to ``host``, where the server moves. Idempotent.
        Raises Conflict for a NIC whose address belongs to its host (a routed segment)."""


class NetworkPlugger(Protocol):
    def plug(self, ctx: RequestContext, host: str, vif: dict) -> dict:
        """Connect the NIC on ``host``; returns where the guest attaches: ``{"tap": name}`` or
        ``{"bridge": name}``. Idempotent."""

    def unplug(self, ctx: RequestContext, host: str, vif: dict) -> None:
        """Undo plug. Idempotent (an unplugged NIC is no error)."""


class Rescheduler(Protocol):
    def stage(self, session: Any, ctx: RequestContext, instance_id: str, failed_host: str, reason: str) -> Any:
        """Write, in the caller's transaction (the one that puts the instance back in scheduling),
        the request that the scheduler place a failed build elsewhere (it releases this host's
        claim); what :meth:`send` sends after the commit."""

    def send(self, staged: Any) -> None:
        """Send a committed :meth:`stage`. Raises Unroutable when no scheduler consumes its queue."""


class ClaimReleaser(Protocol):
    def release(self, instance_id: str, host: str) -> bool:
        """Give back what the instance holds on ``host`` and clear its host. Idempotent."""


class ImageSource(Protocol):
    def boot_image(self, ctx: RequestContext, instance: dict) -> BootImage:
        """What the instance boots. Raises NotFound for an unknown image, Invalid for an unusable one."""


class MoveHandoff(Protocol):
    """How a resize or migration goes from host to host (fabric.compute.moves)."""

    def claim_destination(self, ctx: RequestContext, migration_id: str) -> str:
        """The destination the scheduler chose and claimed (idempotent). Raises NoValidHost."""

    def stage(self, session: Any, cast: str, ctx: RequestContext, **kwargs: Any) -> Any:
        """Write the cast ``cast`` (compute.finish_resize, compute.finish_revert_resize) in the
        caller's transaction (the one that swaps the server's host); what :meth:`send` sends."""

    def send(self, staged: Any) -> None:
        """Send a committed :meth:`stage`. Raises Unroutable when no worker serves its host."""


class DiskStore(Protocol):
    """Where guest disks travel between hosts, and where snapshots go (no directory is shared)."""

    def put_move_disk(self, migration_id: str, path: str) -> None:
        """Keep the file at ``path`` as the disk of the move ``migration_id`` (replacing any)."""

    def get_move_disk(self, migration_id: str, target: str) -> None:
        """Write the move's disk to ``target``. Raises NotFound when there is none."""

    def delete_move_disk(self, migration_id: str) -> None:
        """Forget the move's disk (idempotent)."""

    def put_image(self, image_id: str, path: str) -> dict:
        """Upload the file at ``path`` as image ``image_id``'s data; its size, checksum, os_hash_*."""


# --- real implementations -------------------------------------------------------



class NicSource(NamedTuple):
    """Where a NIC takes its addresses (:meth:`IpamAddresses._source`), and what was read to say so."""

    network_id: str
    subnet_id: str | None = None
    segment_id: int | None = None
    #: An allocated IPv6 subnet the NIC takes an address of beside its IPv4 one.
    subnet6_id: str | None = None
    #: The network's project and its subnets, oldest first, when they were read (an L2 network's
    #: NIC that names no subnet): what the host's DHCP port there is made of.
    network_project_id: str | None = None
    subnets: list[Subnet] | None = None


class IpamAddresses:
    """Addresses from the IPAM workers (``fabric.ipam.rpcapi``), one request token per NIC.

    A requested network is ``{"network_id"}`` (its routed segment, or the subnets
    :func:`fabric.network.ipv6.allocated_subnets` names: the first IPv4 one, and the
    first allocated IPv6 one as ``address6``; a NIC on a network with only SLAAC
    subnets takes no address from IPAM), or names ``subnet_id`` / ``segment_id``
    itself; ``fixed_ip`` (the subnet holding it is used), ``port_id`` and ``mac``
    are optional.

    Every NIC is a ``ports`` row bound the way the network workers read it
    (:mod:`fabric.network.dbstate`): ``host`` is the instance's host,
    ``binding`` ``{"kind": "tap"}``, ``device_id`` the instance and
    ``device_owner`` ``compute:<zone>``; the address is linked to the port.
    A NIC that named no port gets a port of its own (deleted on release); a
    port the user named is bound, and unbound again on release.

    A subnet with DHCP enabled (or an IPv6 subnet with a mode) needs a DHCP
    server on every host that carries its network: the first NIC on a host also
    gets the host its ``network:dhcp`` port, with an address of the IPv4 subnet
    when there is one (kept while the network exists; the network worker serves
    DHCP and router advertisements from it).
    """

    def __init__(self, transport: Any, db: Database) -> None:
        from fabric.ipam.rpcapi import IpamAPI

        self.api = IpamAPI(transport)
        self.db = db

    def _source(self, session: Any, request: dict) -> NicSource:
        """Where the NIC of a requested network takes its addresses; NotFound or Invalid.

        The subnet is the one named, else the one holding ``fixed_ip``, else the first of an L2
        network's :func:`~fabric.network.ipv6.allocated_subnets` (None when it has only SLAAC
        subnets); the IPv6 subnet is the second of those (an allocated IPv6 subnet beside an IPv4
        one), for a NIC that names nothing. A routed network's addresses come from its segment.
        """
        subnet_id, segment_id, network_id = request.get("subnet_id"), request.get("segment_id"), None
        if request.get("port_id"):
            port = session.get(Port, request["port_id"])
            if port is None:
                raise NotFound(kind="Port", ident=request["port_id"])
            network_id = port.network_id
        if subnet_id:
            subnet = session.get(Subnet, subnet_id)
            if subnet is None:
                raise NotFound(kind="Subnet", ident=subnet_id)
            return NicSource(subnet.network_id, subnet_id)
        if segment_id is not None:
            network_id = session.scalars(sa.select(Network.id).where(Network.segment_id == segment_id)
                                         .order_by(Network.created_at, Network.id).limit(1)).first()
            if network_id is None:
                raise Invalid(reason=f"segment {segment_id} has no routed network; create a network on it first")
            return NicSource(network_id, segment_id=segment_id)
        network_id = network_id or request.get("network_id")
        network = session.get(Network, network_id) if network_id else None
        if network is None:
            raise NotFound(kind="Network", ident=network_id)
        if network.segment_id is not None:
            return NicSource(network.id, segment_id=network.segment_id)
        subnets = list(session.scalars(sa.select(Subnet).where(Subnet.network_id == network.id)
                                       .order_by(Subnet.created_at, Subnet.id)))
        if not subnets:
            raise Invalid(reason=f"network {network.id} has no subnet to take an address from")
        if request.get("fixed_ip"):
            address = ipaddress.ip_address(request["fixed_ip"])
            inside = [s.id for s in subnets if address in ipaddress.ip_network(s.cidr)]
            if not inside:
                raise Invalid(reason=f"fixed_ip {request['fixed_ip']} is in no subnet of network {network.id} "
                                     f"({', '.join(s.cidr for s in subnets)})")
            return NicSource(network.id, inside[0], network_project_id=network.project_id, subnets=subnets)
        wanted = [s.id for s in ipv6.allocated_subnets(subnets)]
        if request.get("port_id"):  # a user's port keeps the addresses it holds, and takes no others
            wanted = wanted[:1]
        return NicSource(network.id, (wanted or [None])[0], subnet6_id=wanted[1] if len(wanted) > 1 else None,
                         network_project_id=network.project_id, subnets=subnets)

    def _bind_port(self, instance: dict, index: int, request: dict) -> tuple[dict, NicSource]:
        """Create or bind the NIC's port row on the instance's host; (the NIC (without address),
        where it takes its addresses).

        A new port whose stable MAC another port of the network has takes the next candidate
        (:func:`mac_for`): in a transaction of its own, the unique constraint deciding.
        Raises Conflict when the named port is bound to another instance.
        """
        for attempt in range(MAC_ATTEMPTS):
            try:
                return self._bind_port_once(instance, index, request, attempt)
            except sa.exc.IntegrityError as exc:
                taken = constraints.violation(exc) == constraints.UNIQUE and "mac_address" in str(exc.orig)
                if not taken or request.get("mac") or attempt == MAC_ATTEMPTS - 1:
                    raise
                LOG.info("instance %s NIC %d: its MAC is another port's on the network; taking the next",
                         instance["id"], index)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _bind_port_once(self, instance: dict, index: int, request: dict, attempt: int) -> tuple[dict, NicSource]:
        owner = COMPUTE_PORT_OWNER_PREFIX + (instance.get("availability_zone") or "nova")
        bound = {"device_id": instance["id"], "device_owner": owner, "host": instance.get("host"),
                 "binding": {"kind": "tap"}}
        with self.db.begin() as session:
            source = self._source(session, request)
            network_id, subnet_id, segment_id, subnet6_id = (source.network_id, source.subnet_id, source.segment_id,
                                                             source.subnet6_id)
            port_id = request.get("port_id")
            if port_id:
                claimed = session.execute(
                    sa.update(Port).where(Port.id == port_id, sa.or_(Port.device_id.is_(None),
                                                                     Port.device_id == instance["id"]))
                    .values(**bound).execution_options(synchronize_session=False))
                if claimed.rowcount != 1:
                    raise Conflict(reason=f"port {port_id} is in use by another server")
                mac = session.get(Port, port_id, populate_existing=True).mac_address
            else:
                port_id = port_id_for(instance["id"], index)
                mac = request.get("mac") or mac_for(instance["id"], index, attempt)
                port = session.get(Port, port_id)
                if port is None:  # a redelivered build finds its port already there
                    session.add(Port(id=port_id, network_id=network_id, project_id=instance["project_id"],
                                     mac_address=mac, **bound))
                    session.flush()
                else:  # with the MAC it was given (perhaps a later candidate)
                    port.host, port.binding, mac = bound["host"], bound["binding"], port.mac_address
                # A user's own port keeps its groups; the NIC's own port is in its groups as it
                # is written (one transaction).
                bind_port_groups_in(session, port_id, instance["project_id"], request.get("security_groups"),
                                    new_port=port is None)
        return {"id": port_id, "network_id": network_id, "subnet_id": subnet_id, "segment_id": segment_id,
                "mac": mac} | ({"subnet6_id": subnet6_id} if subnet6_id else {}), source

    def _ensure_dhcp_port(self, ctx: RequestContext, network_id: str, subnet_id: str | None, host: str,
                          source: NicSource | None = None) -> None:
        """``host``'s DHCP port on the network when the network is served there: with an address of
        IPv4 subnet ``subnet_id`` (else of the network's first IPv4 subnet) when that subnet serves
        DHCP; without any address when only an IPv6 subnet with a mode is served (the host's address
        there is the EUI-64 of the port's MAC: :func:`fabric.network.dbstate.ipv6_service`). Idempotent.
        ``source``: what the NIC's binding read of the network (its subnets, its project), in the
        same allocation; what it lacks is read here."""
        from fabric.network.model import DHCP_PORT_OWNER

        port_id = dhcp_port_id(network_id, host)
        known = source is not None and source.subnets is not None and source.network_id == network_id
        with self.db.read() as session:  # reads only (every build comes here): no BEGIN and COMMIT
            # The allocation's binding has just read them (a build read them twice).
            subnets = source.subnets if known else list(session.scalars(
                sa.select(Subnet).where(Subnet.network_id == network_id).order_by(Subnet.created_at, Subnet.id)))
            subnet = next((s for s in subnets if s.id == subnet_id and s.ip_version == 4),
                          next((s for s in subnets if s.ip_version == 4), None))
            dhcp4 = subnet.id if subnet is not None and subnet.enable_dhcp else None
            if dhcp4 is None and not ipv6.advertised(subnets):
                return
            # The port and whether it holds an address, in one statement.
            found = session.execute(sa.select(Port.id, AddressAllocation.id)
                                    .outerjoin(AddressAllocation, AddressAllocation.port_id == Port.id)
                                    .where(Port.id == port_id).limit(1)).first()
            exists = found is not None
            if exists and (dhcp4 is None or found[1] is not None):
                return  # the host serves this network already
            project_id = source.network_project_id if known else session.scalar(
                sa.select(Network.project_id).where(Network.id == network_id))
        if not exists:
            try:
                with self.db.begin() as session:
                    session.add(Port(id=port_id, network_id=network_id, project_id=project_id,
                                     mac_address=dhcp_mac(network_id, host),
                                     device_owner=DHCP_PORT_OWNER, host=host, status="ACTIVE", binding={}))
            except sa.exc.IntegrityError:
                pass  # another build on this host made it first
        if dhcp4 is not None:
            self.api.allocate(ctx, dhcp_request_token(network_id, host), subnet_id=dhcp4, port_id=port_id)

    def _unbind_port(self, instance: dict, index: int, port_id: str) -> None:
        """Delete the NIC's own port, or unbind the user's port (only if this instance holds it)."""
        held = (Port.id == port_id, Port.device_id == instance["id"])
        with self.db.begin() as session:
            if port_id == port_id_for(instance["id"], index):
                session.execute(sa.delete(Port).where(*held).execution_options(synchronize_session=False))
            else:
                session.execute(sa.update(Port).where(*held)
                                .values(device_id=None, device_owner=None, host=None, binding={}, status=PORT_DOWN)
                                .execution_options(synchronize_session=False))

    def allocate(self, ctx: RequestContext, instance: dict, index: int, request: dict) -> dict:
        vif, source = self._bind_port(instance, index, request)
        result: dict = {}
        result6: dict = {}
        try:
            if vif["subnet_id"] or vif["segment_id"] is not None:
                result = self.api.allocate(ctx, request_token(instance["id"], index), subnet_id=vif["subnet_id"],
                                           segment_id=vif["segment_id"], host=instance.get("host"),
                                           address=request.get("fixed_ip"), port_id=vif["id"])
            if vif.get("subnet6_id"):
                result6 = self.api.allocate(ctx, request_token6(instance["id"], index), subnet_id=vif["subnet6_id"],
                                            port_id=vif["id"])
            if vif["segment_id"] is None and instance.get("host"):
                self._ensure_dhcp_port(ctx, vif["network_id"], vif["subnet_id"], instance["host"], source)
        except Exception:
            # Not yet on the instance's network_info: nothing else would undo this NIC.
            for held, token in ((result, request_token), (result6, request_token6)):
                if held.get("pool"):
                    self.api.release(ctx, pool=held["pool"], request_token=token(instance["id"], index))
            self._unbind_port(instance, index, vif["id"])
            raise
        return vif | {"address": result.get("address"), "prefixlen": result.get("prefixlen"),
                      "gateway": result.get("gateway"), "pool": result.get("pool")} | (
            {"address6": result6.get("address"), "pool6": result6.get("pool")} if result6 else {})

    def bind_to_host(self, ctx: RequestContext, instance: dict, vif: dict, host: str) -> None:
        if vif.get("segment_id") is not None:
            raise Conflict(reason=f"server {instance['id']} has NIC {vif['id']} on routed segment "
                                  f"{vif['segment_id']}, whose addresses belong to their host; it cannot move")
        with self.db.begin() as session:
            session.execute(sa.update(Port).where(Port.id == vif["id"], Port.device_id == instance["id"])
                            .values(host=host).execution_options(synchronize_session=False))
        self._ensure_dhcp_port(ctx, vif["network_id"], vif.get("subnet_id"), host)

    def release(self, ctx: RequestContext, instance: dict, index: int, vif: dict) -> None:
        if vif.get("pool6"):
            self.api.release(ctx, pool=vif["pool6"], request_token=request_token6(instance["id"], index))
        if vif.get("pool"):
            self.api.release(ctx, pool=vif["pool"], request_token=request_token(instance["id"], index))
        else:
            self.api.release(ctx, port_id=vif["id"])
        self._unbind_port(instance, index, vif["id"])


class RpcNetworkPlugger:
    """The network worker on the instance's host (``fabric.network``): a tap per NIC.

    The NIC's port row (bound by :class:`IpamAddresses`) is what is plugged:
    the network worker gets the network's spec with it, so a host that never
    carried the network sets it up first, and a host that restarts finds the
    same endpoint in the database. A routed network also gets the host's
    routed layout (gateway, block) first.
    """

    def __init__(self, transport: Any, db: Database, settings: Any = None) -> None:
        from fabric.network.api import NetworkService

        self.service = NetworkService(db, transport)
        self.api = self.service.rpcapi
        self.db = db
        self.settings = settings

    def plug(self, ctx: RequestContext, host: str, vif: dict) -> dict:
        """As :meth:`NetworkPlugger.plug`; the port then reads ACTIVE (Neutron's word for a port
        whose device is wired up on its host)."""
        if vif.get("segment_id") is not None:
            from fabric.network import dbstate

            routed = dbstate.host_state(self.db, host, self.settings).routed
            if routed is not None:
                self.api.set_routed(ctx, host, routed.to_dict())
        plugged = {"tap": self.service.plug_port(ctx, vif["id"])["device"]}
        set_port_status(self.db, vif["id"], PORT_ACTIVE)
        return plugged

    def unplug(self, ctx: RequestContext, host: str, vif: dict) -> None:
        """As :meth:`NetworkPlugger.unplug`; the port then reads DOWN."""
        self.api.unplug(ctx, host, vif["id"])
        set_port_status(self.db, vif["id"], PORT_DOWN)


class ComputeSenders:
    """The clients the compute worker's one outbox sends through (:data:`fabric.rpc.outbox.CASTS`
    of kind compute): the scheduler's and the compute workers' rpcapi."""

    def __init__(self, transport: Any) -> None:
        from fabric.compute.rpcapi import ComputeAPI
        from fabric.scheduler.rpcapi import SchedulerAPI

        self.scheduler = SchedulerAPI(transport)
        self.compute = ComputeAPI(transport)


class SchedulerRescheduler:
    """Failed builds back to the scheduler through this host's cast outbox (:mod:`fabric.rpc.outbox`).

    The row is committed in the transaction of the build's swap back to ``scheduling``: a
    crash before the commit leaves the build message, which is redelivered (it is acked after
    the handler) and builds again here; a crash after it, the outbox row, which a relay sends.
    ``outbox``: the worker's (shared with :class:`SchedulerMoves`); default, one of its own.
    """

    def __init__(self, transport: Any, db: Database, host: str | None = None, outbox: Any = None) -> None:
        from fabric.rpc.outbox import Outbox

        #: The compute worker's outbox; its service runs the relay.
        self.outbox = outbox or Outbox(db, "compute", ComputeSenders(transport), host=host)

    def stage(self, session: Any, ctx: RequestContext, instance_id: str, failed_host: str, reason: str) -> Any:
        return self.outbox.stage(session, "compute.reschedule", ctx, instance_id=instance_id,
                                 failed_host=failed_host, reason=reason)

    def send(self, staged: Any) -> None:
        """Raises Unroutable when no scheduler consumes its queue."""
        self.outbox.send(staged)


class SchedulerMoves:
    """Moves through the scheduler (a call that claims the destination) and this worker's outbox."""

    def __init__(self, transport: Any, outbox: Any) -> None:
        from fabric.scheduler.rpcapi import SchedulerAPI

        self.scheduler = SchedulerAPI(transport)
        self.outbox = outbox

    def claim_destination(self, ctx: RequestContext, migration_id: str) -> str:
        return self.scheduler.claim_move_destination(ctx, migration_id)

    def stage(self, session: Any, cast: str, ctx: RequestContext, **kwargs: Any) -> Any:
        return self.outbox.stage(session, cast, ctx, **kwargs)

    def send(self, staged: Any) -> None:
        self.outbox.send(staged)


class ObjectstoreDisks:
    """Guest disks in the objectstore, signed with the image service's credential (as images are).

    A move's disk is one object, ``<migration id>/disk`` in the private bucket
    :data:`MOVES_BUCKET`: the source host uploads it, the destination downloads it over
    HTTP, the hosts share no directory and need no path to each other (only the
    objectstore, which every compute host reaches already for images). A snapshot is
    uploaded exactly as the Image API uploads image data (:func:`fabric.api.image_store.write`).
    """

    #: The bucket of disks in transit between hosts.
    MOVES_BUCKET = "fabric-moves"

    def __init__(self, settings: Any, db: Database) -> None:
        self.settings = settings
        self.db = db

    def _client(self) -> S3Client:
        from fabric.api.bootstrap import ensure_image_service

        return S3Client(self.settings.objectstore_url, *ensure_image_service(self.db),
                        self.settings.objectstore.region)

    @staticmethod
    def _key(migration_id: str) -> str:
        return f"{uuid.UUID(migration_id)}/disk"  # a migration id is a UUID: never a path

    def put_move_disk(self, migration_id: str, path: str) -> None:
        client = self._client()
        client.ensure_bucket(self.MOVES_BUCKET)
        with open(path, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            client.upload(self.MOVES_BUCKET, self._key(migration_id), source.read, size,
                          self.settings.objectstore.max_object_size)

    def get_move_disk(self, migration_id: str, target: str) -> None:
        try:
            response = self._client().get_object(self.MOVES_BUCKET, self._key(migration_id))
        except ObjectstoreError as exc:
            if exc.fields.get("code") in ("NoSuchKey", "NoSuchBucket"):
                raise NotFound(kind="Disk of migration", ident=migration_id) from None
            raise
        with response, open(target, "wb") as out:
            while data := response.read(images.CHUNK):
                out.write(data)
        if response.length not in (None, 0):
            raise ObjectstoreError(url=self.settings.objectstore_url, request=f"GET disk of {migration_id}",
                                   status=200, code="", reason="the download ended early")

    def delete_move_disk(self, migration_id: str) -> None:
        try:
            self._client().delete_object(self.MOVES_BUCKET, self._key(migration_id))
        except ObjectstoreError as exc:
            if exc.fields.get("code") != "NoSuchBucket":
                raise

    def put_image(self, image_id: str, path: str) -> dict:
        from fabric.api import image_store

        with open(path, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            return image_store.write(self.settings, self.db, image_id, source.read, max(size, 1), size)


class SchedulerClaims:
    def __init__(self, db: Database) -> None:
        self.db = db

    def release(self, instance_id: str, host: str) -> bool:
        from fabric.scheduler.api import release_instance_claim

        return release_instance_claim(self.db, instance_id, host)


class ObjectstoreImages:
    """What an instance boots, downloaded from the objectstore into this host's :class:`~fabric.images.ImageCache`.

    The images come from :func:`fabric.images.resolve_boot` for the instance's
    project, whatever the database holds: ids that are not image ids, images the
    project may not see, inactive images and images of the wrong kind are refused
    (Invalid, or NotFound for the boot image). Each one is fetched over HTTP with a
    signed GET (the image service's credential), checked against the size, MD5 and
    SHA-512 the Image API recorded, and cached by id and checksum; every file handed
    to the driver is :meth:`~fabric.images.ImageCache.existing_file`'s real path. A
    download that is not the recorded bytes raises ImageDataCorrupt and is not kept.
    Nothing of the API's host is read: no directory is shared.
    """

    def __init__(self, cache: ImageCache, db: Database, settings: Any) -> None:
        self.cache = cache
        self.db = db
        self.settings = settings

    @classmethod
    def from_settings(cls, settings: Any, db: Database) -> ObjectstoreImages:
        """The cache under this host's ``data_dir``, fed from ``settings.objectstore_url``."""
        return cls(ImageCache.from_settings(settings), db, settings)

    def _download(self, image_id: str) -> BinaryIO:
        credential = images.service_credential(self.db)
        if credential is None:
            raise ObjectstoreError(url=self.settings.objectstore_url, request=f"GET image {image_id}", status="-",
                                   code="", reason="the image service has no EC2 credential yet (fabric-manage "
                                                   "bootstrap, or the first image upload, makes it)")
        client = S3Client(self.settings.objectstore_url, *credential, self.settings.objectstore.region)
        return client.get_object(images.BUCKET, images.object_key(image_id))

    def _file(self, image: Any) -> str:
        return str(self.cache.fetch(ImageRecord.of(image), self._download))

    def boot_image(self, ctx: RequestContext, instance: dict) -> BootImage:
        if not instance.get("image_id"):
            raise Invalid(reason=f"instance {instance['id']} has no image_id; an image is required to boot")
        with self.db.read() as session:  # reads only: no BEGIN and COMMIT around them
            boot = resolve_boot(session, instance.get("project_id"), instance["image_id"])
            session.expunge_all()  # the rows' loaded columns are read after the session ends
        if boot.kernel is not None:
            # A disk image naming a kernel (a snapshot of a kernel-booted server) brings its disk too.
            disk = boot.image.disk_format in images.BOOT_DISK_FORMATS
            return BootImage(kernel=self._file(boot.kernel),
                             initrd=self._file(boot.ramdisk) if boot.ramdisk is not None else None,
                             cmdline=boot.cmdline, disk_path=self._file(boot.image) if disk else None,
                             disk_format=boot.image.disk_format if disk else "qcow2")
        return BootImage(disk_path=self._file(boot.image), disk_format=boot.image.disk_format)


def default_collaborators(settings, db: Database, transport: Any) -> dict[str, Any]:
    """The real collaborators over ``transport`` (keyword arguments of ComputeManager)."""
    from fabric.rpc.outbox import Outbox

    # One outbox per worker kind and process: its relay takes over every compute cast a dead
    # worker left (fabric.rpc.outbox), so the reschedules and the move hand-offs share it.
    outbox = Outbox(db, "compute", ComputeSenders(transport), host=getattr(settings.default, "host", None))
    return {
        "addresses": IpamAddresses(transport, db),
        "network": RpcNetworkPlugger(transport, db, settings),
        "rescheduler": SchedulerRescheduler(transport, db, outbox=outbox),
        "claims": SchedulerClaims(db),
        "images": ObjectstoreImages.from_settings(settings, db),
        "moves": SchedulerMoves(transport, outbox),
        "disks": ObjectstoreDisks(settings, db),
    }
