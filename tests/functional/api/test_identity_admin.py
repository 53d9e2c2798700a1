"""An operator's identity workflow through the real `openstack` CLI against a running
``fabric-api`` process (its own PostgreSQL database and RabbitMQ vhost): domains,
projects, users, groups and membership, role grants on a project, a domain and the
system, role assignment listings, token revocation on disable and password change,
lock-out, the service catalog, application credentials, and deletes."""

from __future__ import annotations

import pytest

from tests.fixtures.cli import openstack_env
from tests.fixtures.processes import wait_until
from tests.functional.api.identity_api import ADMIN_PASSWORD as PASSWORD
from tests.functional.api.identity_api import running_api

pytestmark = pytest.mark.functional

LOCKOUT_ATTEMPTS, LOCKOUT_SECONDS = 3, 2


@pytest.fixture(scope="module")
def identity_api(database_servers, tmp_path_factory, signing_keys):
    """A fabric-api process over PostgreSQL with lock-out after 3 wrong passwords for 2 s."""
    with running_api(database_servers, tmp_path_factory.mktemp("identity"), signing_keys,
                     security_compliance={"lockout_failure_attempts": LOCKOUT_ATTEMPTS,
                                          "lockout_duration": LOCKOUT_SECONDS}) as auth_url:
        yield auth_url


def _env(auth_url: str, user: str, password: str, project: str, domain: str = "Default") -> dict:
    return openstack_env(auth_url, user, password, project) | {"OS_USER_DOMAIN_NAME": domain,
                                                               "OS_PROJECT_DOMAIN_NAME": domain}


def _refused_sign_in(cli, env: dict, message: str) -> None:
    """``openstack token issue`` with ``env`` must fail with the API's 401 and ``message``
    (keystoneauth keeps sign-in requests out of the --debug log, but reports the answer)."""
    rc, out, err = cli.run(["token", "issue", "-f", "json"], env)
    assert rc != 0, f"signing in unexpectedly succeeded:\n{out}"
    assert "HTTP 401" in err and message in err, err[-1500:]


def test_operator_identity_workflow(identity_api, osc, osc_fails, openstack_cli):
    admin = openstack_env(identity_api, "admin", PASSWORD, "admin")

    def refused(env: dict, message: str) -> None:
        _refused_sign_in(openstack_cli, env, message)

    # Domain, project, user, group; membership.
    domain = osc(admin, "domain", "create", "--description", "engineering", "eng")
    assert domain["name"] == "eng" and domain["enabled"] is True
    project = osc(admin, "project", "create", "--domain", "eng", "web")
    assert project["domain_id"] == domain["id"]
    user = osc(admin, "user", "create", "--domain", "eng", "--password", "alice-pw", "alice")
    group = osc(admin, "group", "create", "--domain", "eng", "devs")
    osc(admin, "group", "add", "user", "--group-domain", "eng", "--user-domain", "eng", "devs", "alice",
        json_out=False)
    contains = osc(admin, "group", "contains", "user", "--group-domain", "eng", "--user-domain", "eng",
                   "devs", "alice", json_out=False)
    assert contains.strip() == "alice in group devs"
    osc_fails(admin, 409, "already exists", "domain", "create", "eng")

    # Roles: the group on the project, the user on the domain and the system.
    osc(admin, "role", "add", "--group", group["id"], "--project", project["id"], "member", json_out=False)
    osc(admin, "role", "add", "--user", user["id"], "--domain", domain["id"], "reader", json_out=False)
    osc(admin, "role", "add", "--system", "all", "--user", user["id"], "admin", json_out=False)
    by_project = osc(admin, "role", "assignment", "list", "--project", project["id"], "--names")
    assert [(a["Role"], a["Group"], a["Project"]) for a in by_project] == [("member", "devs@eng", "web@eng")]
    effective = osc(admin, "role", "assignment", "list", "--user", user["id"], "--effective")
    assert sorted((a["Role"] and a["Project"] or a["Domain"] or a["System"]) for a in effective) == sorted(
        [project["id"], domain["id"], "all"])
    system = osc(admin, "role", "assignment", "list", "--system", "all", "--user", user["id"], "--names")
    assert [(a["Role"], a["System"]) for a in system] == [("admin", "all")]

    # alice signs in through her group's grant; with system scope, her system admin role
    # lets her list users.
    alice = _env(identity_api, "alice", "alice-pw", "web", "eng")
    token = osc(alice, "token", "issue")
    assert token["project_id"] == project["id"]
    assert [p["Name"] for p in osc(alice, "project", "list", "--my-projects")] == ["web"]
    alice_system = {k: v for k, v in alice.items() if not k.startswith("OS_PROJECT")} | {"OS_SYSTEM_SCOPE": "all"}
    assert "alice" in [u["Name"] for u in osc(alice_system, "user", "list", "--domain", "eng")]

    # Disabling alice rejects her token (and re-enabling does not bring it back).
    token_env = {"OS_AUTH_URL": identity_api, "OS_AUTH_TYPE": "token", "OS_TOKEN": token["id"],
                 "OS_PROJECT_ID": project["id"], "OS_IDENTITY_API_VERSION": "3"}
    osc(token_env, "token", "issue")
    osc(admin, "user", "set", "--disable", user["id"], json_out=False)
    refused(alice, "disabled")
    osc(admin, "user", "set", "--enable", user["id"], json_out=False)
    refused(token_env, "revoked")

    # A password change (by the admin, then by alice herself) rejects older tokens.
    old = osc(alice, "token", "issue")["id"]
    osc(admin, "user", "set", "--password", "alice-pw2", user["id"], json_out=False)
    refused(token_env | {"OS_TOKEN": old}, "revoked")
    alice = _env(identity_api, "alice", "alice-pw2", "web", "eng")
    old = osc(alice, "token", "issue")["id"]
    osc(alice, "user", "password", "set", "--original-password", "alice-pw2", "--password", "alice-pw3",
        json_out=False)
    refused(token_env | {"OS_TOKEN": old}, "revoked")
    alice = _env(identity_api, "alice", "alice-pw3", "web", "eng")

    # Lock-out: after 3 wrong passwords even the right one is refused, until 2 s pass.
    for _ in range(LOCKOUT_ATTEMPTS):
        refused(alice | {"OS_PASSWORD": "wrong"}, "password is wrong")
    refused(alice, "locked")
    wait_until(lambda: openstack_cli.run(["token", "issue", "-f", "json"], alice)[0] == 0,
               timeout=LOCKOUT_SECONDS + 10, interval=0.5, what="the lock-out to end")

    # Services and endpoints, served in tokens from the database.
    service = osc(admin, "service", "create", "--name", "designate", "dns")
    endpoint = osc(admin, "endpoint", "create", "--region", "RegionOne", "dns", "public", "http://127.0.0.1:9001")
    assert ("dns", "public", "http://127.0.0.1:9001") in [(e["Service Type"], e["Interface"], e["URL"])
                                                           for e in osc(admin, "endpoint", "list")]
    catalog = osc(admin, "catalog", "list")
    assert "dns" in [c["Type"] for c in catalog] and "compute" in [c["Type"] for c in catalog]
    osc(admin, "endpoint", "delete", endpoint["id"], json_out=False)
    osc(admin, "service", "delete", service["id"], json_out=False)
    assert "dns" not in [s["Type"] for s in osc(admin, "service", "list")]

    # Application credentials: made by alice, used to sign in, deleted.
    cred = osc(alice, "application", "credential", "create", "--role", "member", "ci")
    assert cred["Secret"] and cred["Project ID"] == project["id"]
    assert [r["name"] for r in cred["Roles"]] == ["member"]
    assert [c["Name"] for c in osc(alice, "application", "credential", "list")] == ["ci"]
    app_env = {"OS_AUTH_URL": identity_api, "OS_AUTH_TYPE": "v3applicationcredential",
               "OS_APPLICATION_CREDENTIAL_ID": cred["ID"], "OS_APPLICATION_CREDENTIAL_SECRET": cred["Secret"],
               "OS_IDENTITY_API_VERSION": "3"}
    assert osc(app_env, "token", "issue")["project_id"] == project["id"]
    refused(app_env | {"OS_APPLICATION_CREDENTIAL_SECRET": "nope"}, "secret is wrong")
    osc(alice, "application", "credential", "delete", "ci", json_out=False)
    refused(app_env, "wrong")

    # Deletes: the enabled domain is refused, then it goes with everything in it.
    osc(admin, "role", "remove", "--system", "all", "--user", user["id"], "admin", json_out=False)
    osc(admin, "group", "remove", "user", "--group-domain", "eng", "--user-domain", "eng", "devs", "alice",
        json_out=False)
    osc(admin, "group", "delete", "--domain", "eng", "devs", json_out=False)
    osc(admin, "user", "delete", "--domain", "eng", "alice", json_out=False)
    osc_fails(admin, 403, "disable it", "domain", "delete", "eng")
    osc(admin, "domain", "set", "--disable", "eng", json_out=False)
    osc(admin, "domain", "delete", "eng", json_out=False)
    assert "eng" not in [d["Name"] for d in osc(admin, "domain", "list")]
    assert "web" not in [p["Name"] for p in osc(admin, "project", "list")]
