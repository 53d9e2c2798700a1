"""Domain-specific roles, projects acting as domains and per-domain configuration, as
Keystone's API has them."""

from __future__ import annotations

from tests.unit.api.test_identity_admin import _admin, _project, _role_id, _token, _user


def _domain(api, name: str) -> str:
    return api.app.post_json("/v3/domains", {"domain": {"name": name}}, headers=_admin(api), status=201
                             ).json["domain"]["id"]


def _role(api, name: str, domain_id: str | None = None, status: int = 201):
    body = {"role": {"name": name, **({"domain_id": domain_id} if domain_id else {})}}
    return api.app.post_json("/v3/roles", body, headers=_admin(api), status=status)


def test_role_names_are_unique_per_domain(api):
    east, west = _domain(api, "east"), _domain(api, "west")
    in_east = _role(api, "auditor", east).json["role"]
    assert in_east["domain_id"] == east
    _role(api, "auditor", west)
    _role(api, "auditor")
    taken = _role(api, "auditor", east, status=409).json["error"]["message"]
    assert "auditor" in taken and east in taken
    listed = api.app.get(f"/v3/roles?domain_id={east}", headers=_admin(api)).json["roles"]
    assert listed == [in_east]
    global_names = [r["name"] for r in api.app.get("/v3/roles", headers=_admin(api)).json["roles"]]
    assert global_names.count("auditor") == 1
    assert api.app.post_json("/v3/roles", {"role": {"name": "x", "domain_id": "nowhere"}}, headers=_admin(api),
                             status=404).json["error"]["message"].count("nowhere")


def test_a_domain_role_is_never_in_a_token_nor_effective(api):
    """Even one named ``admin``: only global roles carry the policy's meaning."""
    domain = _domain(api, "lab")
    fake_admin = _role(api, "admin", domain).json["role"]["id"]
    user, project = _user(api, "dana"), _project(api, "danas")
    admin = _admin(api)
    api.app.put(f"/v3/projects/{project}/users/{user}/roles/{_role_id(api, 'member')}", headers=admin)
    api.app.put(f"/v3/projects/{project}/users/{user}/roles/{fake_admin}", headers=admin)
    token = _token(api, "dana", "pw-123456", "danas")
    roles = api.app.get("/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}
                        ).json["token"]["roles"]
    assert [r["name"] for r in roles] == ["member"]
    api.app.get("/v3/users", headers={"X-Auth-Token": token}, status=403)
    effective = api.app.get(f"/v3/role_assignments?effective&user.id={user}", headers=admin).json
    assert {a["role"]["id"] for a in effective["role_assignments"]} == {_role_id(api, "member")}
    direct = api.app.get(f"/v3/role_assignments?user.id={user}", headers=admin).json
    assert fake_admin in {a["role"]["id"] for a in direct["role_assignments"]}


def test_a_global_role_may_not_imply_a_domain_role(api):
    domain = _domain(api, "hr")
    local, glob = _role(api, "clerk", domain).json["role"]["id"], _role(api, "staff").json["role"]["id"]
    api.app.put(f"/v3/roles/{local}/implies/{glob}", headers=_admin(api), status=201)
    refused = api.app.put(f"/v3/roles/{glob}/implies/{local}", headers=_admin(api), status=403)
    assert "clerk" in refused.json["error"]["message"]


def test_a_domain_role_goes_with_its_domain(api):
    domain = _domain(api, "gone")
    role = _role(api, "temp", domain).json["role"]["id"]
    api.app.patch_json(f"/v3/domains/{domain}", {"domain": {"enabled": False}}, headers=_admin(api))
    api.app.delete(f"/v3/domains/{domain}", headers=_admin(api), status=204)
    api.app.get(f"/v3/roles/{role}", headers=_admin(api), status=404)


def test_a_project_acting_as_a_domain(api):
    admin = _admin(api)
    made = api.app.post_json("/v3/projects", {"project": {"name": "acme", "is_domain": True}}, headers=admin,
                             status=201).json["project"]
    assert made["is_domain"] is True and made["domain_id"] is None
    assert made["id"] in {d["id"] for d in api.app.get("/v3/domains", headers=admin).json["domains"]}
    assert made["id"] not in {p["id"] for p in api.app.get("/v3/projects", headers=admin).json["projects"]}
    assert [p["id"] for p in api.app.get("/v3/projects?is_domain=true", headers=admin).json["projects"]] == [
        made["id"]]
    # Changed through either face, seen through both.
    api.app.patch_json(f"/v3/projects/{made['id']}", {"project": {"enabled": False}}, headers=admin)
    assert api.app.get(f"/v3/domains/{made['id']}", headers=admin).json["domain"]["enabled"] is False
    refused = api.app.post_json("/v3/projects", {"project": {"name": "x", "is_domain": True, "domain_id": "default"}},
                                headers=admin, status=400)
    assert "is_domain" in refused.json["error"]["message"]
    api.app.delete(f"/v3/projects/{made['id']}", headers=admin, status=204)
    api.app.get(f"/v3/domains/{made['id']}", headers=admin, status=404)


CONFIG = {"identity": {"driver": "ldap"}, "ldap": {"url": "ldap://ldap.example:389/", "password": "s3cret"}}


def test_a_domain_configuration_is_stored_and_answered_without_its_password(api):
    admin, domain = _admin(api), _domain(api, "configured")
    base = f"/v3/domains/{domain}/config"
    api.app.get(base, headers=admin, status=404)
    created = api.app.put_json(base, {"config": CONFIG}, headers=admin, status=201).json["config"]
    assert created == {"identity": {"driver": "ldap"}, "ldap": {"url": "ldap://ldap.example:389/"}}
    assert api.app.put_json(base, {"config": CONFIG}, headers=admin, status=200).json["config"] == created
    assert api.app.get(f"{base}/ldap", headers=admin).json == {"config": {"ldap": created["ldap"]}}
    assert api.app.get(f"{base}/identity/driver", headers=admin).json == {"config": {"driver": "ldap"}}
    api.app.get(f"{base}/ldap/password", headers=admin, status=404)
    changed = api.app.patch_json(f"{base}/identity/driver", {"config": {"driver": "sql"}}, headers=admin).json
    assert changed["config"]["identity"] == {"driver": "sql"}
    merged = api.app.patch_json(base, {"config": {"identity": {"list_limit": 5}}}, headers=admin).json["config"]
    assert merged["identity"] == {"driver": "sql", "list_limit": 5} and merged["ldap"] == created["ldap"]
    api.app.delete(f"{base}/identity", headers=admin, status=204)
    api.app.get(f"{base}/identity", headers=admin, status=404)
    api.app.delete(base, headers=admin, status=204)
    api.app.get(base, headers=admin, status=404)


def test_a_domain_configuration_takes_only_keystones_groups_and_options(api):
    admin, domain = _admin(api), _domain(api, "strict")
    base = f"/v3/domains/{domain}/config"
    for config, named in (({"catalog": {"driver": "sql"}}, "catalog"), ({"ldap": {"nonsense": "1"}}, "nonsense"),
                          ({"ldap": {"url": {"nested": 1}}}, "ldap.url"), ({"ldap": {}}, "ldap")):
        refused = api.app.put_json(base, {"config": config}, headers=admin, status=400)
        assert named in refused.json["error"]["message"]
    api.app.get(base, headers=admin, status=404)  # nothing half-written
    api.app.put_json("/v3/domains/nowhere/config", {"config": CONFIG}, headers=admin, status=404)


def test_the_default_domain_configuration(api):
    token = {"X-Auth-Token": api.admin.token}
    defaults = api.app.get("/v3/domains/config/default", headers=token).json["config"]
    assert {"identity", "ldap"} <= set(defaults) and "password" not in defaults["ldap"]
    assert api.app.get("/v3/domains/config/identity/default", headers=token).json["config"]["identity"] == \
        defaults["identity"]
    assert api.app.get("/v3/domains/config/ldap/url/default", headers=token).json == {
        "config": {"url": defaults["ldap"]["url"]}}
    api.app.get("/v3/domains/config/catalog/default", headers=token, status=404)


def test_what_a_domain_role_implies_is_in_the_token(api):
    admin, domain = _admin(api), _domain(api, "ops")
    local, inner = _role(api, "operator", domain).json["role"]["id"], _role(api, "helper", domain).json["role"]["id"]
    api.app.put(f"/v3/roles/{local}/implies/{inner}", headers=admin, status=201)
    api.app.put(f"/v3/roles/{inner}/implies/{_role_id(api, 'member')}", headers=admin, status=201)
    user, project = _user(api, "omar"), _project(api, "omars")
    api.app.put(f"/v3/projects/{project}/users/{user}/roles/{local}", headers=admin)
    token = _token(api, "omar", "pw-123456", "omars")
    roles = api.app.get("/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}
                        ).json["token"]["roles"]
    assert [r["name"] for r in roles] == ["member"]
    effective = api.app.get(f"/v3/role_assignments?effective&user.id={user}", headers=admin).json
    assert [a["role"]["id"] for a in effective["role_assignments"]] == [_role_id(api, "member")]
