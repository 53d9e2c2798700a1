"""The policy table (fabric.api.policy) against the running API.

The table covers exactly the operations the app registers and an operation it lacks is
refused; the OpenAPI document carries each operation's rule; and the whole matrix answers as
the table says: every operation x caller (the admin; a member, a reader and a user with only
a custom role, of the project that owns the resources; a member of another project; no token)
x whose resources it names (the caller's own project and user, or another's). A cell the table
allows never answers 401 or 403 (nor 404 for a row the caller's project owns), a cell it
refuses answers 403, another project's row 404 where the table hides them, no token 401.

One world for the whole matrix (a SQLite database, resources made through the API), walked in
an order that keeps every refused and hidden cell meaningful: within an operation the refused
cells go first, and deletes come last, children before parents (a delete that already
happened would make a hidden cell's 404 prove nothing). A second world would double the
runtime: the cells of one operation share its rows on purpose.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import shutil
import uuid

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from fabric import config, servicegroup
from fabric.api import openapi, policy
from fabric.context import RequestContext
from fabric.db import Database
from fabric.db.models import Domain, Image, InstanceAction, Role, Volume, VolumeAttachment, VolumeSnapshot
from tests.fixtures.api import ApiHarness, Member, build_harness

C, IMG, N, VOL = "/compute/v2.1", "/image/v2", "/networking/v2.0", "/volume/v3"
#: Every compute request asks for the newest microversion (server tags need 2.26).
COMPUTE_VERSION = {"OpenStack-API-Version": "compute 2.26"}
ALLOWED = "allowed"

pytestmark = pytest.mark.xdist_group("policy_matrix")  # one world, walked in order


# --- the table covers the app ------------------------------------------------------------


@pytest.fixture
def bare_app(api):
    """The app object behind the ``api`` harness."""
    return api.app.app


def test_the_table_covers_every_route_the_app_registers(bare_app):
    assert bare_app.operations, "the app recorded no operation"
    missing = sorted(bare_app.operations - set(policy.TABLE))
    stale = sorted(set(policy.TABLE) - bare_app.operations)
    assert not missing, f"operations without a policy: {missing}"
    assert not stale, f"policies of operations the app does not answer: {stale}"


def test_an_operation_missing_from_the_table_is_refused_even_to_admins(api, bare_app):
    class Unlisted:
        def on_get(self, req, resp):
            resp.media = {"reached": True}

    bare_app.add_route("/fabric/v1/unlisted", Unlisted())
    refused = api.app.get("/fabric/v1/unlisted", headers={"X-Auth-Token": api.admin.token}, status=403)
    assert "GET /fabric/v1/unlisted has no entry in the policy table" in refused.json["message"]
    assert api.app.get("/fabric/v1/unlisted", status=403).json["code"] == 403  # nothing to authenticate for


def test_unanswered_methods_are_405_and_options_lists_methods_without_a_token(api):
    member = api.make_member()
    assert api.app.request("/v3/roles", method="PATCH", headers=member.headers, status=405)
    listed = api.app.request("/compute/v2.1/servers", method="OPTIONS", status=200)
    assert {"GET", "POST"} <= set(listed.headers["Allow"].replace(" ", "").split(","))


def test_the_openapi_document_states_each_operations_policy(api):
    document = api.app.get("/openapi.json").json
    documented = 0
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            found = policy.TABLE[(method.upper(), path)]
            assert op["x-fabric-policy"]["rule"] == found.rule.value
            assert op["x-fabric-policy"]["target"] == found.target.key
            assert found.describe() in op["description"]
            may_refuse = found.rule not in (policy.Rule.PUBLIC, policy.Rule.ANY) or found.target.other_status == 403
            assert ("403" in op["responses"]) == may_refuse, f"{method} {path}"
            assert (op["security"] == []) == (found.rule is policy.Rule.PUBLIC)
            documented += 1
    assert documented == len(openapi._OPERATIONS)
    servers = document["paths"]["/compute/v2.1/servers"]["post"]
    assert servers["x-fabric-policy"]["roles"] == ["admin", "member"]
    assert "member or admin role" in servers["description"]


#: Writes open to any token: each acts on the caller's own tokens, password, credentials or keypairs.
SELF_SERVICE = {("POST", "/v3/auth/tokens"), ("DELETE", "/v3/auth/tokens"), ("POST", "/v3/users/{user_id}/password"),
                ("POST", "/v3/users/{user_id}/application_credentials"),
                ("DELETE", "/v3/users/{user_id}/application_credentials/{cred_id}"),
                ("POST", "/v3/users/{user_id}/credentials/OS-EC2"),
                ("DELETE", "/v3/users/{user_id}/credentials/OS-EC2/{access}"),
                ("POST", "/compute/v2.1/os-keypairs"), ("DELETE", "/compute/v2.1/os-keypairs/{name}"),
                ("POST", "/v3/credentials"), ("PATCH", "/v3/credentials/{credential_id}"),
                ("DELETE", "/v3/credentials/{credential_id}")}


def test_readers_read_members_write_and_admins_do_the_rest():
    """The table's shape, as Keystone's default roles promise: a read never needs more than the
    reader role (or is the admin's), a write needs the member role (or is the admin's), but for
    the self-service writes on one's own things."""
    for (method, template), found in policy.TABLE.items():
        if method in ("GET", "HEAD"):
            assert found.rule is not policy.Rule.MEMBER, f"{method} {template} is a read that needs a member"
        elif (method, template) in SELF_SERVICE:
            assert found.rule in (policy.Rule.PUBLIC, policy.Rule.ANY)
            assert found.target in (policy.Target.NONE, policy.Target.USER, policy.Target.SELF)
        else:
            assert found.rule in (policy.Rule.MEMBER, policy.Rule.ADMIN), f"{method} {template} is a write " \
                                                                          f"for {found.rule.value}"
    assert policy.Rule.READER.roles == {"admin", "member", "reader"}
    assert policy.Rule.MEMBER.roles == {"admin", "member"} and policy.Rule.ADMIN.roles == {"admin"}


def test_the_reader_role_is_made_by_bootstrap(api):
    with api.db.begin() as session:
        names = set(session.scalars(sa.select(Role.name)))
    assert set(policy.ROLES) <= names


# --- the world the matrix acts on ----------------------------------------------------------


@dataclasses.dataclass
class Caller:
    """A token and what the table judges it by."""

    name: str
    member: Member | None
    roles: tuple[str, ...]
    project_name: str | None = None
    #: Sends no token (its member, if any, only names the user its requests are about).
    anonymous: bool = False

    @property
    def headers(self) -> dict:
        return {"X-Auth-Token": self.member.token} if self.member and not self.anonymous else {}

    @property
    def context(self) -> RequestContext:
        return RequestContext(user_id=self.member.user_id, project_id=self.member.project_id, roles=self.roles,
                              is_admin=policy.ADMIN_ROLE in self.roles)


@dataclasses.dataclass
class World:
    """Project ``alpha``'s resources (made by its member through the API), the callers, and
    spare or doomed rows for the operations that must not act on what the others need."""

    harness: ApiHarness
    callers: dict[str, Caller]
    ids: dict[str, str]
    counter: itertools.count = dataclasses.field(default_factory=lambda: itertools.count(1))

    @property
    def owner(self) -> Member:
        return self.callers["member"].member

    def fresh(self, caller: Caller) -> Caller:
        """A new caller like ``caller`` (a new user, for the anonymous one): for the cells that
        spend their own token or password."""
        member = self.harness.make_member(caller.project_name, role=(caller.roles or ("member",))[0])
        return dataclasses.replace(caller, member=member)

    def post(self, path: str, body, caller: str = "member", status: int | None = None) -> dict:
        headers = self.callers[caller].headers | COMPUTE_VERSION
        return self.harness.app.post_json(path, body, headers=headers, status=status or "2*").json


def _seed(harness: ApiHarness) -> World:
    admin = Caller("admin", harness.admin, ("admin", "member"), "admin")
    with harness.db.begin() as session:
        session.add_all([Role(name="observer"), Role(name="spare"), Role(name="doomed")])
    callers = {
        "member": Caller("member", harness.make_member("alpha"), ("member",), "alpha"),
        "reader": Caller("reader", harness.make_member("alpha", role="reader"), ("reader",), "alpha"),
        "norole": Caller("norole", harness.make_member("alpha", role="observer"), ("observer",), "alpha"),
        "other": Caller("other", harness.make_member("beta"), ("member",), "beta"),
        "admin": admin,
        "anonymous": Caller("anonymous", None, (), "alpha", anonymous=True),
    }
    world = World(harness, callers, {"alpha": callers["member"].member.project_id})
    ids, post = world.ids, world.post
    # The admin's: flavors, a public active image, an external network, catalogue rows.
    ids["flavor_id"] = post(f"{C}/flavors", {"flavor": {"name": "m1", "ram": 64, "vcpus": 1, "disk": 1}},
                            "admin")["flavor"]["id"]
    ids["doomed_flavor"] = post(f"{C}/flavors", {"flavor": {"name": "m2", "ram": 64, "vcpus": 1, "disk": 1}},
                                "admin")["flavor"]["id"]
    ids["public_image"] = post(f"{IMG}/images", {"name": "pub", "disk_format": "raw", "container_format": "bare",
                                               "visibility": "public"}, "admin")["id"]
    with harness.db.begin() as session:
        session.get(Image, ids["public_image"]).status = "active"
        session.get(Image, ids["public_image"]).size = 3
    ext = post(f"{N}/networks", {"network": {"name": "ext", "router:external": True}}, "admin")["network"]["id"]
    post(f"{N}/subnets", {"subnet": {"network_id": ext, "cidr": "203.0.113.0/24", "enable_dhcp": False}}, "admin")
    ids["external_network"] = ext
    ids["aggregate_id"] = str(post(f"{C}/os-aggregates", {"aggregate": {"name": "agg"}}, "admin")["aggregate"]["id"])
    ids["doomed_aggregate"] = str(post(f"{C}/os-aggregates", {"aggregate": {"name": "agg2"}}, "admin")
                                  ["aggregate"]["id"])
    ids["service_id"] = post("/v3/services", {"service": {"type": "matrix"}}, "admin")["service"]["id"]
    ids["doomed_service"] = post("/v3/services", {"service": {"type": "doomed"}}, "admin")["service"]["id"]
    endpoint = {"service_id": ids["service_id"], "interface": "public", "url": "http://matrix.test/"}
    ids["endpoint_id"] = post("/v3/endpoints", {"endpoint": endpoint}, "admin")["endpoint"]["id"]
    ids["doomed_endpoint"] = post("/v3/endpoints", {"endpoint": endpoint}, "admin")["endpoint"]["id"]
    ids["group_id"] = post("/v3/groups", {"group": {"name": "matrix"}}, "admin")["group"]["id"]
    ids["doomed_group"] = post("/v3/groups", {"group": {"name": "doomed"}}, "admin")["group"]["id"]
    harness.app.put(f"/v3/groups/{ids['group_id']}/users/{world.owner.user_id}", headers=admin.headers)
    ids["spare_domain"] = post("/v3/domains", {"domain": {"name": "spare"}}, "admin")["domain"]["id"]
    ids["doomed_domain"] = post("/v3/domains", {"domain": {"name": "doomed", "enabled": False}},
                                "admin")["domain"]["id"]
    ids["doomed_project"] = post("/v3/projects", {"project": {"name": "doomed"}}, "admin")["project"]["id"]
    ids["doomed_user"] = post("/v3/users", {"user": {"name": "doomed"}}, "admin")["user"]["id"]
    with harness.db.begin() as session:
        roles = dict(session.execute(sa.select(Role.name, Role.id)).all())
        assert session.get(Domain, ids["doomed_domain"]).enabled is False
    ids["role_id"], ids["doomed_role"] = roles["spare"], roles["doomed"]
    # Project alpha's, made by its member.
    net = post(f"{N}/networks", {"network": {"name": "net"}})["network"]["id"]
    ids["network_id"] = net
    ids["subnet_id"] = post(f"{N}/subnets", {"subnet": {"network_id": net, "cidr": "10.30.0.0/24"}})["subnet"]["id"]
    ids["port_id"] = post(f"{N}/ports", {"port": {"network_id": net}})["port"]["id"]
    ids["router_id"] = post(f"{N}/routers", {"router": {"name": "r"}})["router"]["id"]
    ids["security_group"] = post(f"{N}/security-groups", {"security_group": {"name": "sg"}})["security_group"]["id"]
    ids["rule_id"] = post(f"{N}/security-group-rules", {"security_group_rule": {
        "security_group_id": ids["security_group"], "direction": "ingress", "protocol": "tcp",
        "port_range_min": 22, "port_range_max": 22}})["security_group_rule"]["id"]
    ids["pool_id"] = post(f"{N}/subnetpools", {"subnetpool": {"name": "pool", "prefixes": ["10.128.0.0/16"]}}
                          )["subnetpool"]["id"]
    ids["floating_id"] = post(f"{N}/floatingips", {"floatingip": {"floating_network_id": ext}})["floatingip"]["id"]
    ids["image_id"] = post(f"{IMG}/images", {"name": "own", "disk_format": "raw", "container_format": "bare"})["id"]
    ids["server_group"] = post(f"{C}/os-server-groups", {"server_group": {"name": "g", "policies": ["affinity"]}}
                               )["server_group"]["id"]
    server = post(f"{C}/servers", {"server": {"name": "vm", "flavorRef": ids["flavor_id"],
                                              "imageRef": ids["public_image"], "networks": [{"uuid": net}],
                                              "metadata": {"k1": "v1"}}})["server"]["id"]
    ids["server_id"] = server
    harness.app.put(f"{C}/servers/{server}/tags/t1", headers=callers["member"].headers | COMPUTE_VERSION)
    with harness.db.begin() as session:
        ids["request_id"] = session.scalar(sa.select(InstanceAction.request_id)
                                           .where(InstanceAction.instance_id == server))
    # A volume (its host's worker is registered; the casts are recorded) and a snapshot of it.
    servicegroup.register(harness.db, host="matrix-volume", binary="fabric-volume", topic="volume", version="1")
    ids["volume_id"] = post(f"{VOL}/volumes", {"volume": {"size": 1, "metadata": {"k1": "v1"}}})["volume"]["id"]
    with harness.db.begin() as session:
        session.get(Volume, ids["volume_id"]).status = "available"
    ids["snapshot_id"] = post(f"{VOL}/snapshots", {"snapshot": {"volume_id": ids["volume_id"],
                                                                "metadata": {"k1": "v1"}}})["snapshot"]["id"]
    with harness.db.begin() as session:
        session.get(VolumeSnapshot, ids["snapshot_id"]).status = "available"
    # Another volume, attached to the server (Compute's os-volume_attachments/{volume_id} shows it).
    ids["attached_volume"] = post(f"{VOL}/volumes", {"volume": {"size": 1}})["volume"]["id"]
    with harness.db.begin() as session:
        session.get(Volume, ids["attached_volume"]).status = "in-use"
        session.add(VolumeAttachment(volume_id=ids["attached_volume"], instance_uuid=server, status="attached",
                                     device="/dev/vdb"))
    # Each caller's own keypair and credentials (its own side names those).
    for name, caller in callers.items():
        if not caller.anonymous:
            post(f"{C}/os-keypairs", {"keypair": {"name": "kp", "public_key": _PUBLIC_KEY}}, name)
            user = f"/v3/users/{caller.member.user_id}"
            ids[f"cred_id:{name}"] = post(f"{user}/application_credentials", {"application_credential": {
                "name": "ac"}}, name)["application_credential"]["id"]
            ids[f"access:{name}"] = post(f"{user}/credentials/OS-EC2", {"tenant_id": caller.member.project_id},
                                         name)["credential"]["access"]
    return world


_PUBLIC_KEY = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
    serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode("ascii")


@pytest.fixture(scope="module")
def world(_api_template, tmp_path_factory):
    """The matrix's world: the API over its own copy of the bootstrapped template database."""
    template, ids = _api_template
    workdir = tmp_path_factory.mktemp("policy-matrix")
    shutil.copyfile(template, workdir / "fabric.sqlite")
    database = Database(f"sqlite:///{workdir / 'fabric.sqlite'}")
    settings_ = config.Settings().replace(default={"data_dir": str(workdir / "data")},
                                          api={"public_url": "http://fabric.test", "token_ttl": 600})
    yield _seed(build_harness(database, settings_, ids))
    database.dispose()


# --- one request per cell ------------------------------------------------------------------

#: Path parameters an operation takes from a spare or doomed row instead of the usual one.
OVERRIDES: dict[tuple[str, str], dict[str, str]] = {
    ("DELETE", "/v3/users/{user_id}"): {"user_id": "doomed_user"},
    ("DELETE", "/v3/projects/{project_id}"): {"project_id": "doomed_project"},
    ("PATCH", "/v3/domains/{domain_id}"): {"domain_id": "spare_domain"},
    ("DELETE", "/v3/domains/{domain_id}"): {"domain_id": "doomed_domain"},
    ("DELETE", "/v3/roles/{role_id}"): {"role_id": "doomed_role"},
    ("DELETE", "/v3/groups/{group_id}"): {"group_id": "doomed_group"},
    ("DELETE", "/v3/services/{service_id}"): {"service_id": "doomed_service"},
    ("DELETE", "/v3/endpoints/{endpoint_id}"): {"endpoint_id": "doomed_endpoint"},
    ("DELETE", f"{C}/flavors/{{flavor_id}}"): {"flavor_id": "doomed_flavor"},
    ("DELETE", f"{C}/os-aggregates/{{aggregate_id}}"): {"aggregate_id": "doomed_aggregate"},
    ("GET", f"{C}/servers/{{server_id}}/os-volume_attachments/{{volume_id}}"): {"volume_id": "attached_volume"},
    ("DELETE", f"{C}/servers/{{server_id}}/os-volume_attachments/{{volume_id}}"): {"volume_id": "attached_volume"},
}
#: Operations that spend the caller's token or password: each cell gets a fresh caller.
SPENDING = {("POST", "/v3/users/{user_id}/password"), ("DELETE", "/v3/auth/tokens")}
#: Deletes in the order they may run: what a later one removes, an earlier one still needs.
DELETE_ORDER = ["/metadata/", "/os-extra_specs/", "/tags/", "/tags", "/application_credentials/", "/OS-EC2/", "/roles/",
                "/groups/{group_id}/users/", "/servers/", "/os-server-groups/", "/floatingips/",
                "/security-group-rules/", "/security-groups/", "/routers/", "/ports/", "/subnets/", "/networks/",
                "/subnetpools/", "/images/", "/os-keypairs/", "/snapshots/", "/volumes/"]


def _body(world: World, caller: Caller, side: str, method: str, template: str):
    """The request body of an operation: valid, so a hidden cell reaches its row's lookup."""
    ids, n = world.ids, next(world.counter)
    user = caller.member.user_id if caller.member and side == "own" else world.owner.user_id
    bodies = {
        ("POST", "/v3/auth/tokens"): {"auth": {"identity": {"methods": ["password"], "password": {
            "user": {"id": world.owner.user_id, "password": "pw"}}}}},
        ("POST", "/v3/users/{user_id}/password"): {"user": {"password": f"pw-{n}", "original_password": "pw"}},
        ("POST", "/v3/users/{user_id}/application_credentials"): {"application_credential": {"name": f"ac{n}"}},
        ("POST", "/v3/users/{user_id}/credentials/OS-EC2"): {"tenant_id": ids["alpha"] if user == world.owner.user_id
                                                             else caller.member.project_id},
        ("POST", "/v3/roles"): {"role": {"name": f"role{n}"}},
        ("POST", "/v3/domains"): {"domain": {"name": f"domain{n}"}},
        ("PATCH", "/v3/domains/{domain_id}"): {"domain": {"description": f"d{n}"}},
        ("POST", "/v3/services"): {"service": {"type": f"type{n}"}},
        ("PATCH", "/v3/services/{service_id}"): {"service": {"description": f"d{n}"}},
        ("POST", "/v3/endpoints"): {"endpoint": {"service_id": ids["service_id"], "interface": "internal",
                                                 "url": "http://matrix.test/"}},
        ("PATCH", "/v3/endpoints/{endpoint_id}"): {"endpoint": {"enabled": True}},
        ("POST", "/v3/regions"): {"region": {"description": f"d{n}"}},
        ("PUT", "/v3/regions/{region_id}"): {"region": {"description": f"d{n}"}},
        ("PATCH", "/v3/regions/{region_id}"): {"region": {"description": f"d{n}"}},
        ("POST", "/v3/projects"): {"project": {"name": f"project{n}"}},
        ("PATCH", "/v3/projects/{project_id}"): {"project": {"description": f"d{n}"}},
        ("POST", "/v3/users"): {"user": {"name": f"user{n}"}},
        ("PATCH", "/v3/users/{user_id}"): {"user": {"description": f"d{n}"}},
        ("POST", "/v3/groups"): {"group": {"name": f"group{n}"}},
        ("PATCH", "/v3/groups/{group_id}"): {"group": {"description": f"d{n}"}},
        ("POST", f"{C}/flavors"): {"flavor": {"name": f"flavor{n}", "ram": 64, "vcpus": 1, "disk": 1}},
        ("POST", f"{C}/flavors/{{flavor_id}}/os-extra_specs"): {"extra_specs": {"k1": "v1"}},
        ("PUT", f"{C}/flavors/{{flavor_id}}/os-extra_specs/{{key}}"): {"k1": "v1"},
        ("POST", f"{C}/os-keypairs"): {"keypair": {"name": f"kp{n}", "public_key": _PUBLIC_KEY}},
        ("PUT", f"{C}/os-quota-sets/{{project_id}}"): {"quota_set": {"instances": 20}},
        ("POST", f"{C}/servers"): {"server": {"name": f"vm{n}", "flavorRef": ids["flavor_id"],
                                              "imageRef": ids["public_image"],
                                              "networks": [{"uuid": ids["network_id"]}]}},
        ("PUT", f"{C}/servers/{{server_id}}"): {"server": {"name": f"vm{n}"}},
        ("POST", f"{C}/servers/{{server_id}}/action"): {"os-getConsoleOutput": {}},
        ("POST", f"{C}/servers/{{server_id}}/metadata"): {"metadata": {"k1": "v1"}},
        ("PUT", f"{C}/servers/{{server_id}}/metadata"): {"metadata": {"k1": "v1"}},
        ("PUT", f"{C}/servers/{{server_id}}/metadata/{{key}}"): {"meta": {"k1": "v1"}},
        ("PUT", f"{C}/servers/{{server_id}}/tags"): {"tags": ["t1"]},
        ("POST", f"{C}/os-server-groups"): {"server_group": {"name": f"g{n}", "policies": ["affinity"]}},
        ("POST", f"{C}/os-aggregates"): {"aggregate": {"name": f"agg{n}"}},
        ("PUT", f"{C}/os-aggregates/{{aggregate_id}}"): {"aggregate": {"name": f"agg{n}"}},
        ("POST", f"{C}/os-aggregates/{{aggregate_id}}/action"): {"set_metadata": {"metadata": {"k": "v"}}},
        ("PUT", f"{C}/os-services/enable"): {"host": "nohost", "binary": "fabric-compute"},
        ("PUT", f"{C}/os-services/disable"): {"host": "nohost", "binary": "fabric-compute"},
        ("PUT", f"{C}/os-services/disable-log-reason"): {"host": "nohost", "binary": "fabric-compute",
                                                         "disabled_reason": "matrix"},
        ("POST", f"{IMG}/images"): {"name": f"img{n}", "disk_format": "raw", "container_format": "bare"},
        ("PATCH", f"{IMG}/images/{{image_id}}"): [{"op": "replace", "path": "/name", "value": f"img{n}"}],
        ("POST", f"{N}/networks"): {"network": {"name": f"net{n}"}},
        ("PUT", f"{N}/networks/{{network_id}}"): {"network": {"name": f"net{n}"}},
        ("POST", f"{N}/subnets"): {"subnet": {"network_id": ids["network_id"], "cidr": f"10.31.{n % 250}.0/24"}},
        ("PUT", f"{N}/subnets/{{subnet_id}}"): {"subnet": {"name": f"sub{n}"}},
        ("POST", f"{N}/subnetpools"): {"subnetpool": {"name": f"pool{n}", "prefixes": [f"10.{100 + n % 100}.0.0/16"]}},
        ("PUT", f"{N}/subnetpools/{{pool_id}}"): {"subnetpool": {"name": f"pool{n}"}},
        ("POST", f"{N}/ports"): {"port": {"network_id": ids["network_id"]}},
        ("PUT", f"{N}/ports/{{port_id}}"): {"port": {"name": f"port{n}"}},
        ("POST", f"{N}/routers"): {"router": {"name": f"r{n}"}},
        ("PUT", f"{N}/routers/{{router_id}}"): {"router": {"name": f"r{n}"}},
        ("PUT", f"{N}/routers/{{router_id}}/add_router_interface"): {"subnet_id": ids["subnet_id"]},
        ("PUT", f"{N}/routers/{{router_id}}/remove_router_interface"): {"subnet_id": ids["subnet_id"]},
        ("POST", f"{N}/security-groups"): {"security_group": {"name": f"sg{n}"}},
        ("PUT", f"{N}/security-groups/{{group_id}}"): {"security_group": {"description": f"d{n}"}},
        ("POST", f"{N}/security-group-rules"): {"security_group_rule": {
            "security_group_id": ids["security_group"], "direction": "ingress", "protocol": "tcp",
            "port_range_min": 1000 + n, "port_range_max": 1000 + n}},
        ("POST", f"{N}/floatingips"): {"floatingip": {"floating_network_id": ids["external_network"]}},
        ("PUT", f"{N}/floatingips/{{floating_id}}"): {"floatingip": {"port_id": None}},
        ("PUT", f"{N}/quotas/{{project_id}}"): {"quota": {"network": 50}},
        ("POST", "/fabric/v1/topology/hosts"): {"host": {"name": "matrix-host"}},
        ("POST", f"{VOL}/volumes"): {"volume": {"size": 1}},
        ("PUT", f"{VOL}/volumes/{{volume_id}}"): {"volume": {"name": f"vol{n}"}},
        ("POST", f"{VOL}/volumes/{{volume_id}}/action"): {"os-set_bootable": {"bootable": False}},
        ("POST", f"{VOL}/volumes/{{volume_id}}/metadata"): {"metadata": {"k1": "v1"}},
        ("PUT", f"{VOL}/volumes/{{volume_id}}/metadata"): {"metadata": {"k1": "v1"}},
        ("PUT", f"{VOL}/volumes/{{volume_id}}/metadata/{{key}}"): {"meta": {"k1": "v1"}},
        ("PUT", f"{VOL}/os-quota-sets/{{project_id}}"): {"quota_set": {"volumes": 20}},
        ("POST", f"{VOL}/snapshots"): {"snapshot": {"volume_id": ids["volume_id"]}},
        ("PUT", f"{VOL}/snapshots/{{snapshot_id}}"): {"snapshot": {"name": f"snap{n}"}},
        ("POST", f"{VOL}/snapshots/{{snapshot_id}}/metadata"): {"metadata": {"k1": "v1"}},
        ("PUT", f"{VOL}/snapshots/{{snapshot_id}}/metadata"): {"metadata": {"k1": "v1"}},
    }
    return bodies.get((method, template))


def _path(world: World, caller: Caller, side: str, method: str, template: str) -> str:
    """``template`` with the ids a cell names: the caller's own user and project on the own side,
    project alpha's member and rows on the other (alpha's rows on both: they are the matrix's)."""
    ids, overrides = world.ids, OVERRIDES.get((method, template), {})
    mine = caller.member is not None and side == "own"

    def value(name: str) -> str:
        if name in overrides:
            return ids[overrides[name]]
        if name == "user_id":
            return caller.member.user_id if mine else world.owner.user_id
        if name == "project_id":
            return caller.member.project_id if mine else ids["alpha"]
        if name == "group_id":
            return ids["server_group" if "/os-server-groups/" in template else
                       "security_group" if "/security-groups/" in template else "group_id"]
        if name == "domain_id":
            return "default"
        if name == "name":
            return {"/os-keypairs/": "kp", "/topology/": "matrix-host", "/queues/": "compute",
                    "/schemas/": "image"}[next(k for k in ("/os-keypairs/", "/topology/", "/queues/", "/schemas/")
                                               if k in template)]
        if name in ("cred_id", "access"):
            return ids[f"{name}:{caller.name if mine else 'member'}"]
        fixed = {"key": "k1", "tag": "t1", "host_name": "matrix-host", "hypervisor_id": "1",
                 "region_id": "RegionOne"}
        # A parameter the world has no row for names nothing: allowed cells may answer 404.
        return fixed.get(name) or ids.get(name, "matrix-none")

    return re.sub(r"\{(\w+)\}", lambda m: value(m.group(1)), template)


def expected(found: policy.Policy, caller: Caller, side: str) -> str | int:
    """What the table says a cell answers: ALLOWED, 401, 403 or 404."""
    if found.rule is policy.Rule.PUBLIC:
        return ALLOWED
    if caller.anonymous:
        return 401
    if not found.rule.admits(caller.context):
        return 403
    is_admin = caller.context.is_admin
    if side == "other" and found.target.other_status is not None:
        if found.target is policy.Target.SELF or not is_admin:
            return found.target.other_status
    return ALLOWED


def _cells(world: World, found: policy.Policy) -> list[tuple[Caller, str]]:
    callers = world.callers
    cells = [(callers[name], "own") for name in ("member", "reader", "norole", "anonymous")]
    cells += [(callers["other"], "other"), (callers["admin"], "other")]
    if found.target in (policy.Target.PROJECT, policy.Target.USER, policy.Target.SELF):
        cells.append((callers["admin"], "own"))
    # Refusals first: an allowed delete would leave a later refusal nothing to refuse.
    return sorted(cells, key=lambda cell: expected(found, *cell) == ALLOWED)


def _order(operation: tuple[str, str]) -> tuple:
    method, template = operation
    if method != "DELETE":
        return (0, 0)
    rank = next((i for i, part in enumerate(DELETE_ORDER) if part in template), len(DELETE_ORDER))
    return (1, rank)


OPERATIONS = sorted(policy.TABLE, key=_order)


@pytest.mark.parametrize("operation", OPERATIONS, ids=[f"{m} {t}" for m, t in OPERATIONS])
def test_every_cell_answers_as_the_table_says(world, operation):
    method, template = operation
    found = policy.TABLE[operation]
    wrong = []
    for caller, side in _cells(world, found):
        if operation in SPENDING:  # each cell on a new user's own token and password
            caller, side = world.fresh(caller), "own"
        path = _path(world, caller, side, method, template)
        body = _body(world, caller, side, method, template)
        headers = caller.headers | COMPUTE_VERSION
        if template == "/v3/auth/tokens" and caller.member is not None and not caller.anonymous:
            headers["X-Subject-Token"] = caller.member.token
        if template.endswith("/file") and method == "PUT":
            headers["Content-Type"], raw = "application/octet-stream", b"abc"
        else:
            headers["Content-Type"], raw = "application/json", json.dumps(body).encode() if body is not None else b""
        response = world.harness.app.request(path, method=method, headers=headers, body=raw, expect_errors=True)
        want, got = expected(found, caller, side), response.status_int
        # After an allowed removal the next allowed caller finds nothing to remove: 404 is its answer.
        removes = method == "DELETE" or template.endswith("/remove_router_interface")
        own_row = found.target.other_status == 404 and not removes
        if want == ALLOWED:
            ok = got not in (401, 403) and not (own_row and got == 404)
        else:
            ok = got == want
        if not ok:
            wrong.append(f"{caller.name} ({side}) -> {got}, the table says {want}: {response.text[:200]}")
    assert not wrong, f"{method} {template} ({found.rule.value}, {found.target.key}):\n" + "\n".join(wrong)


def test_a_uuid_named_nowhere_is_not_found_whoever_asks(world):
    """The other half of hiding: a row that does not exist answers as another project's does."""
    missing = str(uuid.uuid4())
    for caller in ("member", "other"):
        headers = world.callers[caller].headers | COMPUTE_VERSION
        world.harness.app.get(f"{C}/servers/{missing}", headers=headers, status=404)
