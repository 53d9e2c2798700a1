"""Security groups and rules through the real `openstack` CLI against a running ``fabric-api``:
create, list, show, delete; rules with ports, remote CIDRs and remote groups; bad values
refused with a 400 naming them and nothing written; the project's ``default`` group made on
first use; ``server create --security-group`` and ``port set --security-group``.

Uses the ``cloud`` fixture of test_openstack_clients (one fabric-api process for this module).
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fabric.db.models import Instance, Network, Port, PortSecurityGroup, SecurityGroupRule
from fabric.network import secgroups_db
from tests.fixtures.api import add_user
from tests.fixtures.cli import openstack_env
from tests.functional.api.test_openstack_clients import PASSWORD, cloud  # noqa: F401 - the module's API process

pytestmark = pytest.mark.functional


def test_groups_and_rules_through_the_cli(cloud, osc, osc_fails):  # noqa: F811
    _, project = add_user(cloud.db, "sg-tenant", "member", PASSWORD)
    add_user(cloud.db, "sg-other", "member", PASSWORD)
    env = openstack_env(cloud.auth_url, "sg-tenant-user", PASSWORD, "sg-tenant")
    other = openstack_env(cloud.auth_url, "sg-other-user", PASSWORD, "sg-other")

    # First use makes the project's default group: ingress from itself, all egress.
    listed = osc(env, "security", "group", "list")
    assert [g["Name"] for g in listed] == ["default"]
    default = osc(env, "security", "group", "show", "default")
    rules = default["rules"] if isinstance(default["rules"], list) else []
    assert default["project_id"] == project
    assert {(r["direction"], r["ethertype"], r["remote_group_id"]) for r in rules} == {
        ("ingress", "IPv4", default["id"]), ("ingress", "IPv6", default["id"]),
        ("egress", "IPv4", None), ("egress", "IPv6", None)}

    web = osc(env, "security", "group", "create", "--description", "web servers", "web")
    ssh = osc(env, "security", "group", "rule", "create", "--ingress", "--protocol", "tcp", "--dst-port", "22",
              "--remote-ip", "10.0.0.0/8", "web")
    assert (ssh["port_range_min"], ssh["port_range_max"], ssh["remote_ip_prefix"]) == (22, 22, "10.0.0.0/8")
    from_default = osc(env, "security", "group", "rule", "create", "--ingress", "--protocol", "icmp",
                       "--remote-group", "default", "web")
    assert from_default["remote_group_id"] == default["id"]
    rows = osc(env, "security", "group", "rule", "list", "web")
    assert {r["ID"] for r in rows} >= {ssh["id"], from_default["id"]}

    # Bad values: a 400 that names the value; nothing written.
    with cloud.db.begin() as session:
        before = session.scalar(sa.select(sa.func.count()).select_from(SecurityGroupRule))
    osc_fails(env, 400, "port_range_max 70000 is out of range", "security", "group", "rule", "create",
              "--ingress", "--protocol", "tcp", "--dst-port", "22:70000", "web")
    osc_fails(env, 400, "remote_ip_prefix '2001:db8::/32' is not an IPv4 network", "security", "group", "rule",
              "create", "--ingress", "--ethertype", "IPv4", "--remote-ip", "2001:db8::/32", "web")
    osc_fails(env, 400, "protocol 'carrier-pigeon'", "security", "group", "rule", "create", "--ingress",
              "--protocol", "carrier-pigeon", "web")
    osc_fails(env, 409, "already has this rule", "security", "group", "rule", "create", "--ingress",
              "--protocol", "tcp", "--dst-port", "22", "--remote-ip", "10.0.0.0/8", "web")
    with cloud.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(SecurityGroupRule)) == before

    # Another project sees none of it.
    osc_fails(other, 404, f"Security group {web['id']} could not be found", "security", "group", "show", web["id"])
    assert [g["Name"] for g in osc(other, "security", "group", "list")] == ["default"]

    # A port joins groups by name; a group in use cannot be deleted; the default group never.
    with cloud.db.begin() as session:
        network = Network(name="sg-net", project_id=project, network_type="vxlan", segmentation_id=3301)
        session.add(network)
        session.flush()
        port = Port(network_id=network.id, project_id=project, mac_address="02:00:00:00:33:01")
        session.add(port)
        session.flush()
        port_id = port.id
    osc(env, "port", "set", "--security-group", "web", port_id, json_out=False)
    assert osc(env, "port", "show", port_id)["security_group_ids"] == [web["id"]]
    osc_fails(env, 409, f"security group {web['id']} is in use by 1 port(s)", "security", "group", "delete", "web")
    osc_fails(env, 404, "Security group nope could not be found", "port", "set", "--security-group", "nope",
              port_id)
    osc(env, "port", "set", "--no-security-group", port_id, json_out=False)
    with cloud.db.begin() as session:
        assert session.scalars(sa.select(PortSecurityGroup).where(PortSecurityGroup.port_id == port_id)).all() == []
    osc_fails(env, 409, "is the project's default group", "security", "group", "delete", "default")

    osc(env, "security", "group", "rule", "delete", ssh["id"], json_out=False)
    osc(env, "security", "group", "delete", "web", json_out=False)
    assert [g["Name"] for g in osc(env, "security", "group", "list")] == ["default"]


def test_server_create_security_group_reaches_the_ports_request(cloud, osc, osc_fails, tmp_path):  # noqa: F811
    admin = cloud.admin_env("sg-admin")
    osc(admin, "flavor", "create", "--ram", "128", "--vcpus", "1", "--disk", "1", "sg.tiny")
    (tmp_path / "disk.raw").write_bytes(b"\0" * 512)
    # --file always: without it the CLI reads image data from its standard input.
    osc(admin, "image", "create", "--file", str(tmp_path / "disk.raw"), "--disk-format", "raw",
        "--container-format", "bare", "--public", "sg-image")
    osc(admin, "network", "create", "sg-srv-net")
    osc(admin, "subnet", "create", "--network", "sg-srv-net", "--subnet-range", "10.33.0.0/24", "sg-srv-sub")
    db_group = osc(admin, "security", "group", "create", "db")

    osc_fails(admin, 404, "Security group missing could not be found", "server", "create", "--flavor", "sg.tiny",
              "--image", "sg-image", "--network", "sg-srv-net", "--security-group", "missing", "sg-vm-bad")
    with cloud.db.begin() as session:
        assert session.scalars(sa.select(Instance).where(Instance.display_name == "sg-vm-bad")).all() == []

    server = osc(admin, "server", "create", "--flavor", "sg.tiny", "--image", "sg-image", "--network", "sg-srv-net",
                 "--security-group", "db", "sg-vm")
    with cloud.db.begin() as session:
        row = session.get(Instance, server["id"])
        assert row.requested_networks[0]["security_groups"] == [db_group["id"]]

    # What compute does with that request when it makes the port: the port starts in those groups.
    with cloud.db.begin() as session:
        network_id = row.requested_networks[0]["network_id"]
        port = Port(network_id=network_id, project_id=row.project_id, mac_address="02:00:00:00:33:02")
        session.add(port)
        session.flush()
        port_id = port.id
    secgroups_db.bind_port_groups(cloud.db, port_id, row.project_id, row.requested_networks[0]["security_groups"])
    secgroups_db.bind_port_groups(cloud.db, port_id, row.project_id, None)  # redelivered: unchanged
    with cloud.db.begin() as session:
        assert session.scalars(sa.select(PortSecurityGroup.security_group_id)
                               .where(PortSecurityGroup.port_id == port_id)).all() == [db_group["id"]]

    # The server's ports are its groups: shown by the server, changed by add/remove security group.
    with cloud.db.begin() as session:
        session.execute(sa.update(Port).where(Port.id == port_id).values(device_id=server["id"]))
    shown = osc(admin, "server", "show", "sg-vm")
    assert shown["security_groups"] == [{"name": "db"}]
    osc(admin, "server", "add", "security", "group", "sg-vm", "default", json_out=False)
    assert osc(admin, "server", "show", "sg-vm")["security_groups"] == [{"name": "db"}, {"name": "default"}]
    osc_fails(admin, 400, "already associated", "server", "add", "security", "group", "sg-vm", "default")
    osc(admin, "server", "remove", "security", "group", "sg-vm", "db", json_out=False)
    assert osc(admin, "server", "show", "sg-vm")["security_groups"] == [{"name": "default"}]
    osc_fails(admin, 400, "not associated", "server", "remove", "security", "group", "sg-vm", "db")
    osc_fails(admin, 404, "nosuch could not be found", "server", "add", "security", "group", "sg-vm", "nosuch")
    with cloud.db.begin() as session:
        assert [g for g in session.scalars(sa.select(PortSecurityGroup.security_group_id)
                                           .where(PortSecurityGroup.port_id == port_id))] == [
            secgroups_db.ensure_default_group(cloud.db, row.project_id)]
