"""The topology picture's layout, and the admin API's queue endpoints where no broker is."""

from __future__ import annotations

from fabric.dashboard import topology

TOPOLOGY = {"datacenters": [{"id": 1, "name": "dc1", "prefix": "10.0.0.0/8", "host_bits": 4, "tenant_bits": 4,
                             "segment_bits": 4, "endpoint_bits": 12,
                             "hosts": [{"name": "h1", "number": 1}, {"name": "h2", "number": 2}]}]}
TENANTS = [{"id": 7, "datacenter_id": 1, "project_id": "p1", "number": 3,
            "segments": [{"name": "web", "number": 1}]}]
SERVERS = [{"name": "vm-a", "OS-EXT-SRV-ATTR:host": "h1", "addresses": {"lan": [{"addr": "10.19.49.5"}]}},
           {"name": "vm-b", "OS-EXT-SRV-ATTR:host": "l2host", "addresses": {}}]


def texts(picture) -> list[str]:
    return [t.text for t in picture.texts]


def test_layout_draws_the_romana_blocks_of_every_host():
    picture = topology.layout(TOPOLOGY, TENANTS, SERVERS, [{"hypervisor_hostname": "h1"}], {"p1": "acme"})
    shown = texts(picture)
    # host number 1 -> 10.16.0.0/12; tenant 3 on it -> 10.19.0.0/16; segment 1 -> 10.19.16.0/20
    assert "10.16.0.0/12" in shown and "10.32.0.0/12" in shown
    assert "tenant 3 acme  10.19.0.0/16" in shown
    assert "segment 1 web  10.19.16.0/20" in shown
    assert "vm-a (10.19.49.5)" in shown and "lan" in shown
    # The address bar is to scale: prefix 8 bits of 32 is a quarter of the drawn width.
    bar = {b.kind: b.w for b in picture.boxes if b.title.endswith("bits")}
    assert bar["prefix"] == round((topology.WIDTH - 2 * topology.GAP) * 8 / 32)
    # A host running servers outside every layout gets a column of its own.
    assert "Hosts outside any address layout" in shown and "l2host" in shown


def test_a_bad_layout_still_draws_its_hosts():
    broken = {"datacenters": [dict(TOPOLOGY["datacenters"][0], host_bits=9)]}
    shown = texts(topology.layout(broken, TENANTS, [], []))
    assert any(t.startswith("h1") for t in shown)


def test_queue_endpoints_name_the_missing_broker(live_api):
    # The API's transport is memory:// here: a clear 400 naming it, never a 5xx.
    answer = live_api.app.get("/fabric/v1/queues", headers=live_api.admin.headers, status=400)
    assert "queue commands need a RabbitMQ transport" in answer.json["message"]
    answer = live_api.app.post("/fabric/v1/queues/compute/requeue-dead", headers=live_api.admin.headers, status=400)
    assert "memory://" in answer.json["message"]
    live_api.app.post("/fabric/v1/queues/compute/requeue-dead?limit=-1", headers=live_api.admin.headers, status=400)


def test_queue_endpoints_are_for_admins(live_api):
    member = live_api.make_member()
    answer = live_api.app.get("/fabric/v1/queues", headers=member.headers, status=403)
    assert "listing queues requires the admin role" in answer.json["message"]
    live_api.app.post("/fabric/v1/queues/compute/requeue-dead", headers=member.headers, status=403)
