"""Compute's /servers/{id}/ips (what tempest's volume-attach tests read before they attach): the
server's addresses by network, each only its version and address, as Nova's ips view."""

from __future__ import annotations

import json

from fabric.db.models import Instance
from tests.unit.api.test_volume_attachments import C, server  # noqa: F401 (the fixture)


def test_ips_lists_the_servers_addresses_by_network_as_nova(api, server):  # noqa: F811
    member, server_id = server
    with api.db.begin() as session:
        session.get(Instance, server_id).network_info = json.dumps([
            {"network_id": "net-a", "mac": "fa:16:3e:00:00:01", "fixed_ips": [{"address": "10.9.0.5"}]}])
    shown = api.app.get(f"{C}/servers/{server_id}", headers=member.headers).json["server"]["addresses"]
    ips = api.app.get(f"{C}/servers/{server_id}/ips", headers=member.headers).json
    assert ips == {"addresses": {label: [{"version": a["version"], "addr": a["addr"]} for a in found]
                                 for label, found in shown.items()}}
    assert ips["addresses"] == {"net-a": [{"version": 4, "addr": "10.9.0.5"}]}


def test_ips_of_another_projects_server_is_404(api, server):  # noqa: F811
    _, server_id = server
    stranger = api.make_member()
    api.app.get(f"{C}/servers/{server_id}/ips", headers=stranger.headers, status=404)
