"""Concurrent server creates beyond a project's quota, on PostgreSQL and MariaDB:
exactly the quota succeeds, every other request gets 403 with nova's body."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from fabric.api import quota
from fabric.db.models import Image, Instance

pytestmark = pytest.mark.functional

C = "/compute/v2.1"
QUOTA = 3
CALLERS = 10


def test_concurrent_creates_never_exceed_the_quota(server_api):
    api = server_api
    member = api.make_member()
    admin = {"X-Auth-Token": api.admin.token}
    flavor = api.app.post_json(f"{C}/flavors", {"flavor": {"name": "f", "ram": 64, "vcpus": 1}},
                               headers=admin).json["flavor"]
    with api.db.begin() as session:
        image = Image(name="i", owner=member.project_id, status="active", visibility="private", disk_format="raw",
                      properties={})
        session.add(image)
        session.flush()
        image_id = image.id
    api.app.put_json(f"{C}/os-quota-sets/{member.project_id}", {"quota_set": {"instances": QUOTA}}, headers=admin)

    start = threading.Barrier(CALLERS)
    results: list[tuple[int, dict]] = []

    def create(n: int) -> None:
        start.wait()
        resp = api.app.post_json(f"{C}/servers", {"server": {"name": f"vm{n}", "flavorRef": flavor["id"],
                                                             "imageRef": image_id}},
                                 headers=member.headers, expect_errors=True)
        results.append((resp.status_int, resp.json))

    threads = [threading.Thread(target=create, args=(n,)) for n in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    statuses = sorted(status for status, _ in results)
    assert statuses == [202] * QUOTA + [403] * (CALLERS - QUOTA), results
    for status, body in results:
        if status == 403:
            assert body["forbidden"]["code"] == 403
            assert body["forbidden"]["message"].startswith("Quota exceeded for instances")
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Instance)
                              .where(Instance.project_id == member.project_id)) == QUOTA
        assert quota.usages(session, member.project_id)["instances"] == QUOTA
    assert len(api.recorder.named("build_instances")) == QUOTA
