"""Identity behaviour Keystone's clients (tempest's identity tests among them) count on:
a user validating any of their own tokens, ``/v3/auth/domains`` and ``/v3/auth/catalog``,
a password change proved by the original password alone (counted towards the lock-out),
regions made, nested, changed and deleted, endpoints making the region they name, users'
extra attributes, and booleans that must be JSON booleans."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from fabric.db.models import RoleGrant
from tests.fixtures.api import build_harness, password_auth
from tests.unit.api.test_identity_admin import _admin, _project, _role_id, _token, _user


def _member(api, name: str) -> tuple[str, str, str]:
    user, project = _user(api, name), _project(api, f"{name}s")
    api.app.put(f"/v3/projects/{project}/users/{user}/roles/{_role_id(api, 'member')}", headers=_admin(api))
    return user, project, _token(api, name, "pw-123456", f"{name}s")


def test_a_user_validates_any_of_their_own_tokens_but_not_anothers(api):
    _, _, token = _member(api, "erin")
    unscoped = _token(api, "erin", "pw-123456", None)
    shown = api.app.get("/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": unscoped}).json
    assert shown["token"]["user"]["name"] == "erin" and "project" not in shown["token"]
    api.app.head("/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": unscoped}, status=200)
    _, _, other = _member(api, "frank")
    refused = api.app.get("/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": other},
                          expect_errors=True)
    assert refused.status_int == 403
    # Not even whether a token exists is told to someone who may not check it.
    unknown = api.app.get("/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": "nope"},
                          expect_errors=True)
    assert unknown.status_int == 403
    api.app.delete("/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": unscoped}, status=204)
    api.app.get("/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": unscoped}, status=404)


def test_auth_domains_and_catalog(api):
    user, _, token = _member(api, "gina")
    domain = api.app.post_json("/v3/domains", {"domain": {"name": "gdom"}}, headers=_admin(api)).json["domain"]["id"]
    api.app.post_json("/v3/domains", {"domain": {"name": "other"}}, headers=_admin(api))
    assert api.app.get("/v3/auth/domains", headers={"X-Auth-Token": token}).json["domains"] == []
    api.app.put(f"/v3/domains/{domain}/users/{user}/roles/{_role_id(api, 'member')}", headers=_admin(api))
    assert [d["name"] for d in api.app.get("/v3/auth/domains", headers={"X-Auth-Token": token}).json["domains"]] == [
        "gdom"]
    catalog = api.app.get("/v3/auth/catalog", headers={"X-Auth-Token": token}).json["catalog"]
    assert {"identity", "compute", "network"} <= {entry["type"] for entry in catalog}
    unscoped = _token(api, "gina", "pw-123456", None)
    refused = api.app.get("/v3/auth/catalog", headers={"X-Auth-Token": unscoped}, expect_errors=True)
    assert refused.status_int == 403 and "unscoped" in refused.json["error"]["message"]


def test_a_password_change_needs_only_the_original_password_which_counts_towards_the_lockout(
        api_settings, sqlite_db):
    api = build_harness(sqlite_db, api_settings.replace(security_compliance={"lockout_failure_attempts": 2,
                                                                             "lockout_duration": 600}))
    user = _user(api, "hank", "old-pw-1")
    change = {"user": {"password": "new-pw-1", "original_password": "old-pw-1"}}
    api.app.post_json(f"/v3/users/{user}/password", change, status=204)  # no token at all
    _token(api, "hank", "new-pw-1", None)
    wrong = {"user": {"password": "x-pw-1", "original_password": "guess"}}
    for _ in range(2):
        refused = api.app.post_json(f"/v3/users/{user}/password", wrong, expect_errors=True)
        assert refused.status_int == 401
    # Two wrong originals locked the account: the right password no longer signs in.
    locked = api.app.post_json("/v3/auth/tokens", password_auth("hank", "new-pw-1", None), expect_errors=True)
    assert locked.status_int == 401 and "locked" in locked.json["error"]["message"]
    unknown = api.app.post_json("/v3/users/nobody/password", change, expect_errors=True)
    assert unknown.status_int == 401  # an unknown user reads like a wrong password


def test_regions_are_made_nested_changed_and_deleted(api):
    admin = _admin(api)
    parent = api.app.post_json("/v3/regions", {"region": {"description": "top"}}, headers=admin,
                               status=201).json["region"]
    child = api.app.put_json("/v3/regions/r-child", {"region": {"description": "c", "parent_region_id": parent["id"]}},
                             headers=admin, status=201).json["region"]
    assert (child["id"], child["parent_region_id"]) == ("r-child", parent["id"])
    api.app.put_json("/v3/regions/r-child", {"region": {}}, headers=admin, status=409)
    listed = api.app.get(f"/v3/regions?parent_region_id={parent['id']}", headers=admin).json["regions"]
    assert [r["id"] for r in listed] == ["r-child"]
    # A cycle is refused; a missing parent is refused; both name the value.
    cycle = api.app.patch_json(f"/v3/regions/{parent['id']}", {"region": {"parent_region_id": "r-child"}},
                               headers=admin, expect_errors=True)
    assert cycle.status_int == 400 and "r-child" in cycle.json["error"]["message"]
    missing = api.app.patch_json("/v3/regions/r-child", {"region": {"parent_region_id": "nowhere"}}, headers=admin,
                                 expect_errors=True)
    assert missing.status_int == 400 and "nowhere" in missing.json["error"]["message"]
    # The configured region has no row until it is changed; then it can be a parent.
    changed = api.app.patch_json("/v3/regions/RegionOne", {"region": {"description": "home"}}, headers=admin).json
    assert changed["region"]["description"] == "home"
    # Deleting needs no children and no endpoints.
    busy = api.app.delete(f"/v3/regions/{parent['id']}", headers=admin, expect_errors=True)
    assert busy.status_int == 409 and "r-child" in busy.json["error"]["message"]
    api.app.delete("/v3/regions/r-child", headers=admin, status=204)
    api.app.delete(f"/v3/regions/{parent['id']}", headers=admin, status=204)
    api.app.get("/v3/regions/r-child", headers=admin, status=404)
    member = _member(api, "ivy")[2]
    api.app.post_json("/v3/regions", {"region": {}}, headers={"X-Auth-Token": member}, status=403)


def test_an_endpoint_makes_the_region_it_names(api):
    admin = _admin(api)
    service = api.app.post_json("/v3/services", {"service": {"type": "dns"}}, headers=admin).json["service"]["id"]
    endpoint = api.app.post_json("/v3/endpoints", {"endpoint": {
        "service_id": service, "interface": "public", "url": "http://dns.example/", "region": "far"}},
        headers=admin, status=201).json["endpoint"]
    assert api.app.get("/v3/regions/far", headers=admin).json["region"]["id"] == "far"
    moved = api.app.patch_json(f"/v3/endpoints/{endpoint['id']}", {"endpoint": {"region": "farther"}},
                               headers=admin).json["endpoint"]
    assert (moved["region_id"], moved["region"]) == ("farther", "farther")
    busy = api.app.delete("/v3/regions/farther", headers=admin, expect_errors=True)
    assert busy.status_int == 409 and "endpoint" in busy.json["error"]["message"]
    api.app.delete(f"/v3/endpoints/{endpoint['id']}", headers=admin, status=204)
    api.app.delete("/v3/regions/farther", headers=admin, status=204)


def test_users_keep_extra_attributes(api):
    admin = _admin(api)
    created = api.app.post_json("/v3/users", {"user": {"name": "jo", "email": "jo@example.org",
                                                       "project_id": "p-1", "team": {"floor": 3}}},
                                headers=admin, status=201).json["user"]
    assert (created["email"], created["project_id"], created["team"]) == ("jo@example.org", "p-1", {"floor": 3})
    updated = api.app.patch_json(f"/v3/users/{created['id']}", {"user": {"description": "ops", "email": "j@x.org"}},
                                 headers=admin).json["user"]
    assert (updated["description"], updated["email"], updated["project_id"]) == ("ops", "j@x.org", "p-1")
    shown = api.app.get(f"/v3/users/{created['id']}", headers=admin).json["user"]
    assert shown["description"] == "ops" and shown["name"] == "jo" and shown["domain_id"] == "default"
    # An extra cannot pass itself off as a column.
    renamed = api.app.patch_json(f"/v3/users/{created['id']}", {"user": {"links": "x", "id": "forged"}},
                                 headers=admin).json["user"]
    assert renamed["id"] == created["id"] and isinstance(renamed["links"], dict)


@pytest.mark.parametrize("value", ["False", "true", 1, 0])
def test_identity_booleans_must_be_json_booleans(api, value):
    admin = _admin(api)
    refused = api.app.post_json("/v3/domains", {"domain": {"name": "d", "enabled": value}}, headers=admin,
                                expect_errors=True)
    assert refused.status_int == 400 and "enabled" in refused.json["error"]["message"]
    assert api.app.get("/v3/domains?name=d", headers=admin).json["domains"] == []


def test_a_role_is_renamed_but_not_one_the_policy_names(api):
    admin = _admin(api)
    role = api.app.post_json("/v3/roles", {"role": {"name": "auditor"}}, headers=admin, status=201).json["role"]
    renamed = api.app.patch_json(f"/v3/roles/{role['id']}", {"role": {"name": "inspector"}}, headers=admin).json
    assert renamed["role"]["name"] == "inspector"
    taken = api.app.patch_json(f"/v3/roles/{role['id']}", {"role": {"name": "member"}}, headers=admin,
                               expect_errors=True)
    assert taken.status_int == 409 and "member" in taken.json["error"]["message"]
    kept = api.app.patch_json(f"/v3/roles/{_role_id(api, 'admin')}", {"role": {"name": "boss"}}, headers=admin,
                              expect_errors=True)
    assert kept.status_int == 409 and _role_id(api, "admin")


def test_a_rescoped_token_names_every_method_used(api):
    _, project, token = _member(api, "kim")
    unscoped = _token(api, "kim", "pw-123456", None)
    rescoped = api.app.post_json("/v3/auth/tokens", {"auth": {"identity": {"methods": ["token"],
                                                                            "token": {"id": unscoped}},
                                                               "scope": {"project": {"id": project}}}})
    assert sorted(rescoped.json["token"]["methods"]) == ["password", "token"]
    secret = rescoped.headers["X-Subject-Token"]
    shown = api.app.get("/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": secret}).json
    assert sorted(shown["token"]["methods"]) == ["password", "token"]


def test_projects_nest_in_their_domain_and_a_parent_keeps_its_children(api):
    admin = _admin(api)
    domain = api.app.post_json("/v3/domains", {"domain": {"name": "nest"}}, headers=admin).json["domain"]["id"]
    root = api.app.post_json("/v3/projects", {"project": {"name": "root", "domain_id": domain}},
                             headers=admin).json["project"]
    assert root["parent_id"] == domain
    child = api.app.post_json("/v3/projects", {"project": {"name": "leaf", "parent_id": root["id"]}},
                              headers=admin, status=201).json["project"]
    assert (child["domain_id"], child["parent_id"]) == (domain, root["id"])  # the parent's domain
    elsewhere = api.app.post_json("/v3/projects", {"project": {"name": "x", "domain_id": "default",
                                                               "parent_id": root["id"]}},
                                  headers=admin, expect_errors=True)
    assert elsewhere.status_int == 400 and root["id"] in elsewhere.json["error"]["message"]
    listed = api.app.get(f"/v3/projects?parent_id={root['id']}", headers=admin).json["projects"]
    assert [p["name"] for p in listed] == ["leaf"]
    assert [p["name"] for p in api.app.get(f"/v3/projects?parent_id={domain}", headers=admin).json["projects"]] == [
        "root"]
    refused = api.app.delete(f"/v3/projects/{root['id']}", headers=admin, expect_errors=True)
    assert refused.status_int == 403 and child["id"] in refused.json["error"]["message"]
    # Deleting the (disabled) domain takes the whole tree.
    api.app.patch_json(f"/v3/domains/{domain}", {"domain": {"enabled": False}}, headers=admin)
    api.app.delete(f"/v3/domains/{domain}", headers=admin, status=204)
    api.app.get(f"/v3/projects/{child['id']}", headers=admin, status=404)


def test_project_tags(api):
    admin = _admin(api)
    project = api.app.post_json("/v3/projects", {"project": {"name": "tagged", "tags": ["b", "a"]}},
                                headers=admin).json["project"]
    base = f"/v3/projects/{project['id']}/tags"
    assert project["tags"] == ["a", "b"]
    api.app.put(f"{base}/c", headers=admin, status=201)
    api.app.get(f"{base}/c", headers=admin, status=204)
    assert api.app.get(base, headers=admin).json["tags"] == ["a", "b", "c"]
    assert api.app.put_json(base, {"tags": ["x", "y"]}, headers=admin).json["tags"] == ["x", "y"]
    assert api.app.get(f"/v3/projects/{project['id']}", headers=admin).json["project"]["tags"] == ["x", "y"]
    assert [p["name"] for p in api.app.get("/v3/projects?tags=x,y", headers=admin).json["projects"]] == ["tagged"]
    assert api.app.get("/v3/projects?tags=x,z", headers=admin).json["projects"] == []
    assert [p["name"] for p in api.app.get("/v3/projects?tags-any=z,y", headers=admin).json["projects"]] == [
        "tagged"]
    assert "tagged" not in [p["name"] for p in api.app.get("/v3/projects?not-tags-any=y",
                                                           headers=admin).json["projects"]]
    api.app.delete(f"{base}/x", headers=admin, status=204)
    api.app.get(f"{base}/x", headers=admin, status=404)
    for bad in ("a/b", "a,b", "z" * 256):
        refused = api.app.put_json(base, {"tags": [bad]}, headers=admin, expect_errors=True)
        assert refused.status_int == 400 and bad[:20] in refused.json["error"]["message"]
    too_many = api.app.put_json(base, {"tags": [f"t{i}" for i in range(81)]}, headers=admin, expect_errors=True)
    assert too_many.status_int == 400 and "81" in too_many.json["error"]["message"]
    assert api.app.get(base, headers=admin).json["tags"] == ["y"]  # nothing half-written
    api.app.delete(base, headers=admin, status=204)
    assert api.app.get(base, headers=admin).json["tags"] == []


def test_ec2_credentials_under_v3_credentials(api):
    user, project, token = _member(api, "lee")
    mine = {"X-Auth-Token": token}
    blob = '{"access": "AK-lee", "secret": "SK-lee"}'
    created = api.app.post_json("/v3/credentials", {"credential": {"user_id": user, "project_id": project,
                                                                   "type": "ec2", "blob": blob}},
                                headers=mine, status=201).json["credential"]
    # The same key, seen through OS-EC2 (what the objectstore checks).
    assert api.app.get(f"/v3/users/{user}/credentials/OS-EC2/AK-lee", headers=mine).json["credential"]["secret"] == \
        "SK-lee"
    changed = api.app.patch_json(f"/v3/credentials/{created['id']}",
                                 {"credential": {"blob": '{"access": "AK-2", "secret": "SK-2"}'}},
                                 headers=mine).json["credential"]
    assert changed["id"] == created["id"] and '"AK-2"' in changed["blob"]
    assert [c["id"] for c in api.app.get("/v3/credentials", headers=mine).json["credentials"]] == [created["id"]]
    other_user, _, other = _member(api, "max")
    api.app.get(f"/v3/credentials/{created['id']}", headers={"X-Auth-Token": other}, status=404)
    assert api.app.get("/v3/credentials", headers={"X-Auth-Token": other}).json["credentials"] == []
    for body, named in (({"type": "cert"}, "ec2"), ({"blob": "nope"}, "nope"), ({"blob": '{"access": 1}'}, "access"),
                        ({"user_id": other_user}, other_user)):
        request = {"user_id": user, "project_id": project, "type": "ec2", "blob": blob, **body}
        refused = api.app.post_json("/v3/credentials", {"credential": request}, headers=mine, expect_errors=True)
        assert refused.status_int in (400, 403) and named in refused.json["error"]["message"], refused.json
    dup = api.app.post_json("/v3/credentials", {"credential": {"user_id": user, "project_id": project, "type": "ec2",
                                                               "blob": '{"access": "AK-2", "secret": "s"}'}},
                            headers=mine, expect_errors=True)
    assert dup.status_int == 409 and "AK-2" in dup.json["error"]["message"]
    api.app.delete(f"/v3/credentials/{created['id']}", headers=mine, status=204)
    api.app.get(f"/v3/users/{user}/credentials/OS-EC2/AK-2", headers=mine, status=404)


def test_policy_documents_are_kept_for_admins(api):
    admin = _admin(api)
    made = api.app.post_json("/v3/policies", {"policy": {"blob": '{"a": "b"}', "type": "application/json"}},
                             headers=admin, status=201).json["policy"]
    changed = api.app.patch_json(f"/v3/policies/{made['id']}", {"policy": {"blob": "{}"}}, headers=admin).json
    assert changed["policy"]["blob"] == "{}"
    assert [p["id"] for p in api.app.get("/v3/policies?type=application/json", headers=admin).json["policies"]] == [
        made["id"]]
    api.app.get("/v3/policies", headers={"X-Auth-Token": _member(api, "nia")[2]}, status=403)
    # 34,000 characters, 68,000 bytes in UTF-8 (the body itself, sent as UTF-8, stays under the limit).
    raw = json.dumps({"policy": {"blob": "é" * 34000, "type": "t"}}, ensure_ascii=False).encode()
    big = api.app.post("/v3/policies", raw, headers=dict(admin, **{"Content-Type": "application/json"}),
                       expect_errors=True)
    assert big.status_int == 400 and "68000 bytes" in big.json["error"]["message"]
    api.app.delete(f"/v3/policies/{made['id']}", headers=admin, status=204)
    api.app.get(f"/v3/policies/{made['id']}", headers=admin, status=404)


def test_implied_roles_reach_tokens_and_effective_assignments(api):
    admin = _admin(api)
    roles = {name: api.app.post_json("/v3/roles", {"role": {"name": name}}, headers=admin).json["role"]["id"]
             for name in ("lead", "dev", "viewer")}
    user, project, _ = _member(api, "oli")
    api.app.put(f"/v3/projects/{project}/users/{user}/roles/{roles['lead']}", headers=admin, status=204)
    api.app.put(f"/v3/roles/{roles['lead']}/implies/{roles['dev']}", headers=admin, status=201)
    api.app.put(f"/v3/roles/{roles['dev']}/implies/{roles['viewer']}", headers=admin, status=201)
    api.app.head(f"/v3/roles/{roles['lead']}/implies/{roles['dev']}", headers=admin, status=204)
    token = _token(api, "oli", "pw-123456", "olis")
    shown = api.app.get("/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}).json
    assert {"lead", "dev", "viewer", "member"} == {r["name"] for r in shown["token"]["roles"]}  # transitively
    effective = api.app.get(f"/v3/role_assignments?effective&user.id={user}&scope.project.id={project}",
                            headers=admin).json["role_assignments"]
    assert {a["role"]["id"] for a in effective} >= set(roles.values())
    only = api.app.get(f"/v3/role_assignments?effective&user.id={user}&role.id={roles['viewer']}",
                       headers=admin).json["role_assignments"]
    assert [a["role"]["id"] for a in only] == [roles["viewer"]]
    listed = api.app.get(f"/v3/roles/{roles['lead']}/implies", headers=admin).json["role_inference"]
    assert [r["name"] for r in listed["implies"]] == ["dev"]
    assert len(api.app.get("/v3/role_inferences", headers=admin).json["role_inferences"]) == 2
    # A cycle, a role implying itself, and implying admin are refused, naming the roles.
    cycle = api.app.put(f"/v3/roles/{roles['viewer']}/implies/{roles['lead']}", headers=admin, expect_errors=True)
    assert cycle.status_int == 400 and "cycle" in cycle.json["error"]["message"]
    api.app.put(f"/v3/roles/{roles['dev']}/implies/{roles['dev']}", headers=admin, status=400)
    to_admin = api.app.put(f"/v3/roles/{roles['dev']}/implies/{_role_id(api, 'admin')}", headers=admin,
                           expect_errors=True)
    assert to_admin.status_int == 403 and "admin" in to_admin.json["error"]["message"]
    api.app.delete(f"/v3/roles/{roles['lead']}/implies/{roles['dev']}", headers=admin, status=204)
    token = _token(api, "oli", "pw-123456", "olis")
    shown = api.app.get("/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}).json
    assert {"lead", "member"} == {r["name"] for r in shown["token"]["roles"]}
    api.app.get(f"/v3/roles/{roles['lead']}/implies/{roles['dev']}", headers=admin, status=404)


def test_roles_inherited_from_a_domain_or_a_parent_reach_the_projects_beneath(api):
    admin = _admin(api)
    domain = api.app.post_json("/v3/domains", {"domain": {"name": "inh"}}, headers=admin).json["domain"]["id"]
    parent = api.app.post_json("/v3/projects", {"project": {"name": "top", "domain_id": domain}},
                               headers=admin).json["project"]["id"]
    leaf = api.app.post_json("/v3/projects", {"project": {"name": "leaf", "parent_id": parent}},
                             headers=admin).json["project"]["id"]
    user = api.app.post_json("/v3/users", {"user": {"name": "pat", "password": "pw-123456", "domain_id": domain}},
                             headers=admin).json["user"]["id"]
    auditor = api.app.post_json("/v3/roles", {"role": {"name": "auditor"}}, headers=admin).json["role"]["id"]
    grant = f"/v3/OS-INHERIT/projects/{parent}/users/{user}/roles/{auditor}/inherited_to_projects"
    api.app.put(grant, headers=admin, status=204)
    api.app.head(grant, headers=admin, status=204)
    # The role reaches the project beneath, not the project it was granted on.
    def scoped_to(project_id: str) -> dict:
        return {"auth": {"identity": {"methods": ["password"], "password": {
            "user": {"id": user, "password": "pw-123456"}}}, "scope": {"project": {"id": project_id}}}}

    leaf_token = api.app.post_json("/v3/auth/tokens", scoped_to(leaf)).json["token"]
    assert [r["name"] for r in leaf_token["roles"]] == ["auditor"]
    api.app.post_json("/v3/auth/tokens", scoped_to(parent), status=401)
    effective = api.app.get(f"/v3/role_assignments?effective&user.id={user}&scope.project.id={leaf}",
                            headers=admin).json["role_assignments"]
    assert [(a["role"]["id"], a["scope"]["project"]["id"]) for a in effective] == [(auditor, leaf)]
    listed = api.app.get(f"/v3/role_assignments?user.id={user}", headers=admin).json["role_assignments"]
    assert [a["scope"].get("OS-INHERIT:inherited_to") for a in listed] == ["projects"]
    api.app.delete(grant, headers=admin, status=204)
    assert api.app.get(f"/v3/role_assignments?effective&user.id={user}&scope.project.id={leaf}",
                       headers=admin).json["role_assignments"] == []
    # From the domain: every project of it.
    on_domain = f"/v3/OS-INHERIT/domains/{domain}/users/{user}/roles"
    api.app.put(f"{on_domain}/{auditor}/inherited_to_projects", headers=admin, status=204)
    assert [r["id"] for r in api.app.get(f"{on_domain}/inherited_to_projects", headers=admin).json["roles"]] == [
        auditor]
    effective = api.app.get(f"/v3/role_assignments?effective&user.id={user}", headers=admin).json["role_assignments"]
    assert sorted(a["scope"]["project"]["id"] for a in effective) == sorted([parent, leaf])
    api.app.put(f"{on_domain}/no-such-role/inherited_to_projects", headers=admin, status=404)
    # Deleting the user takes its inherited grants.
    api.app.delete(f"/v3/users/{user}", headers=admin, status=204)
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(RoleGrant)
                              .where(RoleGrant.actor_id == user)) == 0


def test_endpoint_groups_cut_a_projects_catalog_down(api):
    admin = _admin(api)
    service = api.app.post_json("/v3/services", {"service": {"type": "dns"}}, headers=admin).json["service"]["id"]
    api.app.post_json("/v3/endpoints", {"endpoint": {"service_id": service, "interface": "public",
                                                     "url": "http://dns.example/"}}, headers=admin)
    groups = "/v3/OS-EP-FILTER/endpoint_groups"
    group = api.app.post_json(groups, {"endpoint_group": {"name": "dns-only", "filters": {"service_id": service}}},
                              headers=admin, status=201).json["endpoint_group"]
    assert [e["service_id"] for e in api.app.get(f"{groups}/{group['id']}/endpoints",
                                                 headers=admin).json["endpoints"]] == [service]
    user, project, token = _member(api, "quin")
    before = api.app.get("/v3/auth/catalog", headers={"X-Auth-Token": token}).json["catalog"]
    assert {"dns", "compute"} <= {s["type"] for s in before}
    api.app.put(f"{groups}/{group['id']}/projects/{project}", headers=admin, status=204)
    api.app.head(f"{groups}/{group['id']}/projects/{project}", headers=admin, status=200)
    token = _token(api, "quin", "pw-123456", "quins")
    shown = api.app.get("/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}).json["token"]
    assert [s["type"] for s in shown["catalog"]] == ["dns"]  # only the group's endpoints
    assert [g["id"] for g in api.app.get(f"/v3/OS-EP-FILTER/projects/{project}/endpoint_groups",
                                         headers=admin).json["endpoint_groups"]] == [group["id"]]
    bad = api.app.patch_json(f"{groups}/{group['id']}", {"endpoint_group": {"filters": {"colour": "red"}}},
                             headers=admin, expect_errors=True)
    assert bad.status_int == 400 and "colour" in bad.json["error"]["message"]
    api.app.get(f"{groups}", headers={"X-Auth-Token": token}, status=403)
    api.app.delete(f"{groups}/{group['id']}", headers=admin, status=204)  # its associations go with it
    after = api.app.get("/v3/auth/catalog", headers={"X-Auth-Token": token}).json["catalog"]
    assert {"dns", "compute"} <= {s["type"] for s in after}
