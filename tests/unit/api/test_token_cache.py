"""The API processes' cache of validated tokens (fabric.api.tokens.ValidatedTokens): a change
committed anywhere is honoured by every process's next request, because each such write bumps
the identity generation in its own transaction."""

from __future__ import annotations

import dataclasses
import datetime
import uuid

import pytest
import sqlalchemy as sa
import webtest
from sqlalchemy.sql import util as sql_util

from fabric import exception
from fabric.api import identity_lockout as lockout
from fabric.api import tokens
from fabric.api.app import build_app
from fabric.db.models import Domain, Token, User
from fabric.db.models.identity import TOKEN_CHECK_TABLES, IdentityGeneration
from fabric.db.types import utcnow
from tests.fixtures.api import password_auth


def _admin(api) -> dict:
    return api.admin.headers


def _generation(db) -> int:
    with db.begin() as session:
        return session.scalar(sa.select(IdentityGeneration.generation))


def _role(api, name: str) -> str:
    return api.app.post_json("/v3/roles", {"role": {"name": f"{name}-{uuid.uuid4().hex[:6]}"}},
                             headers=_admin(api), status=201).json["role"]["id"]


def _role_id(api, name: str) -> str:
    return api.app.get(f"/v3/roles?name={name}", headers=_admin(api)).json["roles"][0]["id"]


class World:
    """A member of a project holding roles every way there is (directly, through a group,
    implied, inherited from the domain) with a project token and an application credential's
    token; each change below takes something away."""

    def __init__(self, api) -> None:
        self.api = api
        member = api.make_member()
        self.user, self.project, self.token = member.user_id, member.project_id, member.token
        self.member_role = _role_id(api, "member")
        self.group_role, self.implied_role, self.inherited_role = _role(api, "g"), _role(api, "i"), _role(api, "h")
        self.group = api.app.post_json("/v3/groups", {"group": {"name": f"g-{uuid.uuid4().hex[:6]}"}},
                                       headers=_admin(api), status=201).json["group"]["id"]
        api.app.put(f"/v3/groups/{self.group}/users/{self.user}", headers=_admin(api))
        api.app.put(f"/v3/projects/{self.project}/groups/{self.group}/roles/{self.group_role}", headers=_admin(api))
        api.app.put(f"/v3/roles/{self.member_role}/implies/{self.implied_role}", headers=_admin(api), status=201)
        api.app.put(self.inherited_path, headers=_admin(api))
        cred = api.app.post_json(f"/v3/users/{self.user}/application_credentials",
                                 {"application_credential": {"name": "ci"}}, headers={"X-Auth-Token": self.token},
                                 status=201).json["application_credential"]
        self.cred_id = cred["id"]
        self.cred_token = api.app.post_json("/v3/auth/tokens", {"auth": {"identity": {
            "methods": ["application_credential"],
            "application_credential": {"id": cred["id"], "secret": cred["secret"]}}}}).headers["X-Subject-Token"]

    @property
    def inherited_path(self) -> str:
        return (f"/v3/OS-INHERIT/domains/default/users/{self.user}/roles/{self.inherited_role}"
                "/inherited_to_projects")


def _set_domain_enabled(api, world: World, enabled: bool) -> None:
    with api.db.begin() as session:  # through the ORM's flush, not the API
        session.get(Domain, "default").enabled = enabled


CHANGES = {
    "token revoked": lambda api, w: api.app.delete("/v3/auth/tokens", headers={
        **_admin(api), "X-Subject-Token": w.token}),
    "user disabled": lambda api, w: api.app.patch_json(f"/v3/users/{w.user}", {"user": {"enabled": False}},
                                                       headers=_admin(api)),
    "user deleted": lambda api, w: api.app.delete(f"/v3/users/{w.user}", headers=_admin(api)),
    "user renamed": lambda api, w: api.app.patch_json(f"/v3/users/{w.user}", {"user": {"name": "renamed"}},
                                                      headers=_admin(api)),
    "password changed": lambda api, w: api.app.post_json(f"/v3/users/{w.user}/password", {
        "user": {"password": "new-pw-123", "original_password": "pw"}}, headers={"X-Auth-Token": w.token}),
    "project disabled": lambda api, w: api.app.patch_json(f"/v3/projects/{w.project}",
                                                          {"project": {"enabled": False}}, headers=_admin(api)),
    "domain disabled": lambda api, w: _set_domain_enabled(api, w, False),
    "direct role revoked": lambda api, w: api.app.delete(
        f"/v3/projects/{w.project}/users/{w.user}/roles/{w.member_role}", headers=_admin(api)),
    "group's role revoked": lambda api, w: api.app.delete(
        f"/v3/projects/{w.project}/groups/{w.group}/roles/{w.group_role}", headers=_admin(api)),
    "left the group": lambda api, w: api.app.delete(f"/v3/groups/{w.group}/users/{w.user}", headers=_admin(api)),
    "group deleted": lambda api, w: api.app.delete(f"/v3/groups/{w.group}", headers=_admin(api)),
    "role deleted": lambda api, w: api.app.delete(f"/v3/roles/{w.group_role}", headers=_admin(api)),
    "role renamed": lambda api, w: api.app.patch_json(f"/v3/roles/{w.group_role}", {"role": {"name": "other"}},
                                                      headers=_admin(api)),
    "implied role removed": lambda api, w: api.app.delete(
        f"/v3/roles/{w.member_role}/implies/{w.implied_role}", headers=_admin(api)),
    "inherited grant revoked": lambda api, w: api.app.delete(w.inherited_path, headers=_admin(api)),
}


def _outcome(check, db, secret):
    try:
        return check(db, secret)
    except exception.NotAuthenticated:
        return "401"


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_change_in_one_process_is_seen_by_anothers_next_check(api, change):
    """Another process's cache, warm with the token, answers after the change exactly as the
    database does, and that answer is not the one it had cached."""
    world = World(api)
    other = tokens.ValidatedTokens()
    before = other.validate(api.db, world.token)
    assert other.validate(api.db, world.token) is before  # a hit
    CHANGES[change](api, world)
    after = _outcome(other.validate, api.db, world.token)
    assert after == _outcome(tokens.validate, api.db, world.token)
    assert after != before


def test_an_application_credential_deleted_is_seen_at_once(api):
    world = World(api)
    other = tokens.ValidatedTokens()
    assert other.validate(api.db, world.cred_token).app_cred_id == world.cred_id
    api.app.delete(f"/v3/users/{world.user}/application_credentials/{world.cred_id}", headers=_admin(api))
    with pytest.raises(exception.NotAuthenticated):
        other.validate(api.db, world.cred_token)


def test_a_revoke_through_one_app_is_honoured_by_the_other_on_one_database(api):
    """Two apps (as two API processes) on one database: the second has the token cached."""
    second = webtest.TestApp(build_app(api.settings, api.db, api.recorder.clients))
    member = api.make_member()
    for _ in range(2):
        second.get("/v3/auth/projects", headers=member.headers, status=200)
    api.app.delete("/v3/auth/tokens", headers={**_admin(api), "X-Subject-Token": member.token}, status=204)
    second.get("/v3/auth/projects", headers=member.headers, status=401)


def test_a_hit_costs_one_read_and_any_identity_write_ends_it(api):
    member = api.make_member()
    cache = tokens.ValidatedTokens()
    cache.validate(api.db, member.token)
    statements: list[str] = []
    listener = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
    sa.event.listen(api.db.engine, "before_cursor_execute", listener)
    try:
        cache.validate(api.db, member.token)
        assert len(statements) == 1 and "identity_generation" in statements[0]
        api.make_member()  # a new user and grant elsewhere: a bump, so a full check again
        statements.clear()
        cache.validate(api.db, member.token)
        assert len(statements) > 1
    finally:
        sa.event.remove(api.db.engine, "before_cursor_execute", listener)


def test_an_expired_cached_token_is_refused(api):
    """A kept token past its expiry goes back to the database (which refuses it), with no bump."""
    member = api.make_member()
    cache = tokens.ValidatedTokens()
    info = cache.validate(api.db, member.token)
    expired = utcnow() - datetime.timedelta(seconds=1)
    cache._entries[info.token_hash] = (cache._generation, dataclasses.replace(info, expires_at=expired))
    with api.db.engine.connect() as conn:  # not a bump: a raw row change no API would make
        conn.exec_driver_sql("UPDATE tokens SET expires_at = ? WHERE token_hash = ?",
                             (expired.replace(tzinfo=None).isoformat(" "), info.token_hash))
        conn.commit()
    with pytest.raises(exception.NotAuthenticated, match="expired"):
        cache.validate(api.db, member.token)


def test_the_token_check_reads_only_tables_whose_writes_bump(api):
    """Every table any kind of token check reads (project, domain, system and application
    credential scopes, with groups, implied and inherited roles) is in TOKEN_CHECK_TABLES: a
    table added to the check without its writes bumping fails here."""
    world = World(api)
    admin_role = _role_id(api, "admin")
    api.app.put(f"/v3/domains/default/users/{api.admin.user_id}/roles/{admin_role}", headers=_admin(api))
    api.app.put(f"/v3/system/users/{api.admin.user_id}/roles/{admin_role}", headers=_admin(api))
    domain_token = api.app.post_json("/v3/auth/tokens", {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {"name": "admin", "domain": {"id": "default"},
                                                                    "password": "s3cret-admin"}}},
        "scope": {"domain": {"id": "default"}}}}, status=201).headers["X-Subject-Token"]
    system_token = api.app.post_json("/v3/auth/tokens", {"auth": {
        "identity": password_auth("admin", "s3cret-admin", None)["auth"]["identity"],
        "scope": {"system": {"all": True}}}}, status=201).headers["X-Subject-Token"]
    read: set[str] = set()

    def record(conn, statement, multiparams, params, options):
        read.update(t.name for t in sql_util.find_tables(statement, include_joins=True, include_aliases=True)
                    if isinstance(t, sa.Table))

    sa.event.listen(api.db.engine, "before_execute", record)
    try:
        for secret in (world.token, world.cred_token, domain_token, system_token):
            tokens.validate(api.db, secret)
    finally:
        sa.event.remove(api.db.engine, "before_execute", record)
    assert {"tokens", "role_grants", "implied_roles", "group_memberships"} <= read
    assert read <= TOKEN_CHECK_TABLES


@pytest.mark.parametrize("table", sorted(TOKEN_CHECK_TABLES))
def test_every_kind_of_write_to_a_token_check_table_bumps_in_its_transaction(api, table):
    target = IdentityGeneration.metadata.tables[table]
    start = _generation(api.db)
    with api.db.engine.begin() as conn:
        conn.execute(target.delete().where(sa.false()))
        conn.execute(target.update().where(sa.false()).values({target.primary_key.columns[0].name: "x"}))
    assert _generation(api.db) == start + 2
    with pytest.raises(RuntimeError), api.db.engine.begin() as conn:
        conn.execute(target.delete().where(sa.false()))
        raise RuntimeError("rolled back")
    assert _generation(api.db) == start + 2  # the bump went with its transaction


def test_a_new_token_and_a_wrong_password_bump_nothing(api):
    """Issuing tokens and counting wrong passwords (lock-out) leave issued tokens as they were:
    a login storm or a password guesser does not empty every process's cache."""
    start = _generation(api.db)
    api.issue_token("admin", "s3cret-admin", "admin")
    lockout.record_failure(api.db, api.admin.user_id, lockout.Policy(attempts=5))
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Token)) >= 2
        assert session.get(User, api.admin.user_id).failed_auth_count == 1
    assert _generation(api.db) == start
