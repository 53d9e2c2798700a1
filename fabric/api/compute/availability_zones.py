"""os-availability-zone (``openstack availability zone list --compute``): the zones of the
compute hosts, from the compute nodes and the services registry.

A zone is available while at least one compute service in it is up and enabled (as Nova
says). The plain listing is for everyone; ``/detail`` (admins) adds each zone's hosts and
their services, and the ``internal`` zone of the control services, as Nova's does.
"""

from __future__ import annotations

import falcon
import sqlalchemy as sa

from fabric.api import common
from fabric.api.compute.hosts import INTERNAL_ZONE, node_zones, service_state, zone_of
from fabric.db.models import Service


def _zones(session, down_after: float) -> dict[str, dict[str, list[tuple[Service, bool]]]]:
    """{zone: {host: [(service, up and enabled)]}}: compute hosts in their nodes' zones, the
    other services in the internal zone."""
    of_nodes = node_zones(session)
    zones: dict[str, dict[str, list[tuple[Service, bool]]]] = {}
    for service in session.scalars(sa.select(Service).order_by(Service.host, Service.binary)):
        zone = zone_of(service, of_nodes)
        usable = service_state(service, down_after) == "up" and not service.disabled
        zones.setdefault(zone, {}).setdefault(service.host, []).append((service, usable))
    return zones


def _available(hosts: dict[str, list[tuple[Service, bool]]]) -> bool:
    return any(usable for services in hosts.values() for _, usable in services)


class AvailabilityZones:
    def on_get(self, req, resp):
        deps = common.deps(req)
        with deps.db.begin() as session:
            zones = _zones(session, deps.settings.service.service_down_time)
        docs = [{"zoneName": name, "zoneState": {"available": _available(hosts)}, "hosts": None}
                for name, hosts in sorted(zones.items()) if name != INTERNAL_ZONE]
        common.respond(resp, {"availabilityZoneInfo": docs})

    def on_get_detail(self, req, resp):
        deps = common.deps(req)
        with deps.db.begin() as session:
            zones = _zones(session, deps.settings.service.service_down_time)
        docs = []
        for name, hosts in sorted(zones.items()):
            docs.append({"zoneName": name, "zoneState": {"available": _available(hosts)}, "hosts": {
                host: {service.binary: {"available": usable, "active": not service.disabled,
                                        "updated_at": common.isotime(service.last_heartbeat, micro=True)}
                       for service, usable in services}
                for host, services in hosts.items()}})
        common.respond(resp, {"availabilityZoneInfo": docs})


def register(app: falcon.App, prefix: str) -> None:
    zones = AvailabilityZones()
    app.add_route(f"{prefix}/os-availability-zone", zones)
    app.add_route(f"{prefix}/os-availability-zone/detail", zones, suffix="detail")
