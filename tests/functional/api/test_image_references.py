"""The image-reference hole, through the real `openstack` CLI against a running ``fabric-api``:
a tenant's image whose ``kernel_id``/``ramdisk_id`` is a path, an unknown id or another
project's private image is refused at ``image create --property``, ``image set --property``
and ``server create``, with a 400 that names the bad value, and nothing is written.

Uses the ``cloud`` fixture of test_openstack_clients (one fabric-api process for this module,
recording scheduler and compute RPC servers).
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from fabric.db.models import Image, Instance, QuotaUsage
from tests.fixtures.api import add_user
from tests.fixtures.cli import openstack_env
from tests.fixtures.rpc import wait_for
from tests.functional.api.test_openstack_clients import PASSWORD, cloud  # noqa: F401 - the module's API process

pytestmark = pytest.mark.functional


def _nothing_booted(cloud, project_id: str) -> None:  # noqa: F811
    """No server row, no quota in use and no scheduler cast for ``project_id``."""
    with cloud.db.begin() as session:
        assert session.scalars(sa.select(Instance.id).where(Instance.project_id == project_id)).all() == []
        usage = session.scalars(sa.select(QuotaUsage.in_use).where(QuotaUsage.project_id == project_id)).all()
        assert set(usage) <= {0}
    assert [kw for _, kw in cloud.scheduler.calls if kw.get("project_id") == project_id] == []


def test_bad_image_references_are_refused_through_the_cli(cloud, osc, osc_fails, tmp_path):  # noqa: F811
    admin = cloud.admin_env("imgref-admin")
    _, tenant_project = add_user(cloud.db, "imgref-tenant", "member", PASSWORD)
    add_user(cloud.db, "imgref-other", "member", PASSWORD)
    tenant = openstack_env(cloud.auth_url, "imgref-tenant-user", PASSWORD, "imgref-tenant")
    other = openstack_env(cloud.auth_url, "imgref-other-user", PASSWORD, "imgref-other")
    osc(admin, "flavor", "create", "--ram", "128", "--vcpus", "1", "--disk", "1", "imgref.tiny")
    (tmp_path / "vmlinuz").write_bytes(b"kernel bytes")
    (tmp_path / "initrd").write_bytes(b"initrd bytes")

    def upload(env, name, kind, *extra):
        path = tmp_path / ("vmlinuz" if kind == "aki" else "initrd")
        return osc(env, "image", "create", "--file", str(path), "--disk-format", kind, "--container-format", kind,
                   *extra, name)

    theirs_private = upload(other, "their-kernel", "aki", "--private")
    theirs_community = upload(other, "their-community-kernel", "aki", "--community")
    kernel = upload(tenant, "kernel", "aki")
    ramdisk = upload(tenant, "ramdisk", "ari")
    unknown = str(uuid.uuid4())
    not_an_id, not_visible = "is not an image id", f"names no image that project {tenant_project} may use"
    bad_values = {"../../etc/passwd": not_an_id, "/etc/passwd": not_an_id, unknown: not_visible,
                  theirs_private["id"]: not_visible}

    # image create --property: a 400 naming the value, and nothing made (osc_fails reads the HTTP
    # exchanges). --file always: without it the CLI would read image data from its standard input,
    # were the create ever accepted.
    (tmp_path / "ami").write_bytes(b"ami bytes")
    for prop in ("kernel_id", "ramdisk_id"):
        for value, why in bad_values.items():
            osc_fails(tenant, 400, f"property {prop} {value!r} {why}", "image", "create", "--file",
                      str(tmp_path / "ami"), "--disk-format", "ami", "--container-format", "ami",
                      "--property", f"kernel_id={kernel['id']}", "--property", f"{prop}={value}", "bad-ami")
    assert [i["Name"] for i in osc(tenant, "image", "list") if i["Name"] == "bad-ami"] == []

    ami = osc(tenant, "image", "create", "--file", str(tmp_path / "ami"), "--disk-format", "ami",
              "--container-format", "ami", "--property", f"kernel_id={kernel['id']}", "--property",
              f"ramdisk_id={ramdisk['id']}", "ami")
    assert ami["status"] == "active"

    # image set --property: refused with 400 naming the value; the image keeps its references.
    for prop in ("kernel_id", "ramdisk_id"):
        for value, why in bad_values.items():
            osc_fails(tenant, 400, f"property {prop} {value!r} {why}", "image", "set", "--property",
                      f"{prop}={value}", "ami")
    shown = osc(tenant, "image", "show", "ami")["properties"]
    assert (shown["kernel_id"], shown["ramdisk_id"]) == (kernel["id"], ramdisk["id"])

    def boot_refused(prop: str, value: str, why: str) -> None:
        osc_fails(tenant, 400, f"property {prop} {value!r} {why}", "server", "create", "--flavor", "imgref.tiny",
                  "--image", "ami", "vm")
        _nothing_booted(cloud, tenant_project)

    # server create: a path that reached the database past the API (a row written straight in).
    with cloud.db.begin() as session:
        row = session.get(Image, ami["id"])
        row.properties = dict(row.properties, kernel_id="../../etc/passwd")
    boot_refused("kernel_id", "../../etc/passwd", not_an_id)

    # An unknown id: the kernel was deleted after the image named it.
    doomed = upload(tenant, "doomed-kernel", "aki")
    osc(tenant, "image", "set", "--property", f"kernel_id={doomed['id']}", "ami", json_out=False)
    osc(tenant, "image", "delete", "doomed-kernel", json_out=False)
    boot_refused("kernel_id", doomed["id"], not_visible)

    # Another project's private image: its community kernel was made private after the image named it.
    osc(tenant, "image", "set", "--property", f"kernel_id={theirs_community['id']}", "ami", json_out=False)
    osc(other, "image", "set", "--private", "their-community-kernel", json_out=False)
    boot_refused("kernel_id", theirs_community["id"], not_visible)

    # With its own kernel again the same image boots: the refusals were the references' doing.
    osc(tenant, "image", "set", "--property", f"kernel_id={kernel['id']}", "ami", json_out=False)
    server = osc(tenant, "server", "create", "--flavor", "imgref.tiny", "--image", "ami", "--nic", "none", "vm")
    assert server["status"] == "BUILD"
    wait_for(lambda: cloud.calls_for(cloud.scheduler, server["id"]), timeout=10, what="the scheduler cast")
