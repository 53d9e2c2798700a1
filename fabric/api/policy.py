"""Who may call each API operation: the one policy table, keyed by (HTTP method, route
template), and the check the request middleware (:mod:`fabric.api.middleware`) makes with it
once the route is known.

Roles are Keystone's defaults, which imply one another: ``admin`` implies ``member``, which
implies ``reader`` (fabric grants them as plain roles, so a rule names every role it admits).
A :class:`Rule` says which roles may call an operation:

- PUBLIC: no token at all (version documents, the OpenAPI document, issuing a token).
- ANY: any valid token, whatever its scope and roles (one's own tokens, keypairs, credentials;
  the shared catalogues: flavors, roles, domains, services, endpoints, regions, zones).
- READER: reader, member or admin on the token's scope: reading a project's resources.
- MEMBER: member or admin: creating, changing and deleting a project's resources.
- ADMIN: the cloud's admin (the admin role on a project or the system; a domain's admin role
  is about that domain only): the cloud's own configuration and every project's resources.

A :class:`Target` says whose resource the operation acts on, and what a caller of another
project (or another user) gets. Where the target is named by the path (``{project_id}``,
``{user_id}``) this module checks it too (403). Where it is a row the path names by its id,
the handlers' lookups answer 404 for another project's rows, as Nova, Neutron and Glance do,
so that the existence of another project's resources does not leak; listings show the
caller's project only (admins: every project's, where the API has a filter for it).

These rules compare with the services' own defaults (Nova's ``project_reader_api`` /
``project_member_api``, Neutron's ``ADMIN_OR_PROJECT_READER`` / ``_MEMBER``, Glance's image
rules, Keystone's ``identity:*`` with ``admin_required`` and ``owner``). Where fabric differs
on purpose: reading the identity catalogues (roles, domains, services, endpoints, regions)
is open to any token, as clients resolve names through them; reading a project
(``GET /v3/projects/{id}``) is for that project's tokens and admins.

Checks that stay in the handlers because they depend on the body, the query or the row, not
on the operation alone:

- only an admin may: make an image public (``visibility``); set a network's ``provider:*``
  (but ``provider:network_type`` routed), ``shared`` or ``router:external``; make a shared or
  default subnet pool; create networking resources for another project (``project_id`` /
  ``tenant_id`` in the body); list another user's keypairs (``?user_id``); check or revoke
  another user's token (``X-Subject-Token``); cold-migrate a server (the ``migrate`` action,
  :mod:`fabric.compute.api`); lift a lock an admin set (``unlock``); delete a project's
  default security group (409 for others); see every project's servers, server groups or
  limits (``all_tenants``, ``all_projects``, ``tenant_id``: ignored for others);
- a locked server refuses its project's changes (409), an image's read-only attributes
  are refused (403), a protected image is not deleted (403), the default domain is never
  disabled or deleted (403), the LDAP domain's users and groups are read-only (403);
- a resource of another project named in a body is not found (a server group hint, a
  network, subnet, port, security group, flavor or image), or refused where it is visible but
  not the caller's (a shared network's subnet or port: 403; another project's port for a
  floating IP: 403); an EC2 credential a user makes for themselves needs a role on its project
  (403), and another user's credentials are not found (``/v3/credentials``: 404);
- a project-scoped token is needed wherever an operation acts in a project (an unscoped or
  domain-scoped token: 403, "this request needs a project-scoped token"); a token issued
  for an application credential cannot make another credential nor be re-scoped (403).

OPTIONS on any route is falcon's answer listing the allowed methods (no token needed, as
for a CORS preflight); a method a route does not answer is 405. Every other operation the
app registers must be in :data:`TABLE`: one missing is refused (403) for everyone.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

from fabric import exception
from fabric.context import RequestContext

ADMIN_ROLE, MEMBER_ROLE, READER_ROLE = "admin", "member", "reader"
#: The roles bootstrap makes (fabric.api.bootstrap), strongest first.
ROLES = (ADMIN_ROLE, MEMBER_ROLE, READER_ROLE)


class Rule(enum.Enum):
    """Which callers may call an operation (see the module docstring)."""

    PUBLIC = "public"
    ANY = "any"
    READER = "reader"
    MEMBER = "member"
    ADMIN = "admin"

    @property
    def roles(self) -> frozenset[str]:
        """The role names that satisfy the rule (empty: none is needed)."""
        return {Rule.READER: frozenset(ROLES), Rule.MEMBER: frozenset((ADMIN_ROLE, MEMBER_ROLE)),
                Rule.ADMIN: frozenset((ADMIN_ROLE,))}.get(self, frozenset())

    @property
    def needs(self) -> str:
        """What the rule needs, as a sentence's end."""
        return {Rule.PUBLIC: "no token", Rule.ANY: "any valid token",
                Rule.READER: "the reader, member or admin role on the token's project",
                Rule.MEMBER: "the member or admin role on the token's project",
                Rule.ADMIN: "the admin role"}[self]

    def admits(self, context: RequestContext) -> bool:
        if self in (Rule.PUBLIC, Rule.ANY):
            return True
        if self is Rule.ADMIN:
            return context.is_admin
        return context.is_admin or bool(self.roles & set(context.roles))


class Target(enum.Enum):
    """Whose resource an operation acts on; ``other`` is what a caller of another project
    (or, for the user targets, another user) gets; ``other_status`` its HTTP status."""

    #: Nothing of a project's: a shared catalogue, or the caller's own things.
    NONE = ("none", "", None)
    #: A listing: the caller's project's rows only (admins: every project's, where asked).
    LISTED = ("listed", "lists only its own project's", None)
    #: One row of a project, named by its id in the path (checked by the handler's lookup).
    OWN = ("own", "another project's is not found (404)", 404)
    #: As OWN, but a shared or public row of another project is readable, not changeable (403).
    OWN_OR_SHARED = ("own-or-shared", "another project's is not found (404) unless shared or public; "
                                      "those are read-only (403)", 404)
    #: ``{project_id}`` in the path: the token's own project, or any for an admin (checked here).
    PROJECT = ("project", "another project is refused (403)", 403)
    #: ``{user_id}`` in the path: the token's own user, or any for an admin (checked here).
    USER = ("user", "another user is refused (403)", 403)
    #: ``{user_id}`` in the path: the token's own user only, admins included (checked here).
    SELF = ("self", "another user is refused (403), admins included", 403)

    def __init__(self, key: str, other: str, other_status: int | None) -> None:
        self.key, self.other, self.other_status = key, other, other_status


@dataclasses.dataclass(frozen=True)
class Policy:
    """One operation's rule, target, and the action its refusals name ("creating flavors")."""

    rule: Rule
    action: str
    target: Target = Target.NONE

    def describe(self) -> str:
        """The policy as a sentence (the OpenAPI document's)."""
        sentence = f"Needs {self.rule.needs}."
        if self.target.other:
            sentence += f" {self.target.other[:1].upper()}{self.target.other[1:]}."
        return sentence

    def check(self, context: RequestContext, params: Mapping[str, str]) -> None:
        """Forbidden (naming the action and what it needs) unless the caller passes the rule
        and, for a project or user in the path, is that project or user (or an admin)."""
        if not self.rule.admits(context):
            raise exception.Forbidden(reason=f"{self.action} requires {self.rule.needs}")
        if self.target is Target.PROJECT:
            project_id = params["project_id"]
            if project_id != context.project_id and not context.is_admin:
                raise exception.Forbidden(reason=f"{self.action} of project {project_id} is for that project's "
                                                 f"tokens and admins")
        elif self.target in (Target.USER, Target.SELF):
            user_id = params["user_id"]
            admin_may = self.target is Target.USER and context.is_admin
            if user_id != context.user_id and not admin_may:
                only = "that user" if self.target is Target.SELF else "that user or an admin"
                raise exception.Forbidden(reason=f"{self.action} of user {user_id} is for {only} only")


PUBLIC, ANY, READER, MEMBER, ADMIN = Rule.PUBLIC, Rule.ANY, Rule.READER, Rule.MEMBER, Rule.ADMIN
LISTED, OWN, SHARED = Target.LISTED, Target.OWN, Target.OWN_OR_SHARED
PROJECT, USER, SELF = Target.PROJECT, Target.USER, Target.SELF
_C, _I, _N, _F = "/compute/v2.1", "/image/v2", "/networking/v2.0", "/fabric/v1"


def _crud(path: str, item: str, what: str, target: Target = OWN, *, put: bool = True) -> dict:
    """A project's collection at ``path`` and its items at ``path/{item}``: readers list and
    show, members create, change and delete (Nova's and Neutron's project defaults)."""
    rows = {("GET", path): Policy(READER, f"listing {what}s", LISTED),
            ("POST", path): Policy(MEMBER, f"creating {what}s"),
            ("GET", f"{path}/{{{item}}}"): Policy(READER, f"showing {what}s", target),
            ("DELETE", f"{path}/{{{item}}}"): Policy(MEMBER, f"deleting {what}s", target)}
    if put:
        rows[("PUT", f"{path}/{{{item}}}")] = Policy(MEMBER, f"changing {what}s", target)
    return rows


def _grants() -> dict:
    rows = {}
    for prefix in ("/v3/projects/{project_id}", "/v3/domains/{domain_id}", "/v3/system"):
        for actor in ("user", "group"):
            path = f"{prefix}/{actor}s/{{{actor}_id}}/roles"
            rows[("GET", path)] = Policy(ADMIN, "listing role grants")
            for method, action in (("PUT", "granting roles"), ("HEAD", "checking role grants"),
                                   ("GET", "checking role grants"), ("DELETE", "revoking roles")):
                rows[(method, f"{path}/{{role_id}}")] = Policy(ADMIN, action)
    for target in ("project", "domain"):  # grants inherited to projects (OS-INHERIT)
        for actor in ("user", "group"):
            path = f"/v3/OS-INHERIT/{target}s/{{{target}_id}}/{actor}s/{{{actor}_id}}/roles"
            if target == "domain":
                rows[("GET", f"{path}/inherited_to_projects")] = Policy(ADMIN, "listing inherited role grants")
            for method, action in (("PUT", "granting inherited roles"), ("HEAD", "checking inherited role grants"),
                                   ("GET", "checking inherited role grants"),
                                   ("DELETE", "revoking inherited roles")):
                rows[(method, f"{path}/{{role_id}}/inherited_to_projects")] = Policy(ADMIN, action)
    return rows


_V = "/volume/v3"
_VERSIONS = ("/", "/v3", "/compute", "/compute/v2", _C, "/image", "/image/versions", "/networking", _N, "/volume", _V)

#: (method, route template) -> its policy: every operation the API answers.
TABLE: dict[tuple[str, str], Policy] = {
    # --- public ---------------------------------------------------------------------------
    **{("GET", path): Policy(PUBLIC, "reading the API versions") for path in _VERSIONS},
    ("GET", "/openapi.json"): Policy(PUBLIC, "reading the OpenAPI document"),
    ("POST", "/v3/auth/tokens"): Policy(PUBLIC, "issuing tokens"),
    # --- identity: tokens and the caller's own -----------------------------------------------
    # Another user's token (X-Subject-Token): admins only, checked by the handler.
    ("GET", "/v3/auth/tokens"): Policy(ANY, "validating tokens"),
    ("HEAD", "/v3/auth/tokens"): Policy(ANY, "checking tokens"),
    ("DELETE", "/v3/auth/tokens"): Policy(ANY, "revoking tokens"),
    ("GET", "/v3/auth/projects"): Policy(ANY, "listing one's projects"),
    ("GET", "/v3/auth/domains"): Policy(ANY, "listing one's domains"),
    ("GET", "/v3/auth/catalog"): Policy(ANY, "reading one's token's catalog"),
    ("GET", "/v3/users/{user_id}"): Policy(ANY, "showing the details", USER),
    # As Keystone: no token (a user whose password expired has none); the original password
    # is the proof, counted towards the lock-out.
    ("POST", "/v3/users/{user_id}/password"): Policy(PUBLIC, "changing one's password"),
    ("GET", "/v3/users/{user_id}/projects"): Policy(ANY, "listing the projects", USER),
    ("GET", "/v3/users/{user_id}/groups"): Policy(ANY, "listing the groups", USER),
    ("POST", "/v3/users/{user_id}/application_credentials"): Policy(
        ANY, "creating application credentials", SELF),
    ("GET", "/v3/users/{user_id}/application_credentials"): Policy(ANY, "listing application credentials", USER),
    ("GET", "/v3/users/{user_id}/application_credentials/{cred_id}"): Policy(
        ANY, "showing application credentials", USER),
    ("DELETE", "/v3/users/{user_id}/application_credentials/{cred_id}"): Policy(
        ANY, "deleting application credentials", USER),
    ("POST", "/v3/users/{user_id}/credentials/OS-EC2"): Policy(ANY, "creating EC2 credentials", USER),
    ("GET", "/v3/users/{user_id}/credentials/OS-EC2"): Policy(ANY, "listing EC2 credentials", USER),
    ("GET", "/v3/users/{user_id}/credentials/OS-EC2/{access}"): Policy(ANY, "showing EC2 credentials", USER),
    ("DELETE", "/v3/users/{user_id}/credentials/OS-EC2/{access}"): Policy(ANY, "deleting EC2 credentials", USER),
    # --- identity: catalogues every token reads, admins change ---------------------------------
    ("GET", "/v3/roles"): Policy(ANY, "listing roles"),
    ("POST", "/v3/roles"): Policy(ADMIN, "creating roles"),
    ("GET", "/v3/roles/{role_id}"): Policy(ANY, "showing roles"),
    ("PATCH", "/v3/roles/{role_id}"): Policy(ADMIN, "renaming roles"),
    ("GET", "/v3/roles/{role_id}/implies"): Policy(ANY, "listing implied roles"),
    ("GET", "/v3/roles/{role_id}/implies/{implied_role_id}"): Policy(ANY, "showing role inference rules"),
    ("HEAD", "/v3/roles/{role_id}/implies/{implied_role_id}"): Policy(ANY, "checking role inference rules"),
    ("PUT", "/v3/roles/{role_id}/implies/{implied_role_id}"): Policy(ADMIN, "making role inference rules"),
    ("DELETE", "/v3/roles/{role_id}/implies/{implied_role_id}"): Policy(ADMIN,
                                                                             "deleting role inference rules"),
    ("GET", "/v3/role_inferences"): Policy(ANY, "listing role inference rules"),
    ("DELETE", "/v3/roles/{role_id}"): Policy(ADMIN, "deleting roles"),
    ("GET", "/v3/domains"): Policy(ANY, "listing domains"),
    ("POST", "/v3/domains"): Policy(ADMIN, "creating domains"),
    ("GET", "/v3/domains/{domain_id}"): Policy(ANY, "showing domains"),
    ("PATCH", "/v3/domains/{domain_id}"): Policy(ADMIN, "updating domains"),
    ("DELETE", "/v3/domains/{domain_id}"): Policy(ADMIN, "deleting domains"),
    **{("GET", f"/v3/domains/config/{tail}default"): Policy(ANY, "reading the default domain configuration")
       for tail in ("", "{group}/", "{group}/{option}/")},
    **{(method, f"/v3/domains/{{domain_id}}/config{tail}"): Policy(ADMIN, "managing domain configuration")
       for tail in ("", "/{group}", "/{group}/{option}") for method in ("GET", "PATCH", "DELETE")},
    ("PUT", "/v3/domains/{domain_id}/config"): Policy(ADMIN, "managing domain configuration"),
    ("GET", "/v3/services"): Policy(ANY, "listing services"),
    ("POST", "/v3/services"): Policy(ADMIN, "creating services"),
    ("GET", "/v3/services/{service_id}"): Policy(ANY, "showing services"),
    ("PATCH", "/v3/services/{service_id}"): Policy(ADMIN, "updating services"),
    ("DELETE", "/v3/services/{service_id}"): Policy(ADMIN, "deleting services"),
    ("GET", "/v3/endpoints"): Policy(ANY, "listing endpoints"),
    ("POST", "/v3/endpoints"): Policy(ADMIN, "creating endpoints"),
    ("GET", "/v3/endpoints/{endpoint_id}"): Policy(ANY, "showing endpoints"),
    ("PATCH", "/v3/endpoints/{endpoint_id}"): Policy(ADMIN, "updating endpoints"),
    ("DELETE", "/v3/endpoints/{endpoint_id}"): Policy(ADMIN, "deleting endpoints"),
    ("GET", "/v3/regions"): Policy(ANY, "listing regions"),
    ("GET", "/v3/regions/{region_id}"): Policy(ANY, "showing regions"),
    ("POST", "/v3/regions"): Policy(ADMIN, "creating regions"),
    # Project tags: read by the project's own tokens, changed by admins.
    ("GET", "/v3/projects/{project_id}/tags"): Policy(ANY, "listing project tags", PROJECT),
    ("GET", "/v3/projects/{project_id}/tags/{tag}"): Policy(ANY, "checking project tags", PROJECT),
    ("HEAD", "/v3/projects/{project_id}/tags/{tag}"): Policy(ANY, "checking project tags", PROJECT),
    ("PUT", "/v3/projects/{project_id}/tags"): Policy(ADMIN, "replacing project tags"),
    ("DELETE", "/v3/projects/{project_id}/tags"): Policy(ADMIN, "removing project tags"),
    ("PUT", "/v3/projects/{project_id}/tags/{tag}"): Policy(ADMIN, "tagging projects"),
    ("DELETE", "/v3/projects/{project_id}/tags/{tag}"): Policy(ADMIN, "removing project tags"),
    # Endpoint groups (OS-EP-FILTER): admins only, as Keystone's defaults.
    **{(method, f"/v3/OS-EP-FILTER/endpoint_groups{suffix}"): Policy(ADMIN, action) for method, suffix, action in (
        ("GET", "", "listing endpoint groups"), ("POST", "", "creating endpoint groups"),
        ("GET", "/{endpoint_group_id}", "showing endpoint groups"),
        ("HEAD", "/{endpoint_group_id}", "checking endpoint groups"),
        ("PATCH", "/{endpoint_group_id}", "changing endpoint groups"),
        ("DELETE", "/{endpoint_group_id}", "deleting endpoint groups"),
        ("GET", "/{endpoint_group_id}/endpoints", "listing an endpoint group's endpoints"),
        ("GET", "/{endpoint_group_id}/projects", "listing an endpoint group's projects"),
        ("PUT", "/{endpoint_group_id}/projects/{project_id}", "associating endpoint groups"),
        ("GET", "/{endpoint_group_id}/projects/{project_id}", "checking endpoint group associations"),
        ("HEAD", "/{endpoint_group_id}/projects/{project_id}", "checking endpoint group associations"),
        ("DELETE", "/{endpoint_group_id}/projects/{project_id}", "dissociating endpoint groups"))},
    ("GET", "/v3/OS-EP-FILTER/projects/{project_id}/endpoint_groups"): Policy(ADMIN,
                                                                             "listing a project's endpoint groups"),
    # Stored policy documents: Keystone's defaults keep them to admins, reads included.
    ("GET", "/v3/policies"): Policy(ADMIN, "listing policy documents"),
    ("POST", "/v3/policies"): Policy(ADMIN, "storing policy documents"),
    ("GET", "/v3/policies/{policy_id}"): Policy(ADMIN, "showing policy documents"),
    ("PATCH", "/v3/policies/{policy_id}"): Policy(ADMIN, "changing policy documents"),
    ("DELETE", "/v3/policies/{policy_id}"): Policy(ADMIN, "deleting policy documents"),
    # Credentials: one's own (another user's is not found, 404, checked by the handler), an
    # admin anyone's.
    ("GET", "/v3/credentials"): Policy(ANY, "listing credentials"),
    ("POST", "/v3/credentials"): Policy(ANY, "creating credentials"),
    ("GET", "/v3/credentials/{credential_id}"): Policy(ANY, "showing credentials"),
    ("PATCH", "/v3/credentials/{credential_id}"): Policy(ANY, "changing credentials"),
    ("DELETE", "/v3/credentials/{credential_id}"): Policy(ANY, "deleting credentials"),
    ("PUT", "/v3/regions/{region_id}"): Policy(ADMIN, "creating regions"),
    ("PATCH", "/v3/regions/{region_id}"): Policy(ADMIN, "changing regions"),
    ("DELETE", "/v3/regions/{region_id}"): Policy(ADMIN, "deleting regions"),
    # --- identity administration ---------------------------------------------------------------
    ("GET", "/v3/projects"): Policy(ADMIN, "listing projects"),
    ("POST", "/v3/projects"): Policy(ADMIN, "creating projects"),
    ("GET", "/v3/projects/{project_id}"): Policy(ANY, "showing the project", PROJECT),
    ("PATCH", "/v3/projects/{project_id}"): Policy(ADMIN, "updating projects"),
    ("DELETE", "/v3/projects/{project_id}"): Policy(ADMIN, "deleting projects"),
    ("GET", "/v3/users"): Policy(ADMIN, "listing users"),
    ("POST", "/v3/users"): Policy(ADMIN, "creating users"),
    ("PATCH", "/v3/users/{user_id}"): Policy(ADMIN, "updating users"),
    ("DELETE", "/v3/users/{user_id}"): Policy(ADMIN, "deleting users"),
    ("GET", "/v3/groups"): Policy(ADMIN, "listing groups"),
    ("POST", "/v3/groups"): Policy(ADMIN, "creating groups"),
    ("GET", "/v3/groups/{group_id}"): Policy(ADMIN, "showing groups"),
    ("PATCH", "/v3/groups/{group_id}"): Policy(ADMIN, "updating groups"),
    ("DELETE", "/v3/groups/{group_id}"): Policy(ADMIN, "deleting groups"),
    ("GET", "/v3/groups/{group_id}/users"): Policy(ADMIN, "listing group members"),
    ("PUT", "/v3/groups/{group_id}/users/{user_id}"): Policy(ADMIN, "adding users to groups"),
    ("HEAD", "/v3/groups/{group_id}/users/{user_id}"): Policy(ADMIN, "checking group membership"),
    ("GET", "/v3/groups/{group_id}/users/{user_id}"): Policy(ADMIN, "checking group membership"),
    ("DELETE", "/v3/groups/{group_id}/users/{user_id}"): Policy(ADMIN, "removing users from groups"),
    ("GET", "/v3/role_assignments"): Policy(ADMIN, "listing role assignments"),
    **_grants(),
    # --- compute: catalogues -------------------------------------------------------------------
    ("GET", f"{_C}/flavors"): Policy(ANY, "listing flavors"),
    ("GET", f"{_C}/flavors/detail"): Policy(ANY, "listing flavors"),
    ("POST", f"{_C}/flavors"): Policy(ADMIN, "creating flavors"),
    ("GET", f"{_C}/flavors/{{flavor_id}}"): Policy(ANY, "showing flavors"),
    ("PUT", f"{_C}/flavors/{{flavor_id}}"): Policy(ADMIN, "updating flavors"),
    ("DELETE", f"{_C}/flavors/{{flavor_id}}"): Policy(ADMIN, "deleting flavors"),
    ("GET", f"{_C}/flavors/{{flavor_id}}/os-extra_specs"): Policy(ANY, "showing flavor extra specs"),
    ("POST", f"{_C}/flavors/{{flavor_id}}/os-extra_specs"): Policy(ADMIN, "changing flavor extra specs"),
    ("GET", f"{_C}/flavors/{{flavor_id}}/os-extra_specs/{{key}}"): Policy(ANY, "showing flavor extra specs"),
    ("PUT", f"{_C}/flavors/{{flavor_id}}/os-extra_specs/{{key}}"): Policy(ADMIN, "changing flavor extra specs"),
    ("DELETE", f"{_C}/flavors/{{flavor_id}}/os-extra_specs/{{key}}"): Policy(ADMIN, "changing flavor extra specs"),
    ("GET", f"{_C}/os-availability-zone"): Policy(ANY, "listing availability zones"),
    ("GET", f"{_C}/os-availability-zone/detail"): Policy(ADMIN, "listing availability zones in detail"),
    # Keypairs are the token's user's (Nova: admin or user_id); another user's (?user_id): admins.
    ("GET", f"{_C}/os-keypairs"): Policy(ANY, "listing keypairs"),
    ("POST", f"{_C}/os-keypairs"): Policy(ANY, "creating keypairs"),
    ("GET", f"{_C}/os-keypairs/{{name}}"): Policy(ANY, "showing keypairs"),
    ("DELETE", f"{_C}/os-keypairs/{{name}}"): Policy(ANY, "deleting keypairs"),
    # --- compute: quotas and usage -----------------------------------------------------------------
    ("GET", f"{_C}/limits"): Policy(ANY, "reading limits"),
    ("GET", f"{_C}/os-quota-sets/{{project_id}}"): Policy(READER, "showing quotas", PROJECT),
    ("GET", f"{_C}/os-quota-sets/{{project_id}}/detail"): Policy(READER, "showing quotas", PROJECT),
    ("GET", f"{_C}/os-quota-sets/{{project_id}}/defaults"): Policy(ANY, "showing default quotas"),
    ("PUT", f"{_C}/os-quota-sets/{{project_id}}"): Policy(ADMIN, "changing quotas"),
    ("DELETE", f"{_C}/os-quota-sets/{{project_id}}"): Policy(ADMIN, "resetting quotas"),
    ("GET", f"{_C}/os-simple-tenant-usage"): Policy(ADMIN, "listing every project's usage"),
    ("GET", f"{_C}/os-simple-tenant-usage/{{project_id}}"): Policy(READER, "reading the usage", PROJECT),
    # --- compute: servers ------------------------------------------------------------------------
    ("GET", f"{_C}/servers"): Policy(READER, "listing servers", LISTED),
    ("GET", f"{_C}/servers/detail"): Policy(READER, "listing servers", LISTED),
    ("POST", f"{_C}/servers"): Policy(MEMBER, "creating servers"),
    ("GET", f"{_C}/servers/{{server_id}}"): Policy(READER, "showing servers", OWN),
    ("PUT", f"{_C}/servers/{{server_id}}"): Policy(MEMBER, "updating servers", OWN),
    ("DELETE", f"{_C}/servers/{{server_id}}"): Policy(MEMBER, "deleting servers", OWN),
    ("POST", f"{_C}/servers/{{server_id}}/action"): Policy(MEMBER, "acting on servers", OWN),
    ("GET", f"{_C}/servers/{{server_id}}/metadata"): Policy(READER, "reading server metadata", OWN),
    ("POST", f"{_C}/servers/{{server_id}}/metadata"): Policy(MEMBER, "changing server metadata", OWN),
    ("PUT", f"{_C}/servers/{{server_id}}/metadata"): Policy(MEMBER, "changing server metadata", OWN),
    ("GET", f"{_C}/servers/{{server_id}}/metadata/{{key}}"): Policy(READER, "reading server metadata", OWN),
    ("PUT", f"{_C}/servers/{{server_id}}/metadata/{{key}}"): Policy(MEMBER, "changing server metadata", OWN),
    ("DELETE", f"{_C}/servers/{{server_id}}/metadata/{{key}}"): Policy(MEMBER, "changing server metadata", OWN),
    ("GET", f"{_C}/servers/{{server_id}}/tags"): Policy(READER, "reading server tags", OWN),
    ("PUT", f"{_C}/servers/{{server_id}}/tags"): Policy(MEMBER, "changing server tags", OWN),
    ("DELETE", f"{_C}/servers/{{server_id}}/tags"): Policy(MEMBER, "changing server tags", OWN),
    ("GET", f"{_C}/servers/{{server_id}}/tags/{{tag}}"): Policy(READER, "reading server tags", OWN),
    ("PUT", f"{_C}/servers/{{server_id}}/tags/{{tag}}"): Policy(MEMBER, "changing server tags", OWN),
    ("DELETE", f"{_C}/servers/{{server_id}}/tags/{{tag}}"): Policy(MEMBER, "changing server tags", OWN),
    ("GET", f"{_C}/servers/{{server_id}}/os-instance-actions"): Policy(READER, "listing server actions", OWN),
    ("GET", f"{_C}/servers/{{server_id}}/os-instance-actions/{{request_id}}"): Policy(
        READER, "showing server actions", OWN),
    ("GET", f"{_C}/servers/{{server_id}}/diagnostics"): Policy(ADMIN, "reading server diagnostics"),
    ("GET", f"{_C}/servers/{{server_id}}/ips"): Policy(READER, "listing server addresses", OWN),
    ("GET", f"{_C}/servers/{{server_id}}/os-volume_attachments"): Policy(READER, "listing volume attachments", OWN),
    ("POST", f"{_C}/servers/{{server_id}}/os-volume_attachments"): Policy(MEMBER, "attaching volumes", OWN),
    ("GET", f"{_C}/servers/{{server_id}}/os-volume_attachments/{{volume_id}}"): Policy(
        READER, "showing volume attachments", OWN),
    ("DELETE", f"{_C}/servers/{{server_id}}/os-volume_attachments/{{volume_id}}"): Policy(
        MEMBER, "detaching volumes", OWN),
    ("GET", f"{_C}/os-server-groups"): Policy(READER, "listing server groups", LISTED),
    ("POST", f"{_C}/os-server-groups"): Policy(MEMBER, "creating server groups"),
    ("GET", f"{_C}/os-server-groups/{{group_id}}"): Policy(READER, "showing server groups", OWN),
    ("DELETE", f"{_C}/os-server-groups/{{group_id}}"): Policy(MEMBER, "deleting server groups", OWN),
    # --- compute: the cloud's hosts ------------------------------------------------------------------
    ("GET", f"{_C}/os-aggregates"): Policy(ADMIN, "listing aggregates"),
    ("POST", f"{_C}/os-aggregates"): Policy(ADMIN, "creating aggregates"),
    ("GET", f"{_C}/os-aggregates/{{aggregate_id}}"): Policy(ADMIN, "showing aggregates"),
    ("PUT", f"{_C}/os-aggregates/{{aggregate_id}}"): Policy(ADMIN, "updating aggregates"),
    ("DELETE", f"{_C}/os-aggregates/{{aggregate_id}}"): Policy(ADMIN, "deleting aggregates"),
    ("POST", f"{_C}/os-aggregates/{{aggregate_id}}/action"): Policy(ADMIN, "changing aggregates"),
    ("GET", f"{_C}/os-hosts"): Policy(ADMIN, "listing hosts"),
    ("GET", f"{_C}/os-hosts/{{host_name}}"): Policy(ADMIN, "showing hosts"),
    ("GET", f"{_C}/os-hypervisors"): Policy(ADMIN, "listing hypervisors"),
    ("GET", f"{_C}/os-hypervisors/detail"): Policy(ADMIN, "listing hypervisors"),
    ("GET", f"{_C}/os-hypervisors/statistics"): Policy(ADMIN, "hypervisor statistics"),
    ("GET", f"{_C}/os-hypervisors/{{hypervisor_id}}"): Policy(ADMIN, "showing hypervisors"),
    ("GET", f"{_C}/os-hypervisors/{{hypervisor_id}}/uptime"): Policy(ADMIN, "showing hypervisors"),
    ("GET", f"{_C}/os-services"): Policy(ADMIN, "listing services"),
    **{("PUT", f"{_C}/os-services/{toggle}"): Policy(ADMIN, "enabling or disabling services")
       for toggle in ("enable", "disable", "disable-log-reason")},
    ("PUT", f"{_C}/os-services/{{service_id}}"): Policy(ADMIN, "enabling or disabling services"),
    ("GET", f"{_C}/images"): Policy(READER, "listing images", LISTED),
    ("GET", f"{_C}/images/detail"): Policy(READER, "listing images", LISTED),
    ("GET", f"{_C}/images/{{image_id}}"): Policy(READER, "showing images", SHARED),
    ("DELETE", f"{_C}/images/{{image_id}}"): Policy(MEMBER, "deleting images", SHARED),
    # --- image ---------------------------------------------------------------------------------
    ("GET", f"{_I}/images"): Policy(READER, "listing images", LISTED),
    ("POST", f"{_I}/images"): Policy(MEMBER, "creating images"),
    ("GET", f"{_I}/images/{{image_id}}"): Policy(READER, "showing images", SHARED),
    ("PATCH", f"{_I}/images/{{image_id}}"): Policy(MEMBER, "updating images", SHARED),
    ("DELETE", f"{_I}/images/{{image_id}}"): Policy(MEMBER, "deleting images", SHARED),
    ("PUT", f"{_I}/images/{{image_id}}/file"): Policy(MEMBER, "uploading image data", SHARED),
    ("GET", f"{_I}/images/{{image_id}}/file"): Policy(READER, "downloading image data", SHARED),
    ("DELETE", f"{_I}/images"): Policy(MEMBER, "deleting images"),  # /v2/images/: the empty id, a 404
    ("PUT", f"{_I}/images/{{image_id}}/tags/{{tag}}"): Policy(MEMBER, "tagging images", SHARED),
    ("DELETE", f"{_I}/images/{{image_id}}/tags/{{tag}}"): Policy(MEMBER, "tagging images", SHARED),
    ("GET", f"{_I}/schemas/{{name}}"): Policy(ANY, "reading image schemas"),
    # --- networking ----------------------------------------------------------------------------
    ("GET", f"{_N}/extensions"): Policy(ANY, "listing extensions"),
    **_crud(f"{_N}/networks", "network_id", "network", SHARED),
    **_crud(f"{_N}/subnets", "subnet_id", "subnet", SHARED),
    **_crud(f"{_N}/subnetpools", "pool_id", "subnet pool", SHARED),
    **_crud(f"{_N}/ports", "port_id", "port"),
    **_crud(f"{_N}/routers", "router_id", "router"),
    ("PUT", f"{_N}/routers/{{router_id}}/add_router_interface"): Policy(MEMBER, "changing routers", OWN),
    ("PUT", f"{_N}/routers/{{router_id}}/remove_router_interface"): Policy(MEMBER, "changing routers", OWN),
    **_crud(f"{_N}/security-groups", "group_id", "security group"),
    **_crud(f"{_N}/security-group-rules", "rule_id", "security group rule", put=False),
    **_crud(f"{_N}/floatingips", "floating_id", "floating IP"),
    ("GET", f"{_N}/quotas/{{project_id}}"): Policy(READER, "showing network quotas", PROJECT),
    ("GET", f"{_N}/quotas/{{project_id}}/details"): Policy(READER, "showing network quotas", PROJECT),
    ("PUT", f"{_N}/quotas/{{project_id}}"): Policy(ADMIN, "changing quotas"),
    ("DELETE", f"{_N}/quotas/{{project_id}}"): Policy(ADMIN, "resetting quotas"),
    # --- block storage (Cinder's project defaults; admins act on every project's) -------------------
    **_crud(f"{_V}/volumes", "volume_id", "volume"),
    ("GET", f"{_V}/volumes/detail"): Policy(READER, "listing volumes", LISTED),
    ("PUT", f"{_V}/volumes"): Policy(MEMBER, "changing volumes"),  # /volumes/: the empty id, a 404
    ("DELETE", f"{_V}/volumes"): Policy(MEMBER, "deleting volumes"),  # /volumes/: the empty id, a 404
    ("POST", f"{_V}/volumes/{{volume_id}}/action"): Policy(MEMBER, "acting on volumes", OWN),
    ("GET", f"{_V}/volumes/{{volume_id}}/metadata"): Policy(READER, "showing volume metadata", OWN),
    ("POST", f"{_V}/volumes/{{volume_id}}/metadata"): Policy(MEMBER, "changing volume metadata", OWN),
    ("PUT", f"{_V}/volumes/{{volume_id}}/metadata"): Policy(MEMBER, "changing volume metadata", OWN),
    ("GET", f"{_V}/volumes/{{volume_id}}/metadata/{{key}}"): Policy(READER, "showing volume metadata", OWN),
    ("PUT", f"{_V}/volumes/{{volume_id}}/metadata/{{key}}"): Policy(MEMBER, "changing volume metadata", OWN),
    ("DELETE", f"{_V}/volumes/{{volume_id}}/metadata/{{key}}"): Policy(MEMBER, "changing volume metadata", OWN),
    **_crud(f"{_V}/snapshots", "snapshot_id", "volume snapshot"),
    ("GET", f"{_V}/snapshots/detail"): Policy(READER, "listing volume snapshots", LISTED),
    ("GET", f"{_V}/snapshots/{{snapshot_id}}/metadata"): Policy(READER, "showing snapshot metadata", OWN),
    ("POST", f"{_V}/snapshots/{{snapshot_id}}/metadata"): Policy(MEMBER, "changing snapshot metadata", OWN),
    ("PUT", f"{_V}/snapshots/{{snapshot_id}}/metadata"): Policy(MEMBER, "changing snapshot metadata", OWN),
    ("GET", f"{_V}/snapshots/{{snapshot_id}}/metadata/{{key}}"): Policy(READER, "showing snapshot metadata", OWN),
    ("PUT", f"{_V}/snapshots/{{snapshot_id}}/metadata/{{key}}"): Policy(MEMBER, "changing snapshot metadata", OWN),
    ("DELETE", f"{_V}/snapshots/{{snapshot_id}}/metadata/{{key}}"): Policy(
        MEMBER, "changing snapshot metadata", OWN),
    ("GET", f"{_V}/types"): Policy(ANY, "listing volume types"),
    ("GET", f"{_V}/types/{{type_id}}"): Policy(ANY, "showing volume types"),
    ("GET", f"{_V}/os-availability-zone"): Policy(ANY, "listing volume availability zones"),
    ("GET", f"{_V}/os-services"): Policy(ADMIN, "listing volume services"),
    ("GET", f"{_V}/extensions"): Policy(ANY, "listing volume extensions"),
    ("GET", f"{_V}/limits"): Policy(READER, "reading volume limits"),
    ("GET", f"{_V}/os-quota-sets/{{project_id}}"): Policy(READER, "showing volume quotas", PROJECT),
    ("GET", f"{_V}/os-quota-sets/{{project_id}}/defaults"): Policy(ANY, "showing default volume quotas"),
    ("PUT", f"{_V}/os-quota-sets/{{project_id}}"): Policy(ADMIN, "changing volume quotas"),
    ("DELETE", f"{_V}/os-quota-sets/{{project_id}}"): Policy(ADMIN, "resetting volume quotas"),
    # --- fabric's own administration -----------------------------------------------------------------
    ("GET", f"{_F}/topology"): Policy(ADMIN, "reading the topology"),
    ("POST", f"{_F}/topology/hosts"): Policy(ADMIN, "adding a host to the topology"),
    ("DELETE", f"{_F}/topology/hosts/{{name}}"): Policy(ADMIN, "removing a host from the topology"),
    ("GET", f"{_F}/tenants"): Policy(ADMIN, "listing tenants"),
    ("GET", f"{_F}/services"): Policy(ADMIN, "listing services"),
    ("GET", f"{_F}/queues"): Policy(ADMIN, "listing queues"),
    ("POST", f"{_F}/queues/{{name}}/requeue-dead"): Policy(ADMIN, "requeueing dead letters"),
}


def policy_of(method: str, template: str | None) -> Policy | None:
    """The policy of ``method`` on route ``template``; None when the table has none."""
    return TABLE.get((method.upper(), template or ""))


def unlisted(method: str, template: str) -> exception.Forbidden:
    """The refusal of an operation the table forgot (deny by default)."""
    return exception.Forbidden(reason=f"{method} {template} has no entry in the policy table (fabric.api.policy); "
                                      "it is refused for everyone")
