"""What POST /servers costs the database, and the promises it keeps while costing less.

A create is the token check (one read in autocommit) plus one transaction (checks, security groups, quota, rows and
the scheduler's cast); a create refused at any step leaves nothing behind, the project's
``default`` security group included; first creates racing in a new project share one
default group; a flavor the process knows is not read again, yet one deleted is refused at
once and one changed is used as it now is (tools/bench/post_cost.py measures the cost)."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from fabric.api.compute.flavors import KnownFlavors
from fabric.context import RequestContext
from fabric.db.models import Flavor, Instance, InstanceAction, Network, OutboxCast, QuotaUsage, SecurityGroup
from fabric.network import secgroups_db
from tests.fixtures import sql_log
from tests.unit.api.test_compute import C, admin_h, make_flavor, make_image

#: Statements of a create once the project's usage rows and default group exist and the
#: flavor is known: the token check's generation read; the image, network and default group
#: reads; the quota's guarded UPDATE (returning what it took: no read before it); the server
#: row, its action and its outbox cast.
STATEMENTS_PER_CREATE = 8


class SqlLog(sql_log.SqlLog):
    """The statements (each by its first four words) and transactions ``db`` runs from now on."""

    @property
    def statements(self) -> list[str]:
        # The outbox deletes confirmed casts later, many at once, off the request's path.
        return [" ".join(s.split()[:4]) for s in self.sent if not s.startswith("DELETE FROM outbox")]


def own_network(api, project_id: str, segment: int = 4321) -> str:
    with api.db.begin() as session:
        network = Network(name="n", project_id=project_id, network_type="vxlan", segmentation_id=segment)
        session.add(network)
        session.flush()
        return network.id


def create(api, member, flavor, image, network=None, status=202, **extra):
    server = {"name": "vm", "flavorRef": flavor["id"], "imageRef": image, **extra}
    if network:
        server["networks"] = [{"uuid": network}]
    return api.app.post_json(f"{C}/servers", {"server": server}, headers=member.headers, status=status)


def test_a_create_is_the_token_check_outside_any_transaction_and_one_transaction_of_eight_statements(api):
    member = api.make_member()
    flavor, image = make_flavor(api), make_image(api, member.project_id)
    network = own_network(api, member.project_id)
    create(api, member, flavor, image, network)  # the project's usage rows and default group are made
    log = SqlLog(api.db)
    server_id = create(api, member, flavor, image, network).json["server"]["id"]
    assert log.transactions == 1, log.statements
    assert len(log.statements) <= STATEMENTS_PER_CREATE, log.statements
    assert log.statements[0].startswith("SELECT identity_generation"), log.statements
    with api.db.begin() as session:
        row = session.get(Instance, server_id)
        default = session.scalar(sa.select(SecurityGroup.id).where(SecurityGroup.default_for == member.project_id))
        assert row.requested_networks[0]["security_groups"] == [default]
        assert session.scalar(sa.select(InstanceAction.action).where(InstanceAction.instance_id == server_id)) \
            == "create"
    assert api.recorder.named("build_instances")[-1]["instance_ids"] == [server_id]


def test_a_multiple_create_writes_each_server_and_action_in_the_same_statements(api):
    member = api.make_member()
    flavor, image = make_flavor(api, vcpus=2, ram=256), make_image(api, member.project_id)
    create(api, member, flavor, image)
    log = SqlLog(api.db)
    create(api, member, flavor, image, min_count=3, max_count=3)
    assert log.transactions == 1, log.statements
    assert len(log.statements) <= STATEMENTS_PER_CREATE - 1, log.statements  # no network to read
    with api.db.begin() as session:
        names = sorted(session.scalars(sa.select(Instance.display_name)))
        usage = dict(session.execute(sa.select(QuotaUsage.resource, QuotaUsage.in_use)
                                     .where(QuotaUsage.project_id == member.project_id)).all())
        assert session.scalar(sa.select(sa.func.count()).select_from(InstanceAction)) == 4
    assert names == ["vm", "vm-1", "vm-2", "vm-3"]
    assert usage == {"instances": 4, "cores": 8, "ram": 1024}


def test_a_create_refused_by_its_quota_leaves_no_row_no_cast_and_no_default_group(server_api):
    api = server_api
    member = api.make_member()
    flavor, image = make_flavor(api), make_image(api, member.project_id)
    network = own_network(api, member.project_id)
    api.app.put_json(f"{C}/os-quota-sets/{member.project_id}", {"quota_set": {"instances": 0}},
                     headers=admin_h(api))
    refused = create(api, member, flavor, image, network, status=403)
    assert refused.json["forbidden"]["message"].startswith("Quota exceeded for instances")
    with api.db.begin() as session:
        # The default group the server's ports would have started in went with the refusal.
        assert session.scalars(sa.select(SecurityGroup.id)
                               .where(SecurityGroup.project_id == member.project_id)).all() == []
        assert session.scalar(sa.select(sa.func.count()).select_from(Instance)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(OutboxCast)) == 0
        assert set(session.scalars(sa.select(QuotaUsage.in_use)
                                   .where(QuotaUsage.project_id == member.project_id))) == {0}
    assert api.recorder.named("build_instances") == []
    api.app.put_json(f"{C}/os-quota-sets/{member.project_id}", {"quota_set": {"instances": 1}},
                     headers=admin_h(api))
    server_id = create(api, member, flavor, image, network).json["server"]["id"]
    with api.db.begin() as session:
        default = session.scalars(sa.select(SecurityGroup.id).where(SecurityGroup.default_for == member.project_id))
        assert session.get(Instance, server_id).requested_networks[0]["security_groups"] == default.all()


def test_first_creates_racing_in_a_new_project_share_one_default_group(server_api):
    api = server_api
    member = api.make_member()
    flavor, image = make_flavor(api), make_image(api, member.project_id)
    network = own_network(api, member.project_id)
    callers = 6
    start = threading.Barrier(callers)
    statuses: list[int] = []

    def post() -> None:
        start.wait()
        statuses.append(create(api, member, flavor, image, network, status="*").status_int)

    threads = [threading.Thread(target=post) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [202] * callers
    with api.db.begin() as session:
        groups = session.scalars(sa.select(SecurityGroup.id).where(SecurityGroup.project_id == member.project_id))
        groups = groups.all()
        chosen = {row[0]["security_groups"][0] for row in session.scalars(sa.select(Instance.requested_networks))}
    assert len(groups) == 1 and chosen == set(groups)


@pytest.fixture
def two_groups(sqlite_db):
    """A project with a group named "web" and a group whose name is the other's id."""
    with sqlite_db.begin() as session:
        web = SecurityGroup(project_id="p", name="web", description="")
        session.add(web)
        session.flush()
        session.add(SecurityGroup(project_id="p", name=web.id, description=""))
        session.add(SecurityGroup(project_id="other", name="web", description=""))
        return web.id


def test_a_group_is_found_by_id_before_name_in_one_statement_each(sqlite_db, two_groups):
    log = SqlLog(sqlite_db)
    with sqlite_db.begin() as session:
        assert secgroups_db.resolve_groups(session, "p", [two_groups, "web"]) == [two_groups]
    assert len(log.statements) == 2, log.statements
    with pytest.raises(Exception) as err, sqlite_db.begin() as session:
        secgroups_db.resolve_groups(session, "other", [two_groups])  # another project's id is unknown here
    assert two_groups in str(err.value)


def usage_of(api, project_id: str) -> dict:
    with api.db.begin() as session:
        return dict(session.execute(sa.select(QuotaUsage.resource, QuotaUsage.in_use)
                                    .where(QuotaUsage.project_id == project_id)).all())


def test_a_known_flavor_is_not_read_again_yet_one_deleted_elsewhere_is_refused_at_once(api):
    member = api.make_member()
    flavor, image = make_flavor(api), make_image(api, member.project_id)
    create(api, member, flavor, image)
    log = SqlLog(api.db)
    create(api, member, flavor, image)
    assert not [s for s in log.statements if "flavors" in s], log.statements
    # Another API process deletes it: this one's knowledge is stale, the server row's key is not.
    with api.db.begin() as session:
        session.execute(sa.delete(Flavor).where(Flavor.id == flavor["id"]))
    refused = create(api, member, flavor, image, status=404)
    assert refused.json["itemNotFound"]["message"] == f"Flavor {flavor['id']} could not be found."
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Instance)) == 2
    assert usage_of(api, member.project_id) == {"instances": 2, "cores": 2, "ram": 1024}
    assert len(api.recorder.named("build_instances")) == 2


def test_a_flavor_created_again_under_its_id_through_this_process_is_used_as_it_now_is(api):
    member = api.make_member()
    image = make_image(api, member.project_id)
    admin = admin_h(api)
    body = {"flavor": {"name": "f", "id": "f-1", "ram": 512, "vcpus": 1, "disk": 1}}
    api.app.post_json(f"{C}/flavors", body, headers=admin)
    create(api, member, {"id": "f-1"}, image)
    api.app.delete(f"{C}/flavors/f-1", headers=admin, status=202)
    create(api, member, {"id": "f-1"}, image, status=404)
    body["flavor"] |= {"ram": 1024, "vcpus": 2}
    api.app.post_json(f"{C}/flavors", body, headers=admin)
    server_id = create(api, member, {"id": "f-1"}, image).json["server"]["id"]
    with api.db.begin() as session:
        row = session.get(Instance, server_id)
        assert (row.memory_mb, row.vcpus) == (1024, 2)
    assert api.recorder.named("build_instances")[-1]["request_spec"]["flavor"]["memory_mb"] == 1024
    assert usage_of(api, member.project_id) == {"instances": 2, "cores": 3, "ram": 1536}


def test_a_private_flavor_known_from_an_admins_create_stays_invisible_to_members(api):
    member = api.make_member()
    image = make_image(api, member.project_id, visibility="public")
    admin = admin_h(api)
    api.app.post_json(f"{C}/flavors", {"flavor": {"name": "p", "id": "private-1", "ram": 64, "vcpus": 1,
                                                  "os-flavor-access:is_public": False}}, headers=admin)
    api.app.post_json(f"{C}/servers", {"server": {"name": "a", "flavorRef": "private-1", "imageRef": image}},
                      headers=admin, status=202)
    refused = create(api, member, {"id": "private-1"}, image, status=404)
    assert "Flavor private-1" in refused.json["itemNotFound"]["message"]


def test_known_flavors_trust_what_they_read_for_their_time_then_read_again(sqlite_db):
    with sqlite_db.begin() as session:
        session.add(Flavor(id="f", name="f", vcpus=1, memory_mb=512, disk_gb=1))
    now = [100.0]
    known = KnownFlavors(seconds=10, clock=lambda: now[0])
    context = RequestContext(user_id="u", project_id="p", roles=("member",))
    with sqlite_db.begin() as session:
        assert known.find(session, context, "http://x/compute/v2.1/flavors/f").memory_mb == 512
    with sqlite_db.begin() as session:  # changed by another process (deleted and created again)
        session.execute(sa.update(Flavor).values(memory_mb=2048))
    log = SqlLog(sqlite_db)
    with sqlite_db.begin() as session:
        assert known.find(session, context, "f").memory_mb == 512
    assert log.statements == []
    now[0] += 10
    with sqlite_db.begin() as session:
        assert known.find(session, context, "f").memory_mb == 2048
    known.forget("f")
    with sqlite_db.begin() as session:
        session.execute(sa.delete(Flavor))
    with pytest.raises(Exception, match="Flavor f"), sqlite_db.begin() as session:
        known.find(session, context, "f")


def test_a_create_names_its_own_or_a_shared_network_never_a_strangers_private_one(api):
    member, stranger = api.make_member(), api.make_member()
    flavor, image = make_flavor(api), make_image(api, member.project_id)
    private = own_network(api, stranger.project_id)
    shared = own_network(api, stranger.project_id, segment=4322)
    with api.db.begin() as session:
        session.get(Network, shared).shared = True
    refused = create(api, member, flavor, image, private, status=404)
    assert private in refused.json["itemNotFound"]["message"]
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Instance)) == 0
    server_id = create(api, member, flavor, image, shared).json["server"]["id"]
    with api.db.begin() as session:
        assert session.get(Instance, server_id).requested_networks[0]["network_id"] == shared
