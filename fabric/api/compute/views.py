"""Server documents: the fields openstacksdk and the openstack CLI read."""

from __future__ import annotations

import functools
import hashlib
import json

import sqlalchemy as sa

from fabric.api import common
from fabric.api.compute import microversion
from fabric.api.compute.flavors import links
from fabric.compute import states
from fabric.db.models import AddressAllocation, Flavor, Instance, InstanceFault, InstanceTag, Network, Port
from fabric.db.models.secgroups import PortSecurityGroup, SecurityGroup
from fabric.network.dbstate import slaac_subnets
from fabric.network.ipv6 import slaac_address

#: task_state -> status while active, as nova shows it; other tasks show the vm_state's status.
_TASK_STATUS = {states.REBOOTING: "REBOOT", states.REBOOTING_HARD: "HARD_REBOOT"}
#: vm_state -> status, as nova shows it.
_VM_STATUS = {
    states.BUILDING: "BUILD", states.ACTIVE: "ACTIVE", states.STOPPED: "SHUTOFF", states.PAUSED: "PAUSED",
    states.SUSPENDED: "SUSPENDED", states.ERROR: "ERROR", states.DELETED: "DELETED",
    states.RESIZED: states.MOVE_STATUS[states.RESIZED],
}

#: The statuses whose server documents carry "progress" (Nova's _progress_statuses).
_PROGRESS_STATUSES = frozenset({"ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING"})

#: API status -> vm_states, for ``?status=`` filters.
STATUS_FILTER = {status: vm for vm, status in _VM_STATUS.items()}


def status_of(vm_state: str, task_state: str | None) -> str:
    if task_state in states.MOVE_STATUS:  # rebuild, resize and migrate show their task in any vm_state
        return states.MOVE_STATUS[task_state]
    if vm_state == states.ACTIVE and task_state in _TASK_STATUS:
        return _TASK_STATUS[task_state]
    return _VM_STATUS.get(vm_state, "UNKNOWN")


def _ports_of(ids: list[str], scope: sa.Select | None) -> sa.ColumnElement[bool]:
    """Ports bound to ``ids``: through ``scope`` (a SELECT of instance ids) for a long listing,
    instead of a thousand bound ids."""
    return Port.device_id.in_(scope) if scope is not None and len(ids) > _LITERAL_IDS else Port.device_id.in_(ids)


def _fixed(address: str, mac: str) -> dict:
    return {"version": 6 if ":" in address else 4, "addr": address, "OS-EXT-IPS:type": "fixed",
            "OS-EXT-IPS-MAC:mac_addr": mac}


def addresses_for(session, instances: list, scope: sa.Select | None = None) -> dict[str, dict[str, list]]:
    """instance id -> {network name: [address documents]}, from the ports bound to each
    (else from the compute worker's cached network_info, a list or its JSON text).

    ``scope``, a SELECT of instance ids that holds at least ``instances``, lets a long
    listing find its ports by that subquery instead of a thousand bound ids."""
    ids = [i.id for i in instances]
    result: dict[str, dict[str, list]] = {i: {} for i in ids}
    if not ids:
        return result
    wanted_ports = _ports_of(ids, scope)
    rows = session.execute(
        sa.select(Port.device_id, Port.mac_address, Network.name, Network.id, AddressAllocation.address)
        .join(Network, Network.id == Port.network_id)
        .outerjoin(AddressAllocation, AddressAllocation.port_id == Port.id)
        .where(wanted_ports).order_by(Port.created_at, AddressAllocation.id)).all()
    # A port's addresses on SLAAC subnets are the EUI-64 of its MAC, never allocated: shown after
    # its allocated ones, as the port's fixed_ips show them.
    auto = slaac_subnets(session, sorted({net_id for _, _, _, net_id, _ in rows}))
    macs_done: set[tuple[str, str]] = set()
    for device_id, mac, net_name, net_id, address in rows:
        instance_addresses = result.get(device_id)
        if instance_addresses is None:  # in the scope but not on this page
            continue
        entries = instance_addresses.setdefault(net_name or net_id, [])
        if address:
            entries.append(_fixed(address.split("/")[0], mac))
    for device_id, mac, net_name, net_id, _ in rows:
        if device_id in result and auto.get(net_id) and (device_id, mac) not in macs_done:
            macs_done.add((device_id, mac))
            result[device_id].setdefault(net_name or net_id, []).extend(
                _fixed(slaac_address(subnet.cidr, mac), mac) for subnet in auto[net_id])
    pending = {}
    for instance in instances:
        if not result[instance.id]:
            network_info = _json_list(instance.network_info)
            if network_info:
                pending[instance.id] = (instance.network_info, network_info)
    if pending:
        wanted = {vif.get("network_id") for _, vifs in pending.values() for vif in vifs if isinstance(vif, dict)}
        names = dict(session.execute(sa.select(Network.id, Network.name)
                                     .where(Network.id.in_(wanted - {None}))).all())
        names_key = tuple(sorted(names.items()))
        for ident, (raw, network_info) in pending.items():
            result[ident] = _cached_addresses(raw, names_key) if isinstance(raw, str) else \
                _addresses_from_network_info(network_info, names)
    return result


@functools.lru_cache(maxsize=8192)
def _cached_addresses(network_info_text: str, names_key: tuple) -> dict[str, list]:
    """The address documents of a network_info JSON text and the network names it refers to:
    a pure function of both, so a listing polled again reuses them (callers only read the result)."""
    return _addresses_from_network_info(_json_list(network_info_text), dict(names_key))


#: Up to this many servers, addresses_for names them in the query; past it, it uses the listing's scope.
_LITERAL_IDS = 50


def _json_list(value: list | str | None) -> list:
    """network_info as loaded by the model (a list) or selected as raw text (listings)."""
    if isinstance(value, str):
        return _parse_list(value) if value not in ("[]", "null", "") else []
    return value or []


@functools.lru_cache(maxsize=8192)
def _parse_list(text: str) -> list:
    """json.loads, remembered: a polled listing sees the same network_info texts each time
    (callers only read the result)."""
    return json.loads(text)


def groups_for(session, instances: list, scope: sa.Select | None = None) -> dict[str, list[dict]]:
    """instance id -> its security groups as the server document lists them ([{"name"}], each
    group once, by name): the groups of the ports bound to it. ``scope`` as for :func:`addresses_for`."""
    ids = [i.id for i in instances]
    result: dict[str, list[dict]] = {i: [] for i in ids}
    if not ids:
        return result
    wanted_ports = _ports_of(ids, scope)
    rows = session.execute(
        sa.select(Port.device_id, SecurityGroup.name).distinct()
        .join(PortSecurityGroup, PortSecurityGroup.port_id == Port.id)
        .join(SecurityGroup, SecurityGroup.id == PortSecurityGroup.security_group_id)
        .where(wanted_ports).order_by(Port.device_id, SecurityGroup.name)).all()
    for device_id, name in rows:
        if device_id in result:
            result[device_id].append({"name": name})
    return result


def _addresses_from_network_info(network_info: list, names: dict[str, str]) -> dict[str, list]:
    """The compute worker's cached VIFs ({network_id, mac, address, ...}) as address documents."""
    out: dict[str, list] = {}
    for vif in network_info:
        if not isinstance(vif, dict):
            continue
        net_id = vif.get("network_id") or ""
        entries = out.setdefault(names.get(net_id) or net_id or "network", [])
        mac = vif.get("mac") or vif.get("mac_address")
        ips = vif.get("fixed_ips") or vif.get("ips") or [vif.get("ip_address") or vif.get("address")]
        for ip in ips:
            addr = (ip.get("ip_address") or ip.get("address")) if isinstance(ip, dict) else ip
            if addr:
                addr = str(addr).split("/")[0]
                entries.append({"version": 6 if ":" in addr else 4, "addr": addr,
                                "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": mac})
    return out


def faults_for(session, instances: list[Instance]) -> dict[str, InstanceFault]:
    ids = [i.id for i in instances if i.vm_state == states.ERROR]
    if not ids:
        return {}
    latest: dict[str, InstanceFault] = {}
    for fault in session.scalars(sa.select(InstanceFault).where(InstanceFault.instance_id.in_(ids))
                                 .order_by(InstanceFault.created_at, InstanceFault.id)):
        latest[fault.instance_id] = fault
    return latest


#: The columns a server document needs (listing loads only these, as plain rows).
DOCUMENT_COLUMNS = (Instance.id, Instance.display_name, Instance.project_id, Instance.user_id, Instance.flavor_id,
                    Instance.vcpus, Instance.memory_mb, Instance.disk_gb,
                    Instance.image_id, Instance.key_name, Instance.host, Instance.availability_zone,
                    Instance.vm_state, Instance.task_state, Instance.power_state, Instance.created_at,
                    Instance.updated_at, Instance.launched_at, Instance.terminated_at,
                    Instance.locked, Instance.locked_reason, Instance.description,
                    Instance.access_ip_v4, Instance.access_ip_v6,
                    # Raw text: most servers have no metadata, and "{}" needs no JSON parse; network_info
                    # is parsed only for the servers whose addresses no port gives (half of a listing's
                    # CPU went to decoding it for every row).
                    # CAST, not type_coerce: psycopg would otherwise decode PostgreSQL's json itself.
                    sa.cast(Instance.network_info, sa.Text).label("network_info"),
                    sa.cast(Instance.metadata_items, sa.Text).label("metadata_items"))


@functools.lru_cache(maxsize=4096)
def host_id(project_id: str, host: str | None) -> str:
    """Nova's hostId: an opaque per-project name of the host."""
    return hashlib.sha224((project_id + host).encode()).hexdigest() if host else ""


def _metadata(value: dict | str | None) -> dict:
    if isinstance(value, str):
        return json.loads(value) if value not in ("{}", "null", "") else {}
    return dict(value or {})


def _reference(base: str, kind: str, ident: str | None) -> dict:
    """A server's image or flavor reference."""
    if kind == "images":
        return {"id": ident, "links": [{"rel": "bookmark", "href": f"{base}/compute/images/{ident}"}]}
    return {"id": ident, "links": links(base, "flavors", ident or "")}


def tags_for(session, instances: list, scope: sa.Select | None = None) -> dict[str, list[str]]:
    """instance id -> its tags, sorted. ``scope`` as for :func:`addresses_for`."""
    ids = [i.id for i in instances]
    result: dict[str, list[str]] = {i: [] for i in ids}
    if not ids:
        return result
    wanted = InstanceTag.instance_id.in_(scope) if scope is not None and len(ids) > _LITERAL_IDS \
        else InstanceTag.instance_id.in_(ids)
    for instance_id, tag in session.execute(sa.select(InstanceTag.instance_id, InstanceTag.tag).where(wanted)
                                            .order_by(InstanceTag.instance_id, InstanceTag.tag)):
        if instance_id in result:
            result[instance_id].append(tag)
    return result


def flavors_for(session, instances: list) -> dict[str, tuple[str, dict]]:
    """flavor id -> (name, extra specs) of the flavors ``instances`` run with, for the flavor
    embedded in their documents from 2.47 (:func:`embedded_flavor`)."""
    wanted = {i.flavor_id for i in instances if i.flavor_id}
    if not wanted:
        return {}
    return {ident: (name, dict(specs or {})) for ident, name, specs in session.execute(
        sa.select(Flavor.id, Flavor.name, Flavor.extra_specs).where(Flavor.id.in_(wanted)))}


def embedded_flavor(instance, flavors: dict[str, tuple[str, dict]]) -> dict:
    """A server's ``flavor`` from microversion 2.47: the sizes it runs with (its own columns, which
    a resize changes) and its flavor's name and extra specs (the id, when the flavor is gone)."""
    name, specs = flavors.get(instance.flavor_id, (instance.flavor_id or "", {}))
    return {"vcpus": instance.vcpus, "ram": instance.memory_mb, "disk": instance.disk_gb, "ephemeral": 0,
            "swap": 0, "original_name": name, "extra_specs": {k: str(v) for k, v in specs.items()}}


def server_document(instance: Instance, base: str, is_admin: bool, addresses: dict, fault: InstanceFault | None,
                    detail: bool = True, groups: list[dict] | None = None, version: tuple[int, int] = (2, 1),
                    tags: list[str] | None = None, flavors: dict[str, tuple[str, dict]] | None = None) -> dict:
    """A server as the clients read it at microversion ``version`` (the fields Nova documents
    for it, no others). ``instance`` is a listing row (:data:`DOCUMENT_COLUMNS`) or a model;
    ``groups`` its security groups (:func:`groups_for`), ``tags`` its tags (:func:`tags_for`),
    ``flavors`` its flavor's name and extra specs (:func:`flavors_for`, from 2.47)."""
    ident = instance.id
    links_ = links(base, "servers", ident)
    if not detail:
        return {"id": ident, "name": instance.display_name, "links": links_}
    project_id, host, vm_state = instance.project_id, instance.host, instance.vm_state
    doc = {
        "id": ident, "name": instance.display_name, "links": links_,
        "accessIPv4": instance.access_ip_v4 or "", "accessIPv6": instance.access_ip_v6 or "",
        "OS-DCF:diskConfig": "MANUAL", "config_drive": "",
        "os-extended-volumes:volumes_attached": [], "security_groups": groups or [],
        "status": status_of(vm_state, instance.task_state),
        "tenant_id": project_id, "user_id": instance.user_id, "metadata": _metadata(instance.metadata_items),
        "hostId": host_id(project_id, host),
        "image": _reference(base, "images", instance.image_id) if instance.image_id else "",
        "flavor": embedded_flavor(instance, flavors or {}) if version >= microversion.FLAVOR_EMBEDDED
        else _reference(base, "flavors", instance.flavor_id),
        "created": common.isotime(instance.created_at),
        "updated": common.isotime(instance.updated_at or instance.created_at), "addresses": addresses,
        "OS-EXT-AZ:availability_zone": instance.availability_zone or "", "key_name": instance.key_name,
        "OS-SRV-USG:launched_at": common.isotime(instance.launched_at, micro=True),
        "OS-SRV-USG:terminated_at": common.isotime(instance.terminated_at, micro=True),
        "OS-EXT-STS:vm_state": vm_state, "OS-EXT-STS:task_state": instance.task_state,
        "OS-EXT-STS:power_state": instance.power_state,
    }
    if doc["status"] in _PROGRESS_STATUSES:  # Nova shows progress only while a server runs or moves
        doc["progress"] = 100 if vm_state == states.ACTIVE else 0
    if version >= microversion.LOCKED:
        doc["locked"] = bool(instance.locked)
    if version >= microversion.LOCKED_REASON:
        doc["locked_reason"] = instance.locked_reason
    if version >= microversion.DESCRIPTION:
        doc["description"] = instance.description
    if version >= microversion.TAGS:
        doc["tags"] = tags or []
    if is_admin:
        doc["OS-EXT-SRV-ATTR:host"] = doc["OS-EXT-SRV-ATTR:hypervisor_hostname"] = host
        doc["OS-EXT-SRV-ATTR:instance_name"] = f"instance-{ident[:8]}"
    if fault is not None:
        doc["fault"] = {"code": fault.code, "message": fault.message, "created": common.isotime(fault.created_at)}
        if is_admin or fault.code != 500:
            doc["fault"]["details"] = fault.details
    return doc


#: What Nova's update and rebuild answers leave out of a server document (its "show" without the
#: extended attributes, usage, zone, key pair, groups and volumes).
_NOT_IN_UPDATE_VIEW = ("key_name", "security_groups", "config_drive", "os-extended-volumes:volumes_attached",
                       "OS-SRV-USG:launched_at", "OS-SRV-USG:terminated_at", "OS-EXT-AZ:availability_zone",
                       "OS-EXT-STS:task_state", "OS-EXT-STS:vm_state", "OS-EXT-STS:power_state",
                       "OS-EXT-SRV-ATTR:host", "OS-EXT-SRV-ATTR:hypervisor_hostname", "OS-EXT-SRV-ATTR:instance_name")


def update_view(doc: dict) -> dict:
    """A :func:`server_document` as Nova answers a server update or rebuild (addresses without
    their type and MAC, too)."""
    view = {key: value for key, value in doc.items() if key not in _NOT_IN_UPDATE_VIEW}
    view["addresses"] = {network: [{"version": a["version"], "addr": a["addr"]} for a in entries]
                         for network, entries in doc["addresses"].items()}
    return view


_ENCODE = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
#: (row, base URL, admin?) -> a server document's JSON up to its addresses. Without a fault the
#: document is a pure function of these (any changed column makes a new key), and re-encoding a
#: thousand unchanged servers on every poll was half of GET /servers/detail. Rows hold only
#: scalars and text (DOCUMENT_COLUMNS casts the JSON columns), so they hash.
_HEADS: dict[tuple, str] = {}
_HEADS_MAX = 8192


def server_json(row, base: str, is_admin: bool, addresses: dict, fault: InstanceFault | None,
                groups: list[dict] | None = None, version: tuple[int, int] = (2, 1),
                tags: list[str] | None = None, flavors: dict[str, tuple[str, dict]] | None = None) -> str:
    """:func:`server_document` of a listing row as compact JSON (its "tags", "security_groups"
    and "addresses" last: they change without the row changing)."""
    with_tags = version >= microversion.TAGS
    if fault is not None:
        doc = server_document(row, base, is_admin, addresses, fault, groups=groups, version=version, tags=tags,
                              flavors=flavors)
        for name in ("tags", "security_groups", "addresses"):
            if name in doc:
                doc[name] = doc.pop(name)
        return _ENCODE(doc)
    # From 2.47 the head holds the flavor's name and extra specs, which change without the row.
    flavor = (flavors or {}).get(row.flavor_id) if version >= microversion.FLAVOR_EMBEDDED else None
    key = (tuple(row), base, is_admin, version, _ENCODE(flavor) if flavor else None)
    head = _HEADS.get(key)
    if head is None:
        doc = server_document(row, base, is_admin, addresses, None, version=version, flavors=flavors)
        del doc["addresses"], doc["security_groups"]
        doc.pop("tags", None)
        head = _ENCODE(doc)[:-1] + ","
        if len(_HEADS) >= _HEADS_MAX:
            _HEADS.clear()
        _HEADS[key] = head
    tail = ('"tags":' + _ENCODE(tags or []) + ",") if with_tags else ""
    return head + tail + '"security_groups":' + _ENCODE(groups or []) + ',"addresses":' + _ENCODE(addresses) + "}"
