"""The LDAP identity backend against a real ``slapd`` this module starts on a loopback
port with its own configuration and data directory (stopped by its own PID), driven by
the real `openstack` CLI through a running ``fabric-api``: an LDAP user gets a token by
its directory password, a wrong one is refused, an LDAP group's role grant gives its
members access, and writes to the LDAP domain are refused."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest
import requests

from tests.fixtures.cli import openstack_env
from tests.fixtures.databases import unavailable
from tests.fixtures.processes import free_port, stop_process, wait_until
from tests.functional.api.identity_api import ADMIN_PASSWORD, running_api

pytestmark = pytest.mark.functional

SUFFIX = "dc=fabric,dc=test"
ROOT_DN, ROOT_PW = f"cn=admin,{SUFFIX}", "ldap-admin-pw"

_CONFIG = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {dir}/slapd.pid
database mdb
maxsize 10485760
suffix "{suffix}"
rootdn "{root_dn}"
rootpw {root_pw}
directory {dir}/data
"""

_ENTRIES = f"""\
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: fabric
dc: fabric

dn: ou=Users,{SUFFIX}
objectClass: organizationalUnit
ou: Users

dn: ou=Groups,{SUFFIX}
objectClass: organizationalUnit
ou: Groups

dn: cn=lucy,ou=Users,{SUFFIX}
objectClass: inetOrgPerson
cn: lucy
sn: lucy
userPassword: lucy-pw

dn: cn=mark,ou=Users,{SUFFIX}
objectClass: inetOrgPerson
cn: mark
sn: mark
userPassword: mark-pw

dn: cn=ops,ou=Groups,{SUFFIX}
objectClass: groupOfNames
cn: ops
ou: ops
member: cn=lucy,ou=Users,{SUFFIX}
"""


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def slapd(tmp_path_factory):
    """A slapd on 127.0.0.1 with two users (lucy in group ops, mark in none); yields its URL."""
    binary = shutil.which("slapd", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if binary is None or shutil.which("ldapadd") is None:
        unavailable("slapd and ldapadd are not installed (Debian: slapd ldap-utils; tools/test installs them)")
    directory = tmp_path_factory.mktemp("slapd")
    (directory / "data").mkdir()
    conf = directory / "slapd.conf"
    conf.write_text(_CONFIG.format(dir=directory, suffix=SUFFIX, root_dn=ROOT_DN, root_pw=ROOT_PW))
    port = free_port()
    url = f"ldap://127.0.0.1:{port}/"
    log = open(directory / "slapd.log", "wb")  # noqa: SIM115 - closed after the daemon stops
    # -d keeps slapd in the foreground, so the PID is its own and it stops with it.
    popen = subprocess.Popen([binary, "-f", str(conf), "-h", url, "-d", "0"], stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: popen.poll() is not None or _listening(port), timeout=20, what="slapd to listen")
        assert popen.poll() is None, (directory / "slapd.log").read_text()
        subprocess.run(["ldapadd", "-x", "-H", url, "-D", ROOT_DN, "-w", ROOT_PW], input=_ENTRIES.encode(),
                       check=True, capture_output=True)
        yield url
    finally:
        stop_process(popen)
        log.close()


@pytest.fixture(scope="module")
def ldap_api(slapd, database_servers, tmp_path_factory, signing_keys):
    """A fabric-api process whose domain ``corp`` takes its users and groups from the slapd."""
    with running_api(database_servers, tmp_path_factory.mktemp("ldap-api"), signing_keys, ldap={
            "url": slapd, "domain": "corp", "user": ROOT_DN, "password": ROOT_PW,
            "user_tree_dn": f"ou=Users,{SUFFIX}", "user_id_attribute": "cn", "user_name_attribute": "sn",
            "group_tree_dn": f"ou=Groups,{SUFFIX}", "group_id_attribute": "cn",
            "group_name_attribute": "ou"}) as auth_url:
        yield auth_url


def _corp(auth_url: str, user: str, password: str, project: str | None = None) -> dict:
    env = openstack_env(auth_url, user, password, project or "") | {"OS_USER_DOMAIN_NAME": "corp"}
    if project is None:
        env = {k: v for k, v in env.items() if not k.startswith("OS_PROJECT")}
    return env


def _refused_sign_in(cli, env: dict, message: str) -> None:
    rc, out, err = cli.run(["token", "issue", "-f", "json"], env)
    assert rc != 0, f"signing in unexpectedly succeeded:\n{out}"
    assert "HTTP 401" in err and message in err, err[-1500:]


def test_ldap_users_sign_in_by_bind_and_groups_grant_roles(ldap_api, osc, osc_fails, openstack_cli):
    admin = openstack_env(ldap_api, "admin", ADMIN_PASSWORD, "admin")

    # An LDAP user gets a token with its directory password; a wrong one, or an unknown
    # user, is refused.
    token = osc(_corp(ldap_api, "lucy", "lucy-pw"), "token", "issue")
    assert token["user_id"]
    _refused_sign_in(openstack_cli, _corp(ldap_api, "lucy", "mark-pw"), "password is wrong")
    _refused_sign_in(openstack_cli, _corp(ldap_api, "nobody", "x"), "password is wrong")
    # An empty password would be an anonymous bind to LDAP, which "succeeds": never a sign-in.
    empty = requests.post(f"{ldap_api}/auth/tokens", timeout=30, json={"auth": {"identity": {
        "methods": ["password"], "password": {"user": {"name": "lucy", "domain": {"name": "corp"}, "password": ""}}}}})
    assert empty.status_code == 401, empty.text

    # Users and groups are listed from the directory.
    assert sorted(u["Name"] for u in osc(admin, "user", "list", "--domain", "corp")) == ["lucy", "mark"]
    assert [g["Name"] for g in osc(admin, "group", "list", "--domain", "corp")] == ["ops"]
    members = osc(admin, "user", "list", "--group", "ops", "--domain", "corp")
    assert [u["Name"] for u in members] == ["lucy"]

    # The LDAP group's grant on a SQL project gives lucy (a member) access, not mark.
    osc(admin, "project", "create", "ops-project")
    osc(admin, "role", "add", "--group", "ops", "--group-domain", "corp", "--project", "ops-project", "member",
        json_out=False)
    scoped = osc(_corp(ldap_api, "lucy", "lucy-pw", "ops-project"), "token", "issue")
    assert scoped["project_id"]
    _refused_sign_in(openstack_cli, _corp(ldap_api, "mark", "mark-pw", "ops-project"), "no role")

    # The directory is read-only: a clear 403 naming the domain.
    osc_fails(admin, 403, "takes its users and groups from LDAP", "user", "create", "--domain", "corp",
              "--password", "x", "eve")
    osc_fails(admin, 403, "takes its users and groups from LDAP", "group", "remove", "user",
              "--group-domain", "corp", "--user-domain", "corp", "ops", "lucy")
