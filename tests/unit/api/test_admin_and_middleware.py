"""fabric's admin endpoints, the request id, and error shapes per API."""

from __future__ import annotations

import logging

from fabric.db.models import Datacenter, Segment, Service, Tenant, TopologyHost
from fabric.db.types import utcnow


def test_admin_endpoints(api):
    with api.db.begin() as session:
        dc = Datacenter(name="dc1", prefix="10.0.0.0/8", host_bits=8, tenant_bits=4, segment_bits=4,
                        endpoint_bits=8)
        session.add(dc)
        session.flush()
        session.add(TopologyHost(datacenter_id=dc.id, name="host1", number=1, tunnel_address="192.0.2.1"))
        tenant = Tenant(datacenter_id=dc.id, project_id=api.admin.project_id, number=3)
        session.add(tenant)
        session.flush()
        session.add(Segment(tenant_id=tenant.id, name="web", number=2))
        session.add(Service(host="host1", binary="fabric-ipam", topic="ipam", last_heartbeat=utcnow()))
    admin = {"X-Auth-Token": api.admin.token}
    topology = api.app.get("/fabric/v1/topology", headers=admin).json["datacenters"]
    assert topology[0]["name"] == "dc1" and topology[0]["hosts"][0]["name"] == "host1"
    tenants = api.app.get("/fabric/v1/tenants", headers=admin).json["tenants"]
    assert tenants[0]["number"] == 3 and tenants[0]["segments"] == [{"name": "web", "number": 2}]
    services = api.app.get("/fabric/v1/services", headers=admin).json["services"]
    assert services[0]["binary"] == "fabric-ipam" and services[0]["state"] == "up"
    member = api.make_member()
    resp = api.app.get("/fabric/v1/topology", headers=member.headers, status=403)
    assert resp.json == {"code": 403, "title": "Forbidden",
                         "message": "Not authorized: reading the topology requires the admin role"}


def test_every_response_carries_a_request_id_that_the_log_lines_carry(api, caplog):
    from fabric import log
    caplog.set_level(logging.INFO, logger="fabric.api.access")
    log.setup("INFO")
    resp = api.app.get("/compute/v2.1/flavors", headers={"X-Auth-Token": api.admin.token})
    request_id = resp.headers["x-openstack-request-id"]
    assert request_id.startswith("req-") and resp.headers["x-compute-request-id"] == request_id
    access = [r for r in caplog.records if r.name == "fabric.api.access"]
    assert access and access[-1].request_id == request_id
    other = api.app.get("/", status=300).headers["x-openstack-request-id"]
    assert other != request_id


def test_unknown_paths_and_methods_use_the_api_error_shape(api):
    admin = {"X-Auth-Token": api.admin.token}
    assert api.app.get("/compute/v2.1/nothing", headers=admin, status=404).json["itemNotFound"]["code"] == 404
    assert api.app.get("/networking/v2.0/nothing", headers=admin, status=404).json["NeutronError"]
    resp = api.app.request("/compute/v2.1/flavors", method="PATCH", headers=admin, status=405)
    assert resp.json["badMethod"]["code"] == 405
