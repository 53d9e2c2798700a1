"""Identity v3: discovery, token issue/validate/revoke, users, projects, roles."""

from __future__ import annotations

import datetime

import sqlalchemy as sa

from fabric.api import passwords, tokens
from fabric.api.bootstrap import bootstrap
from fabric.api.versions import COMPUTE_MAX_VERSION
from fabric.db.models import Project, Role, RoleAssignment, Token, User
from tests.fixtures.api import ADMIN_PASSWORD, password_auth


def test_root_and_v3_discovery_need_no_token(api):
    root = api.app.get("/", status=300).json
    assert root["versions"]["values"][0]["links"][0]["href"] == "http://fabric.test/v3/"
    v3 = api.app.get("/v3/").json
    assert v3["version"]["id"].startswith("v3")
    compute = api.app.get("/compute/v2.1").json["version"]
    assert (compute["min_version"], compute["version"]) == ("2.1", COMPUTE_MAX_VERSION)
    assert api.app.get("/image").json["versions"][0]["links"][0]["href"] == "http://fabric.test/image/v2/"
    assert api.app.get("/networking").json["versions"][0]["id"] == "v2.0"


def test_password_auth_issues_scoped_token_with_catalog(api):
    resp = api.app.post_json("/v3/auth/tokens", password_auth("admin", ADMIN_PASSWORD, "admin"), status=201)
    secret = resp.headers["X-Subject-Token"]
    token = resp.json["token"]
    assert token["user"]["name"] == "admin" and token["project"]["name"] == "admin"
    assert {r["name"] for r in token["roles"]} >= {"admin", "member"}
    catalog = {s["type"]: s["endpoints"][0] for s in token["catalog"]}
    assert set(catalog) == {"identity", "compute", "image", "network", "s3", "block-storage", "volumev3"}
    assert catalog["compute"]["url"] == "http://fabric.test/compute/v2.1"
    assert all(e["interface"] == "public" and e["region_id"] == "RegionOne" for e in catalog.values())
    expires = datetime.datetime.strptime(token["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    issued = datetime.datetime.strptime(token["issued_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert (expires - issued).total_seconds() == 600
    assert resp.headers["x-openstack-request-id"].startswith("req-")
    # Only the hash is stored.
    with api.db.begin() as session:
        stored = session.scalars(sa.select(Token.token_hash)).all()
    assert tokens.hash_secret(secret) in stored and secret not in stored


def test_auth_by_ids(api):
    body = {"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"id": api.admin.user_id, "password": ADMIN_PASSWORD}}},
        "scope": {"project": {"id": api.admin.project_id}}}}
    assert api.app.post_json("/v3/auth/tokens", body, status=201).json["token"]["project"]["id"] == \
        api.admin.project_id


def test_wrong_password_is_401_in_identity_shape(api):
    resp = api.app.post_json("/v3/auth/tokens", password_auth("admin", "nope", "admin"), status=401)
    assert resp.json["error"]["code"] == 401
    assert "password is wrong" in resp.json["error"]["message"]
    assert resp.headers["WWW-Authenticate"].startswith("Keystone uri=")


def test_malformed_auth_names_the_field(api):
    resp = api.app.post_json("/v3/auth/tokens", {"auth": {"identity": {"methods": []}}}, status=400)
    assert "auth.identity.methods" in resp.json["error"]["message"]
    resp = api.app.post("/v3/auth/tokens", "not json", content_type="application/json", status=400)
    assert "not valid JSON" in resp.json["error"]["message"]


def test_no_role_on_project_is_refused(api):
    member = api.make_member()
    with api.db.begin() as session:
        user = session.get(User, member.user_id)
        other = Project(name="elsewhere")
        session.add(other)
        session.flush()
        name = user.name
    api.app.post_json("/v3/auth/tokens", password_auth(name, "pw", "elsewhere"), status=401)


def test_requests_need_a_valid_token(api):
    resp = api.app.get("/compute/v2.1/servers", status=401)
    assert resp.json["unauthorized"]["code"] == 401
    resp = api.app.get("/networking/v2.0/networks", headers={"X-Auth-Token": "bogus"}, status=401)
    assert resp.json["NeutronError"]["message"].endswith("the token is not known")


def test_validate_and_revoke(api):
    member = api.make_member()
    headers = {"X-Auth-Token": api.admin.token, "X-Subject-Token": member.token}
    shown = api.app.get("/v3/auth/tokens", headers=headers).json["token"]
    assert shown["user"]["id"] == member.user_id
    api.app.head("/v3/auth/tokens", headers=headers, status=200)
    # A member may not look at someone else's token.
    api.app.get("/v3/auth/tokens", headers={"X-Auth-Token": member.token, "X-Subject-Token": api.admin.token},
                status=403)
    api.app.delete("/v3/auth/tokens", headers=headers, status=204)
    api.app.get("/compute/v2.1/flavors", headers=member.headers, status=401)
    api.app.get("/v3/auth/tokens", headers=headers, status=404)


def test_expired_token_is_refused(api):
    member = api.make_member()
    with api.db.begin() as session:
        session.execute(sa.update(Token).where(Token.token_hash == tokens.hash_secret(member.token))
                        .values(expires_at=datetime.datetime(2000, 1, 1)))
    resp = api.app.get("/compute/v2.1/flavors", headers=member.headers, status=401)
    assert "expired" in resp.json["unauthorized"]["message"]


def test_admin_manages_users_projects_and_roles(api):
    h = {"X-Auth-Token": api.admin.token}
    project = api.app.post_json("/v3/projects", {"project": {"name": "demo"}}, headers=h, status=201).json["project"]
    user = api.app.post_json("/v3/users", {"user": {"name": "alice", "password": "pw-alice",
                                                    "default_project_id": project["id"]}},
                             headers=h, status=201).json["user"]
    roles = {r["name"]: r["id"] for r in api.app.get("/v3/roles", headers=h).json["roles"]}
    api.app.put(f"/v3/projects/{project['id']}/users/{user['id']}/roles/{roles['member']}", headers=h, status=204)
    token = api.issue_token("alice", "pw-alice", None)  # default project scope
    shown = api.app.get("/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}).json
    assert shown["token"]["project"]["id"] == project["id"]
    assert [r["name"] for r in shown["token"]["roles"]] == ["member"]
    names = [u["name"] for u in api.app.get("/v3/users", headers=h).json["users"]]
    assert "alice" in names
    resp = api.app.post_json("/v3/users", {"user": {"name": "alice", "password": "x"}}, headers=h, status=409)
    assert "alice" in resp.json["error"]["message"]
    # Members may not administer identity.
    member = {"X-Auth-Token": token}
    resp = api.app.get("/v3/users", headers=member, status=403)
    assert "admin role" in resp.json["error"]["message"]
    api.app.post_json("/v3/projects", {"project": {"name": "x"}}, headers=member, status=403)
    assert api.app.get(f"/v3/users/{user['id']}", headers=member).json["user"]["name"] == "alice"


def test_bootstrap_is_idempotent_and_hashes_the_password(sqlite_db):
    first = bootstrap(sqlite_db, "one")
    second = bootstrap(sqlite_db, "two")
    assert first == second
    with sqlite_db.begin() as session:
        user = session.get(User, first["user_id"])
        assert user.password_hash.startswith("scrypt$") and "two" not in user.password_hash
        assert passwords.verify_password("two", user.password_hash)
        assert not passwords.verify_password("one", user.password_hash)
        assert session.scalar(sa.select(sa.func.count()).select_from(RoleAssignment)) == 2


def test_password_hash_rejects_malformed_hashes():
    stored = passwords.hash_password("pw")
    assert passwords.verify_password("pw", stored)
    assert not passwords.verify_password("pw", "plain")
    assert not passwords.verify_password("pw", "scrypt$x$y$z$a$b")
    assert passwords.hash_password("pw") != stored  # salted


def test_fabric_manage_bootstrap(tmp_path, capsys, monkeypatch):
    from fabric.cmd import manage
    from fabric.db import Database
    from fabric.db.models import Base

    url = f"sqlite:///{tmp_path / 'f.sqlite'}"
    Base.metadata.create_all(Database(url).engine)
    monkeypatch.setenv("FABRIC_DATABASE_URL", url)
    assert manage.main(["bootstrap", "--admin-password", "pw"]) == 0
    assert manage.main(["bootstrap", "--admin-password", "pw"]) == 0
    assert "has the admin role on project admin" in capsys.readouterr().out


def test_purge_drops_only_expired_tokens(api):
    member = api.make_member()
    with api.db.begin() as session:
        session.execute(sa.update(Token).where(Token.token_hash == tokens.hash_secret(member.token))
                        .values(expires_at=datetime.datetime(2000, 1, 1)))
    assert tokens.purge_expired(api.db) == 1
    api.app.get("/compute/v2.1/flavors", headers={"X-Auth-Token": api.admin.token})


def test_malformed_scope_and_domain_are_400_not_500(api):
    body = password_auth("admin", ADMIN_PASSWORD, None)
    body["auth"]["scope"] = {"project": "admin"}
    resp = api.app.post_json("/v3/auth/tokens", body, status=400)
    assert "auth.scope.project must be an object" in resp.json["error"]["message"]
    body = password_auth("admin", ADMIN_PASSWORD, "admin")
    body["auth"]["identity"]["password"]["user"]["domain"] = "Default"
    resp = api.app.post_json("/v3/auth/tokens", body, status=400)
    assert "a domain must be an object" in resp.json["error"]["message"]
    body = {"auth": {"identity": {"methods": ["token"], "token": "abc"}}}
    assert "'auth.identity.token'" in api.app.post_json("/v3/auth/tokens", body, status=400).json["error"]["message"]


def test_token_method_rescopes_an_existing_token(api):
    body = {"auth": {"identity": {"methods": ["token"], "token": {"id": api.admin.token}},
                     "scope": {"project": {"id": api.admin.project_id}}}}
    resp = api.app.post_json("/v3/auth/tokens", body, status=201)
    assert sorted(resp.json["token"]["methods"]) == ["password", "token"] and resp.headers["X-Subject-Token"] != api.admin.token
    body["auth"]["identity"]["token"]["id"] = "unknown"
    assert "not known" in api.app.post_json("/v3/auth/tokens", body, status=401).json["error"]["message"]


def test_validate_reads_user_project_and_roles_as_they_are_now(api):
    """A token speaks for its user's roles at each request; disabling the user or the
    project (or a junk token) ends it with 401."""
    member = api.make_member()
    info = tokens.validate(api.db, member.token)
    assert (info.user_id, info.project_id, info.role_names) == (member.user_id, member.project_id, ("member",))
    with api.db.begin() as session:
        admin_role = session.scalar(sa.select(Role.id).where(Role.name == "admin"))
        session.add(RoleAssignment(user_id=member.user_id, project_id=member.project_id, role_id=admin_role))
    assert tokens.validate(api.db, member.token).role_names == ("admin", "member")
    with api.db.begin() as session:
        session.execute(sa.update(Project).where(Project.id == member.project_id).values(enabled=False))
    resp = api.app.get("/compute/v2.1/flavors", headers=member.headers, status=401)
    assert "project is disabled" in resp.json["unauthorized"]["message"]
    with api.db.begin() as session:
        session.execute(sa.update(Project).where(Project.id == member.project_id).values(enabled=True))
        session.execute(sa.update(User).where(User.id == member.user_id).values(enabled=False))
    resp = api.app.get("/compute/v2.1/flavors", headers=member.headers, status=401)
    assert "user is disabled" in resp.json["unauthorized"]["message"]
    resp = api.app.get("/compute/v2.1/flavors", headers={"X-Auth-Token": "junk"}, status=401)
    assert "not known" in resp.json["unauthorized"]["message"]
