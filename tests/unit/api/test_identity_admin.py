"""Identity administration through the API: domains, groups, grants, role assignments,
token revocation, lock-out, the catalog in the database, application credentials."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import pytest
import sqlalchemy as sa
import webtest

from fabric.api import passwords
from fabric.db.models import RoleGrant
from tests.fixtures.api import build_harness, password_auth
from tests.fixtures.processes import wait_until

CLIENTS = 8


def _admin(api) -> dict:
    return {"X-Auth-Token": api.admin.token}


def _role_id(api, name: str) -> str:
    return api.app.get(f"/v3/roles?name={name}", headers=_admin(api)).json["roles"][0]["id"]


def _user(api, name: str, password: str = "pw-123456", domain_id: str = "default") -> str:
    return api.app.post_json("/v3/users", {"user": {"name": name, "password": password, "domain_id": domain_id}},
                             headers=_admin(api)).json["user"]["id"]


def _project(api, name: str, domain_id: str = "default") -> str:
    return api.app.post_json("/v3/projects", {"project": {"name": name, "domain_id": domain_id}},
                             headers=_admin(api)).json["project"]["id"]


def _token(api, user: str, password: str, project: str | None, status: int = 201):
    resp = api.app.post_json("/v3/auth/tokens", password_auth(user, password, project), expect_errors=True)
    assert resp.status_int == status, resp.text
    return resp.headers.get("X-Subject-Token")


def _race(api, method: str, path: str, body: dict | None) -> Counter:
    start, statuses, lock = threading.Barrier(CLIENTS), Counter(), threading.Lock()

    def send() -> None:
        client = webtest.TestApp(api.app.app)
        start.wait()
        call = getattr(client, method)
        resp = call(path, body, headers=_admin(api), expect_errors=True) if body is not None else \
            call(path, headers=_admin(api), expect_errors=True)
        with lock:
            statuses[resp.status_int] += 1

    threads = [threading.Thread(target=send) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses


@pytest.mark.parametrize("path, key", [("/v3/domains", "domain"), ("/v3/groups", "group")])
def test_concurrent_creates_of_one_name_get_one_201_and_409s(server_api, path, key):
    statuses = _race(server_api, "post_json", path, {key: {"name": f"race-{uuid.uuid4().hex[:8]}"}})
    assert statuses == Counter({201: 1, 409: CLIENTS - 1}), statuses


def test_concurrent_identical_grants_all_succeed_with_one_row(server_api):
    api = server_api
    group = api.app.post_json("/v3/groups", {"group": {"name": "g"}}, headers=_admin(api)).json["group"]["id"]
    project, member = _project(api, "p-race"), _role_id(api, "member")
    statuses = _race(api, "put", f"/v3/projects/{project}/groups/{group}/roles/{member}", None)
    assert statuses == Counter({204: CLIENTS}), statuses
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(RoleGrant)) == 1


def test_concurrent_identical_group_additions_all_succeed(server_api):
    api = server_api
    group = api.app.post_json("/v3/groups", {"group": {"name": "g"}}, headers=_admin(api)).json["group"]["id"]
    user = _user(api, "racer")
    statuses = _race(api, "put", f"/v3/groups/{group}/users/{user}", None)
    assert statuses == Counter({204: CLIENTS}), statuses
    assert [u["id"] for u in api.app.get(f"/v3/groups/{group}/users", headers=_admin(api)).json["users"]] == [user]


def test_group_grant_gives_a_token_its_roles_and_assignments_list_it(api):
    domain = api.app.post_json("/v3/domains", {"domain": {"name": "eng"}}, headers=_admin(api)).json["domain"]
    project = _project(api, "web", domain["id"])
    user = _user(api, "alice", domain_id=domain["id"])
    group = api.app.post_json("/v3/groups", {"group": {"name": "devs", "domain_id": domain["id"]}},
                              headers=_admin(api)).json["group"]["id"]
    member = _role_id(api, "member")
    auth = password_auth("alice", "pw-123456", "web")
    auth["auth"]["identity"]["password"]["user"]["domain"] = {"name": "eng"}
    auth["auth"]["scope"]["project"]["domain"] = {"name": "eng"}
    assert api.app.post_json("/v3/auth/tokens", auth, expect_errors=True).status_int == 401  # no role yet

    api.app.put(f"/v3/groups/{group}/users/{user}", headers=_admin(api))
    api.app.head(f"/v3/groups/{group}/users/{user}", headers=_admin(api), status=204)
    api.app.put(f"/v3/projects/{project}/groups/{group}/roles/{member}", headers=_admin(api), status=204)
    issued = api.app.post_json("/v3/auth/tokens", auth)
    token = issued.json["token"]
    assert [r["name"] for r in token["roles"]] == ["member"]
    assert token["user"]["domain"] == {"id": domain["id"], "name": "eng"}

    listed = api.app.get(f"/v3/role_assignments?scope.project.id={project}", headers=_admin(api)).json
    assert [(a.get("group", {}).get("id"), a["role"]["id"]) for a in listed["role_assignments"]] == [(group, member)]
    effective = api.app.get(f"/v3/role_assignments?user.id={user}&effective&include_names",
                            headers=_admin(api)).json["role_assignments"]
    assert [(a["user"]["name"], a["scope"]["project"]["name"], a["role"]["name"]) for a in effective] == \
        [("alice", "web", "member")]
    assert effective[0]["links"]["membership"].endswith(f"/v3/groups/{group}/users/{user}")
    assert [p["name"] for p in api.app.get(f"/v3/users/{user}/projects", headers=_admin(api)).json["projects"]] \
        == ["web"]

    # A domain is deleted only once disabled, and takes its users, groups and projects along.
    refused = api.app.delete(f"/v3/domains/{domain['id']}", headers=_admin(api), expect_errors=True)
    assert refused.status_int == 403 and "disable it" in refused.json["error"]["message"]
    api.app.patch_json(f"/v3/domains/{domain['id']}", {"domain": {"enabled": False}}, headers=_admin(api))
    # Its users' tokens end with it.
    assert api.app.get("/v3/auth/projects", headers={"X-Auth-Token": issued.headers["X-Subject-Token"]},
                       expect_errors=True).status_int == 401
    api.app.delete(f"/v3/domains/{domain['id']}", headers=_admin(api), status=204)
    for path in (f"/v3/users/{user}", f"/v3/projects/{project}", f"/v3/groups/{group}"):
        assert api.app.get(path, headers=_admin(api), expect_errors=True).status_int == 404
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(RoleGrant)) == 0


def test_system_grant_is_listed_with_scope_system(api):
    user, admin_role = _user(api, "sys"), _role_id(api, "admin")
    api.app.put(f"/v3/system/users/{user}/roles/{admin_role}", headers=_admin(api), status=204)
    listed = api.app.get("/v3/role_assignments?scope.system=all", headers=_admin(api)).json["role_assignments"]
    assert [(a["user"]["id"], a["scope"]) for a in listed] == [(user, {"system": {"all": True}})]
    bad = api.app.get("/v3/role_assignments?scope.system=moon", headers=_admin(api), expect_errors=True)
    assert bad.status_int == 400 and "'moon'" in bad.json["error"]["message"]

    # A system-scoped token carries the system roles, and its admin role is the cloud's.
    system_auth = password_auth("sys", "pw-123456", None)
    system_auth["auth"]["scope"] = {"system": {"all": True}}
    issued = api.app.post_json("/v3/auth/tokens", system_auth)
    assert issued.json["token"]["system"] == {"all": True}
    assert [r["name"] for r in issued.json["token"]["roles"]] == ["admin"]
    token = {"X-Auth-Token": issued.headers["X-Subject-Token"]}
    assert "sys" in [u["name"] for u in api.app.get("/v3/users", headers=token).json["users"]]
    api.app.delete(f"/v3/system/users/{user}/roles/{admin_role}", headers=_admin(api), status=204)
    assert api.app.get("/v3/users", headers=token, expect_errors=True).status_int == 403


def test_domain_scoped_token_carries_domain_roles_but_no_cloud_admin(api):
    user, admin_role = _user(api, "dom"), _role_id(api, "admin")
    api.app.put(f"/v3/domains/default/users/{user}/roles/{admin_role}", headers=_admin(api), status=204)
    auth = password_auth("dom", "pw-123456", None)
    auth["auth"]["scope"] = {"domain": {"name": "Default"}}
    issued = api.app.post_json("/v3/auth/tokens", auth)
    assert issued.json["token"]["domain"] == {"id": "default", "name": "Default"}
    assert [r["name"] for r in issued.json["token"]["roles"]] == ["admin"]
    token = {"X-Auth-Token": issued.headers["X-Subject-Token"]}
    assert api.app.get("/v3/users", headers=token, expect_errors=True).status_int == 403
    auth["auth"]["scope"] = {"domain": {"name": "nowhere"}}
    refused = api.app.post_json("/v3/auth/tokens", auth, expect_errors=True)
    assert refused.status_int == 401 and "nowhere" in refused.json["error"]["message"]


def test_disable_and_password_change_revoke_every_token(api):
    user, project = _user(api, "bob"), _project(api, "bobs")
    api.app.put(f"/v3/projects/{project}/users/{user}/roles/{_role_id(api, 'member')}", headers=_admin(api))
    token = _token(api, "bob", "pw-123456", "bobs")
    api.app.patch_json(f"/v3/users/{user}", {"user": {"enabled": False}}, headers=_admin(api))
    api.app.patch_json(f"/v3/users/{user}", {"user": {"enabled": True}}, headers=_admin(api))
    # Re-enabling does not bring the old token back.
    assert api.app.get("/v3/auth/projects", headers={"X-Auth-Token": token}, expect_errors=True).status_int == 401

    token = _token(api, "bob", "pw-123456", "bobs")
    api.app.post_json(f"/v3/users/{user}/password", {"user": {"password": "new-pw-1",
                                                              "original_password": "pw-123456"}},
                      headers={"X-Auth-Token": token}, status=204)
    assert api.app.get("/v3/auth/projects", headers={"X-Auth-Token": token}, expect_errors=True).status_int == 401
    _token(api, "bob", "pw-123456", "bobs", status=401)
    _token(api, "bob", "new-pw-1", "bobs")


def test_rescoping_needs_the_old_tokens_project_enabled_and_never_outlives_it(api):
    user, project = _user(api, "carol"), _project(api, "carols")
    api.app.put(f"/v3/projects/{project}/users/{user}/roles/{_role_id(api, 'member')}", headers=_admin(api))
    token = _token(api, "carol", "pw-123456", "carols")
    first = api.app.get("/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}).json
    rescope = {"auth": {"identity": {"methods": ["token"], "token": {"id": token}},
                        "scope": {"project": {"id": project}}}}
    again = api.app.post_json("/v3/auth/tokens", rescope).json["token"]
    assert again["expires_at"] <= first["token"]["expires_at"]
    api.app.patch_json(f"/v3/projects/{project}", {"project": {"enabled": False}}, headers=_admin(api))
    refused = api.app.post_json("/v3/auth/tokens", rescope, expect_errors=True)
    assert refused.status_int == 401 and project in refused.json["error"]["message"]


def test_wrong_passwords_lock_a_user_out_until_the_duration_passes(api_settings, sqlite_db):
    settings = api_settings.replace(security_compliance={"lockout_failure_attempts": 3, "lockout_duration": 1})
    api = build_harness(sqlite_db, settings)
    _user(api, "dave", "right-pw")
    for _ in range(3):
        _token(api, "dave", "wrong", None, status=401)
    locked = api.app.post_json("/v3/auth/tokens", password_auth("dave", "right-pw", None), expect_errors=True)
    assert locked.status_int == 401 and "locked" in locked.json["error"]["message"]
    wait_until(lambda: api.app.post_json("/v3/auth/tokens", password_auth("dave", "right-pw", None),
                                         expect_errors=True).status_int == 201, timeout=10, what="the lock-out to end")


def test_catalog_comes_from_the_database(api):
    service = api.app.post_json("/v3/services", {"service": {"type": "dns", "name": "designate"}},
                                headers=_admin(api)).json["service"]
    bad = api.app.post_json("/v3/endpoints", {"endpoint": {"service_id": service["id"], "interface": "sideways",
                                                           "url": "http://dns.test"}},
                            headers=_admin(api), expect_errors=True)
    assert bad.status_int == 400 and "sideways" in bad.json["error"]["message"]
    api.app.post_json("/v3/endpoints", {"endpoint": {"service_id": service["id"], "interface": "public",
                                                     "url": "http://dns.test:9001", "region_id": "RegionOne"}},
                      headers=_admin(api), status=201)
    catalog = api.app.post_json("/v3/auth/tokens", password_auth("admin", "s3cret-admin", "admin")
                                ).json["token"]["catalog"]
    assert {s["type"]: s["endpoints"][0]["url"] for s in catalog}["dns"] == "http://dns.test:9001"
    api.app.delete(f"/v3/services/{service['id']}", headers=_admin(api), status=204)
    assert api.app.get("/v3/endpoints?service_id=" + service["id"], headers=_admin(api)).json["endpoints"] == []


def test_application_credential_roles_are_limited_and_expiry_honoured(api):
    member = api.make_member()
    path = f"/v3/users/{member.user_id}/application_credentials"
    refused = api.app.post_json(path, {"application_credential": {"name": "x", "roles": [{"name": "admin"}]}},
                                headers=member.headers, expect_errors=True)
    assert refused.status_int == 400 and "'admin'" in refused.json["error"]["message"]
    made = api.app.post_json(path, {"application_credential": {"name": "ci"}}, headers=member.headers,
                             status=201).json["application_credential"]
    with api.db.begin() as session:
        from fabric.db.models import ApplicationCredential
        stored = session.get(ApplicationCredential, made["id"]).secret_hash
    assert made["secret"] not in stored and passwords.verify_password(made["secret"], stored)
    auth = {"auth": {"identity": {"methods": ["application_credential"],
                                  "application_credential": {"id": made["id"], "secret": made["secret"]}}}}
    token = api.app.post_json("/v3/auth/tokens", auth)
    assert [r["name"] for r in token.json["token"]["roles"]] == ["member"]
    assert token.json["token"]["project"]["id"] == member.project_id
    wrong = {"auth": {"identity": {"methods": ["application_credential"],
                                   "application_credential": {"id": made["id"], "secret": "nope"}}}}
    assert api.app.post_json("/v3/auth/tokens", wrong, expect_errors=True).status_int == 401
    api.app.delete(f"{path}/{made['id']}", headers=member.headers, status=204)
    assert api.app.get("/v3/auth/projects", headers={"X-Auth-Token": token.headers["X-Subject-Token"]},
                       expect_errors=True).status_int == 401
    past = api.app.post_json(path, {"application_credential": {"name": "old", "expires_at": "2001-01-01T00:00:00"}},
                             headers=member.headers, expect_errors=True)
    assert past.status_int == 400 and "2001-01-01" in past.json["error"]["message"]


def test_bad_input_names_the_value(api):
    bad = api.app.post_json("/v3/projects", {"project": {"name": "x", "domain_id": "nowhere"}},
                            headers=_admin(api), expect_errors=True)
    assert bad.status_int == 404 and "nowhere" in bad.json["error"]["message"]
    user = _user(api, "erin")
    moved = api.app.patch_json(f"/v3/users/{user}", {"user": {"domain_id": "other"}}, headers=_admin(api),
                               expect_errors=True)
    assert moved.status_int == 400 and "'other'" in moved.json["error"]["message"]
    listing = api.app.get("/v3/users?enabled=maybe", headers=_admin(api), expect_errors=True)
    assert listing.status_int == 400 and "'maybe'" in listing.json["error"]["message"]
