"""``openstack server set --name / --property`` and ``server unset --property`` through the real
CLI against a running fabric-api: the changes are answered, shown and stored; bad values are
refused naming them; another project's server is not found; a locked server refuses its owner's
delete and changes until unlocked, and an admin's lock only an admin lifts; availability zones
list as the compute hosts' services say; usage counts the hours servers ran.

Uses the ``cloud`` fixture of test_openstack_clients (one fabric-api process for this module).
"""

from __future__ import annotations

import datetime

import pytest
import sqlalchemy as sa

from fabric.db.models import ComputeNode, Instance, Service
from fabric.db.types import utcnow
from tests.fixtures.api import add_user
from tests.fixtures.cli import openstack_env
from tests.functional.api.test_openstack_clients import PASSWORD, cloud  # noqa: F401 - the module's API process

pytestmark = pytest.mark.functional


def test_rename_and_properties_through_the_cli(cloud, osc, osc_fails, tmp_path):  # noqa: F811
    admin = cloud.admin_env("upd-admin")
    osc(admin, "flavor", "create", "--ram", "128", "--vcpus", "1", "--disk", "1", "upd.tiny")
    (tmp_path / "disk.raw").write_bytes(b"\0" * 512)
    osc(admin, "image", "create", "--file", str(tmp_path / "disk.raw"), "--disk-format", "raw",
        "--container-format", "bare", "--public", "upd-image")
    osc(admin, "network", "create", "upd-net")
    osc(admin, "subnet", "create", "--network", "upd-net", "--subnet-range", "10.34.0.0/24", "upd-sub")
    server = osc(admin, "server", "create", "--flavor", "upd.tiny", "--image", "upd-image", "--network", "upd-net",
                 "--property", "tier=web", "upd-vm")

    osc(admin, "server", "set", "--name", "upd-renamed", "--property", "owner=ops", "--property", "tier=db",
        server["id"], json_out=False)
    shown = osc(admin, "server", "show", server["id"])
    assert shown["name"] == "upd-renamed"
    assert shown["properties"] in ({"owner": "ops", "tier": "db"}, "owner='ops', tier='db'")
    osc(admin, "server", "unset", "--property", "tier", server["id"], json_out=False)
    with cloud.db.begin() as session:
        row = session.get(Instance, server["id"])
        assert (row.display_name, row.metadata_items) == ("upd-renamed", {"owner": "ops"})

    osc_fails(admin, 400, "255", "server", "set", "--property", f"k={'v' * 256}", server["id"])
    osc_fails(admin, 404, "Metadata item nosuch could not be found", "server", "unset", "--property", "nosuch",
              server["id"])
    # Another project's member finds nothing to change.
    add_user(cloud.db, "upd-other", "member", PASSWORD)
    other = openstack_env(cloud.auth_url, "upd-other-user", PASSWORD, "upd-other")
    osc_fails(other, 404, "", "server", "set", "--name", "stolen", server["id"])
    with cloud.db.begin() as session:
        assert session.scalar(sa.select(Instance.display_name).where(Instance.id == server["id"])) == "upd-renamed"


def test_lock_and_unlock_through_the_cli(cloud, osc, osc_fails, tmp_path):  # noqa: F811
    admin = cloud.admin_env("lock-admin")
    osc(admin, "flavor", "create", "--ram", "128", "--vcpus", "1", "--disk", "1", "lock.tiny")
    (tmp_path / "disk.raw").write_bytes(b"\0" * 512)
    osc(admin, "image", "create", "--file", str(tmp_path / "disk.raw"), "--disk-format", "raw",
        "--container-format", "bare", "--public", "lock-image")
    add_user(cloud.db, "lock-member", "member", PASSWORD)
    member = openstack_env(cloud.auth_url, "lock-member-user", PASSWORD, "lock-member")
    osc(member, "network", "create", "lock-net")
    osc(member, "subnet", "create", "--network", "lock-net", "--subnet-range", "10.35.0.0/24", "lock-sub")
    server = osc(member, "server", "create", "--flavor", "lock.tiny", "--image", "lock-image", "--network",
                 "lock-net", "lock-vm")

    osc(member, "server", "lock", server["id"], json_out=False)
    assert osc(member, "server", "show", server["id"])["locked"] is True
    osc_fails(member, 409, "is locked (by owner)", "server", "delete", server["id"])
    osc_fails(member, 409, "is locked (by owner)", "server", "set", "--property", "a=1", server["id"])
    osc(member, "server", "unlock", server["id"], json_out=False)
    assert osc(member, "server", "show", server["id"])["locked"] is False
    # The admin's lock: the member cannot lift it, the admin can.
    osc(admin, "server", "lock", server["id"], json_out=False)
    osc_fails(member, 403, "locked by an admin", "server", "unlock", server["id"])
    with cloud.db.begin() as session:
        row = session.get(Instance, server["id"])
        assert (row.locked, row.locked_by, row.deleted) == (True, "admin", False)
    osc(admin, "server", "unlock", server["id"], json_out=False)
    osc(member, "server", "delete", server["id"], json_out=False)
    with cloud.db.begin() as session:
        row = session.get(Instance, server["id"])
        assert row.deleted or row.task_state == "deleting"  # deleted here if never placed, else on its host


def test_availability_zone_list_through_the_cli(cloud, osc):  # noqa: F811
    with cloud.db.begin() as session:
        session.add(Service(host="cli-az-host", binary="fabric-compute", topic="compute", last_heartbeat=utcnow()))
        session.add(ComputeNode(host="cli-az-host", availability_zone="cli-zone"))
    admin = cloud.admin_env("az-admin")
    zones = {z["Zone Name"]: z["Zone Status"] for z in osc(admin, "availability", "zone", "list", "--compute")}
    assert zones["cli-zone"] == "available"
    long = osc(admin, "availability", "zone", "list", "--compute", "--long")
    mine = [z for z in long if z["Zone Name"] == "cli-zone"]
    assert [(z["Host Name"], z["Service Name"]) for z in mine] == [("cli-az-host", "fabric-compute")]
    assert mine[0]["Service Status"].startswith("enabled :-) "), mine  # active, up, then when it reported


def test_usage_through_the_cli(cloud, osc):  # noqa: F811
    admin = cloud.admin_env("usage-admin")
    project = osc(admin, "project", "show", "usage-admin")["id"]
    with cloud.db.begin() as session:
        session.add(Instance(project_id=project, user_id="u", display_name="usage-vm", vcpus=2, memory_mb=256,
                             disk_gb=3, vm_state="active", launched_at=datetime.datetime(2026, 11, 1, 6)))
    period = ["--start", "2026-11-01", "--end", "2026-11-02"]
    shown = osc(admin, "usage", "show", "--project", project, *period)
    assert [(s["name"], s["hours"]) for s in shown["Servers"]] == [("usage-vm", 18.0)]
    assert (float(shown["CPU Hours"]), float(shown["RAM MB-Hours"]),
            float(shown["Disk GB-Hours"])) == (36.0, 4608.0, 54.0)  # 18 h x 2 vCPUs, 256 MiB, 3 GiB
    listed = {row["Project"]: row for row in osc(admin, "usage", "list", *period)}
    assert float(listed[project]["CPU Hours"]) == 36.0
