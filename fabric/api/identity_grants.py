"""Role grants, the one home of who holds which role where.

A grant is (actor, target, role): a user or group holds a role on a project, a
domain or the system (``all``). A user's grant on a project lives in
:class:`~fabric.db.models.RoleAssignment` (what tokens, EC2 credentials and the
objectstore have always read); every other kind in :class:`~fabric.db.models.RoleGrant`.
Everything else reads and writes grants through this module.

Routes, in Keystone's shapes: ``PUT/HEAD/DELETE`` on
``/v3/{projects,domains}/{id}/{users,groups}/{id}/roles/{role_id}`` and
``/v3/system/{users,groups}/{id}/roles/{role_id}`` (``GET`` without the role
lists the roles), and ``GET /v3/role_assignments`` with Keystone's filters.
"""

from __future__ import annotations

import dataclasses

import falcon
import sqlalchemy as sa

from fabric import exception
from fabric.api import common, identity_implied, identity_projects
from fabric.db import constraints
from fabric.db.models import Domain, Group, GroupMembership, Project, Role, RoleAssignment, RoleGrant, User
from fabric.db.models.identity import GLOBAL_ROLE

SYSTEM = "all"
ACTORS = ("user", "group")
TARGETS = ("project", "domain", "system")
#: Grants inherited to projects (OS-INHERIT): RoleGrant rows whose ``target_type`` says so. One
#: on a domain reaches every project of the domain, one on a project every project beneath it
#: (not the project itself).
INHERITED = {"domain": "idomain", "project": "iproject"}
_INHERITED_FROM = {inherited: target for target, inherited in INHERITED.items()}


@dataclasses.dataclass(frozen=True, order=True)
class Grant:
    actor_type: str
    actor_id: str
    target_type: str
    target_id: str
    role_id: str


def _is_direct(actor_type: str, target_type: str) -> bool:
    return actor_type == "user" and target_type == "project"


def _where(grant: Grant) -> tuple[type, tuple]:
    """The model holding ``grant`` and the clauses selecting it."""
    if _is_direct(grant.actor_type, grant.target_type):
        return RoleAssignment, (RoleAssignment.user_id == grant.actor_id,
                                RoleAssignment.project_id == grant.target_id, RoleAssignment.role_id == grant.role_id)
    return RoleGrant, (RoleGrant.actor_type == grant.actor_type, RoleGrant.actor_id == grant.actor_id,
                       RoleGrant.target_type == grant.target_type, RoleGrant.target_id == grant.target_id,
                       RoleGrant.role_id == grant.role_id)


def exists(session, grant: Grant) -> bool:
    model, clauses = _where(grant)
    return session.scalar(sa.select(model.id).where(*clauses).limit(1)) is not None


def add(session, grant: Grant) -> None:
    """Record ``grant`` unless it is there. A concurrent identical grant can still make
    the commit fail on the unique key: :func:`grant_idempotently` absorbs that."""
    if exists(session, grant):
        return
    if _is_direct(grant.actor_type, grant.target_type):
        session.add(RoleAssignment(user_id=grant.actor_id, project_id=grant.target_id, role_id=grant.role_id))
    else:
        session.add(RoleGrant(**dataclasses.asdict(grant)))


def remove(session, grant: Grant) -> bool:
    """Delete ``grant``; whether it was there."""
    model, clauses = _where(grant)
    return session.execute(sa.delete(model).where(*clauses)).rowcount > 0


def forget(session, kind: str, ident: str) -> None:
    """Delete every grant held by or on the user, group, project or domain ``ident``, inherited
    ones included (RoleGrant has no foreign keys to them: LDAP users and groups live elsewhere)."""
    if kind in ACTORS:
        session.execute(sa.delete(RoleGrant).where(RoleGrant.actor_type == kind, RoleGrant.actor_id == ident))
    if kind in TARGETS:
        session.execute(sa.delete(RoleGrant).where(RoleGrant.target_type.in_([kind, INHERITED.get(kind, kind)]),
                                                   RoleGrant.target_id == ident))


def delete_with_grants(session, kind: str, row) -> None:
    """Delete the user, group, project or domain ``row`` and every grant held by or on it
    (memberships, tokens and credentials go by cascade)."""
    forget(session, kind, row.id)
    session.delete(row)


def describe(session, kind: str, ident: str) -> tuple[str, str] | None:
    """(name, domain id) of user or group ``ident``; None when there is none."""
    model = User if kind == "user" else Group
    row = session.get(model, ident)
    return (row.name, row.domain_id) if row is not None else None


def members_of(session, group_id: str) -> list[str]:
    """The ids of the users in group ``group_id``."""
    return list(session.scalars(sa.select(GroupMembership.user_id).where(GroupMembership.group_id == group_id)))


def group_ids_of(session, user_id: str) -> list[str]:
    """The ids of the SQL groups ``user_id`` belongs to."""
    return list(session.scalars(sa.select(GroupMembership.group_id).where(GroupMembership.user_id == user_id)))


def _roles_statement() -> tuple[sa.Select, sa.Select]:
    """The role queries every token check runs, built once so SQLAlchemy caches their compiled
    form (see fabric.api.tokens._validation_statement for the measurement): on a project
    (direct grants and grants to the user's groups), and on a domain or the system."""
    user_id, target_type, target_id = sa.bindparam("user_id"), sa.bindparam("target_type"), sa.bindparam("target_id")
    groups = sa.select(GroupMembership.group_id).where(GroupMembership.user_id == user_id).scalar_subquery()
    via_groups = sa.and_(RoleGrant.actor_type == "group", RoleGrant.actor_id.in_(groups))
    direct = sa.select(RoleAssignment.role_id.label("role_id")).where(
        RoleAssignment.user_id == user_id, RoleAssignment.project_id == target_id)
    on_project = sa.select(RoleGrant.role_id.label("role_id")).where(
        via_groups, RoleGrant.target_type == "project", RoleGrant.target_id == target_id)
    held = sa.union(direct, on_project).subquery()
    project = sa.select(Role.id, Role.name, Role.domain_id).join(held, held.c.role_id == Role.id).order_by(Role.name)
    actor = sa.or_(sa.and_(RoleGrant.actor_type == "user", RoleGrant.actor_id == user_id), via_groups)
    other = (sa.select(Role.id, Role.name, Role.domain_id)
             .where(Role.id.in_(sa.select(RoleGrant.role_id).where(actor, RoleGrant.target_type == target_type,
                                                                  RoleGrant.target_id == target_id)))
             .order_by(Role.name))
    return project, other


_PROJECT_ROLES, _OTHER_ROLES = _roles_statement()


def project_roles(session, user_id: str, project_id: str) -> list[tuple[str, str]]:
    """(id, name) of every role ``user_id`` holds on ``project_id``, directly or through one of
    its groups, and every role those imply, by name."""
    rows = session.execute(_PROJECT_ROLES, {"user_id": user_id, "target_id": project_id}).all()
    inherited = _inherited_role_ids(session, user_id, project_id) - {row.id for row in rows}
    if inherited:
        rows += session.execute(sa.select(Role.id, Role.name, Role.domain_id).where(Role.id.in_(inherited))).all()
    return _effective(session, rows)


def _effective(session, rows) -> list[tuple[str, str]]:
    """(id, name), by name, of the global roles among ``rows`` (id, name, domain_id) and of
    every global role any of them implies: a domain-specific role is never effective itself,
    only what it implies (Keystone's rule, for tokens and effective assignments)."""
    held = sorted(((row.id, row.name) for row in rows), key=lambda role: role[1])
    local = {row.id for row in rows if row.domain_id != GLOBAL_ROLE}
    return [role for role in identity_implied.with_implied(session, held) if role[0] not in local]


def _inherited_role_ids(session, user_id: str, project_id: str) -> set[str]:
    """The roles ``user_id`` (or a group of theirs) holds on ``project_id`` by a grant inherited
    from its domain or a project above it. One query when there is none (every token check
    runs it)."""
    groups = sa.select(GroupMembership.group_id).where(GroupMembership.user_id == user_id).scalar_subquery()
    actor = sa.or_(sa.and_(RoleGrant.actor_type == "user", RoleGrant.actor_id == user_id),
                   sa.and_(RoleGrant.actor_type == "group", RoleGrant.actor_id.in_(groups)))
    rows = session.execute(sa.select(RoleGrant.target_type, RoleGrant.target_id, RoleGrant.role_id)
                           .where(actor, RoleGrant.target_type.in_(list(INHERITED.values())))).all()
    if not rows:
        return set()
    project = session.get(Project, project_id)
    sources = {(INHERITED["project"], a) for a in identity_projects.ancestors(session, project_id)}
    if project is not None:
        sources.add((INHERITED["domain"], project.domain_id))
    return {r.role_id for r in rows if (r.target_type, r.target_id) in sources}


def target_roles(session, user_id: str, target_type: str, target_id: str) -> list[tuple[str, str]]:
    """(id, name) of every role ``user_id`` holds on a project, domain or the system
    (``target_id`` ``all``), directly or through a group, and every role those imply, by name."""
    if target_type == "project":
        return project_roles(session, user_id, target_id)
    return _effective(session, session.execute(
        _OTHER_ROLES, {"user_id": user_id, "target_type": target_type, "target_id": target_id}).all())


def project_ids_of(session, user_id: str) -> set[str]:
    """Every project ``user_id`` holds some role on, directly or through a group."""
    group_ids = group_ids_of(session, user_id)
    direct = set(session.scalars(sa.select(RoleAssignment.project_id).where(RoleAssignment.user_id == user_id)))
    via = set(session.scalars(sa.select(RoleGrant.target_id).where(
        RoleGrant.actor_type == "group", RoleGrant.actor_id.in_(group_ids or [""]),
        RoleGrant.target_type == "project")))
    return direct | via


def domain_ids_of(session, user_id: str) -> set[str]:
    """Every domain ``user_id`` holds some role on, directly or through a group."""
    actors = sa.or_(sa.and_(RoleGrant.actor_type == "user", RoleGrant.actor_id == user_id),
                    sa.and_(RoleGrant.actor_type == "group",
                            RoleGrant.actor_id.in_(group_ids_of(session, user_id) or [""])))
    return set(session.scalars(sa.select(RoleGrant.target_id).where(actors, RoleGrant.target_type == "domain")))


# --- listing (/v3/role_assignments) ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Filters:
    user_id: str | None = None
    group_id: str | None = None
    project_id: str | None = None
    domain_id: str | None = None
    system: bool = False
    role_id: str | None = None
    effective: bool = False


def _all_grants(session, filters: Filters) -> list[Grant]:
    direct = sa.select(RoleAssignment)
    other = sa.select(RoleGrant)
    if filters.role_id and not filters.effective:  # effective: the role may be implied by another
        direct = direct.where(RoleAssignment.role_id == filters.role_id)
        other = other.where(RoleGrant.role_id == filters.role_id)
    grants = [Grant("user", r.user_id, "project", r.project_id, r.role_id) for r in session.scalars(direct)]
    grants += [Grant(r.actor_type, r.actor_id, r.target_type, r.target_id, r.role_id) for r in session.scalars(other)]
    return grants


def _inherited_to_projects(session, grant: Grant) -> list[Grant]:
    """``grant`` itself, or for an inherited one the grants it makes on each project it reaches."""
    if grant.target_type == INHERITED["domain"]:
        reached = list(session.scalars(sa.select(Project.id).where(Project.domain_id == grant.target_id)))
    elif grant.target_type == INHERITED["project"]:
        reached = identity_projects.descendants(session, grant.target_id)
    else:
        return [grant]
    return [dataclasses.replace(grant, target_type="project", target_id=p) for p in reached]


def _target_matches(grant: Grant, filters: Filters) -> bool:
    target_type = _INHERITED_FROM.get(grant.target_type, grant.target_type)
    if filters.project_id and (target_type, grant.target_id) != ("project", filters.project_id):
        return False
    if filters.domain_id and (target_type, grant.target_id) != ("domain", filters.domain_id):
        return False
    return not filters.system or target_type == "system"


def assignments(session, filters: Filters) -> list[tuple[Grant, str | None]]:
    """The grants matching ``filters`` as (grant, group it came through). With
    ``effective``, a group's grants become its members' and every grant brings the roles its
    role implies, as Keystone's ``effective`` does."""
    found: list[tuple[Grant, str | None]] = []
    grants = _all_grants(session, filters)
    if filters.effective:  # an inherited grant is its projects' grants
        grants = [g for grant in grants for g in _inherited_to_projects(session, grant)]
    for grant in grants:
        if not _target_matches(grant, filters):
            continue
        if filters.effective and grant.actor_type == "group":
            if filters.group_id:
                continue
            for user_id in members_of(session, grant.actor_id):
                if not filters.user_id or user_id == filters.user_id:
                    found.append((dataclasses.replace(grant, actor_type="user", actor_id=user_id), grant.actor_id))
            continue
        if filters.user_id and (grant.actor_type, grant.actor_id) != ("user", filters.user_id):
            continue
        if filters.group_id and (grant.actor_type, grant.actor_id) != ("group", filters.group_id):
            continue
        found.append((grant, None))
    if filters.effective:
        found += [(dataclasses.replace(grant, role_id=implied), via) for grant, via in list(found)
                  for implied in identity_implied.implied_by(session, grant.role_id)]
        # A domain-specific role is never effective itself, only what it implies (Keystone).
        domain_roles = set(session.scalars(sa.select(Role.id).where(
            Role.id.in_({grant.role_id for grant, _ in found}), Role.domain_id != GLOBAL_ROLE)))
        found = [(grant, via) for grant, via in found if grant.role_id not in domain_roles]
        if filters.role_id:
            found = [(grant, via) for grant, via in found if grant.role_id == filters.role_id]
    return sorted(set(found), key=lambda pair: (pair[0], pair[1] or ""))


def flag(req: falcon.Request, name: str) -> bool:
    """Keystone's boolean query flags: present and not false."""
    if name not in req.params:
        return False
    return str(req.params[name]).lower() not in ("0", "false", "no", "off")


class _Names:
    """Looks up display names (and domains) for include_names, once per id."""

    def __init__(self, session) -> None:
        self.session, self.cache = session, {}

    def _domain(self, domain_id: str | None) -> dict:
        row = self.session.get(Domain, domain_id) if domain_id else None
        return {"id": domain_id, "name": row.name if row else domain_id}

    def ref(self, kind: str, ident: str, with_names: bool) -> dict:
        if not with_names:
            return {"id": ident}
        key = (kind, ident)
        if key not in self.cache:
            ref: dict = {"id": ident}
            if kind == "role":
                row = self.session.get(Role, ident)
                ref["name"] = row.name if row else ident
            elif kind == "domain":
                ref = self._domain(ident)
            elif kind == "project":
                row = self.session.get(Project, ident)
                ref.update(name=row.name if row else ident, domain=self._domain(row.domain_id if row else None))
            else:
                found = describe(self.session, kind, ident)
                ref.update(name=found[0] if found else ident, domain=self._domain(found[1] if found else None))
            self.cache[key] = ref
        return self.cache[key]


def assignment_document(grant: Grant, via_group: str | None, base: str, names: _Names, with_names: bool) -> dict:
    target_type = _INHERITED_FROM.get(grant.target_type, grant.target_type)
    target = "system" if target_type == "system" else f"{target_type}s/{grant.target_id}"
    doc: dict = {"role": names.ref("role", grant.role_id, with_names),
                 grant.actor_type: names.ref(grant.actor_type, grant.actor_id, with_names)}
    if target_type == "system":
        doc["scope"] = {"system": {"all": True}}
    else:
        doc["scope"] = {target_type: names.ref(target_type, grant.target_id, with_names)}
    actor = via_group and f"groups/{via_group}" or f"{grant.actor_type}s/{grant.actor_id}"
    doc["links"] = {"assignment": f"{base}/v3/{target}/{actor}/roles/{grant.role_id}"}
    if grant.target_type in _INHERITED_FROM:
        doc["scope"]["OS-INHERIT:inherited_to"] = "projects"
        doc["links"]["assignment"] = (f"{base}/v3/OS-INHERIT/{target}/{actor}/roles/{grant.role_id}"
                                      "/inherited_to_projects")
    if via_group:
        doc["links"]["membership"] = f"{base}/v3/groups/{via_group}/users/{grant.actor_id}"
    return doc


class RoleAssignments:
    """GET /v3/role_assignments (admin), filtered by user.id, group.id, role.id,
    scope.project.id, scope.domain.id, scope.system; ``effective`` and ``include_names``."""

    def on_get(self, req, resp):
        system = req.get_param("scope.system")
        if system not in (None, SYSTEM):
            raise exception.Invalid(reason=f"scope.system={system!r} is not supported; the only system is 'all'")
        filters = Filters(user_id=req.get_param("user.id"), group_id=req.get_param("group.id"),
                          project_id=req.get_param("scope.project.id"), domain_id=req.get_param("scope.domain.id"),
                          system=system == SYSTEM, role_id=req.get_param("role.id"), effective=flag(req, "effective"))
        with_names = flag(req, "include_names")
        deps = common.deps(req)
        base = deps.base_url(req)
        with deps.db.begin() as session:
            found = assignments(session, filters)
            names = _Names(session)
            docs = [assignment_document(g, via, base, names, with_names) for g, via in found]
        common.respond(resp, {"role_assignments": docs,
                              "links": {"self": f"{base}/v3/role_assignments", "previous": None, "next": None}})


# --- grant resources -----------------------------------------------------------------


def grant_from(actor_type: str, target_type: str, params: dict) -> Grant:
    target_id = SYSTEM if target_type == "system" else params[f"{target_type}_id"]
    return Grant(actor_type, params[f"{actor_type}_id"], target_type, target_id, params.get("role_id", ""))


def require_parties(session, grant: Grant, need_role: bool = True) -> None:
    """NotFound naming whichever of the grant's actor, target and role does not exist."""
    target_type = _INHERITED_FROM.get(grant.target_type, grant.target_type)
    if describe(session, grant.actor_type, grant.actor_id) is None:
        raise exception.NotFound(kind=grant.actor_type.capitalize(), ident=grant.actor_id)
    if target_type == "project" and session.get(Project, grant.target_id) is None:
        raise exception.NotFound(kind="Project", ident=grant.target_id)
    if target_type == "domain" and session.get(Domain, grant.target_id) is None:
        raise exception.NotFound(kind="Domain", ident=grant.target_id)
    if need_role and session.get(Role, grant.role_id) is None:
        raise exception.NotFound(kind="Role", ident=grant.role_id)


def _ident(grant: Grant) -> str:
    return f"{grant.actor_type} {grant.actor_id} on {grant.target_type} {grant.target_id} role {grant.role_id}"


class GrantItem:
    """PUT grants (idempotent, as Keystone: a concurrent identical grant is no error),
    HEAD/GET checks (204 or 404), DELETE revokes (404 when it was not granted)."""

    def __init__(self, actor_type: str, target_type: str) -> None:
        self.actor_type, self.target_type = actor_type, target_type

    def _grant(self, params: dict) -> Grant:
        return grant_from(self.actor_type, self.target_type, params)

    def on_put(self, req, resp, **params):
        deps = common.deps(req)
        grant = self._grant(params)
        try:
            with deps.db.begin() as session:
                require_parties(session, grant)
                add(session, grant)
        except sa.exc.IntegrityError as exc:
            # Two identical grants at once both found it missing; the other one's row is the grant.
            if constraints.violation(exc) != constraints.UNIQUE:
                raise
        resp.status = falcon.HTTP_204

    def on_head(self, req, resp, **params):
        grant = self._grant(params)
        with common.deps(req).db.begin() as session:
            if not exists(session, grant):
                raise exception.NotFound(kind="Role assignment", ident=_ident(grant))
        resp.status = falcon.HTTP_204

    on_get = on_head

    def on_delete(self, req, resp, **params):
        grant = self._grant(params)
        with common.deps(req).db.begin() as session:
            if not remove(session, grant):
                raise exception.NotFound(kind="Role assignment", ident=_ident(grant))
        resp.status = falcon.HTTP_204


class GrantList:
    """GET the roles one actor holds on one target."""

    def __init__(self, actor_type: str, target_type: str) -> None:
        self.actor_type, self.target_type = actor_type, target_type

    def on_get(self, req, resp, **params):
        deps = common.deps(req)
        grant = grant_from(self.actor_type, self.target_type, params)
        base = deps.base_url(req)
        with deps.db.begin() as session:
            require_parties(session, grant, need_role=False)
            filters = Filters(**{f"{grant.actor_type}_id": grant.actor_id},
                              **({"system": True} if grant.target_type == "system"
                                 else {f"{grant.target_type}_id": grant.target_id}))
            role_ids = sorted({g.role_id for g, _ in assignments(session, filters)})
            roles = [session.get(Role, rid) for rid in role_ids]
            docs = [{"id": r.id, "name": r.name, "domain_id": None,
                     "links": {"self": f"{base}/v3/roles/{r.id}"}} for r in roles if r is not None]
        common.respond(resp, {"roles": docs, "links": {"self": req.uri, "previous": None, "next": None}})


def register(app: falcon.App) -> None:
    for target, prefix in (("project", "/v3/projects/{project_id}"), ("domain", "/v3/domains/{domain_id}"),
                           ("system", "/v3/system")):
        for actor in ACTORS:
            path = f"{prefix}/{actor}s/{{{actor}_id}}/roles"
            app.add_route(path, GrantList(actor, target))
            app.add_route(f"{path}/{{role_id}}", GrantItem(actor, target))
    app.add_route("/v3/role_assignments", RoleAssignments())


#: This module's operations for the OpenAPI document (fabric.api.openapi).
OPENAPI_OPERATIONS: list = [
    ("get", "/v3/role_assignments", "List role assignments (admin; filters user.id, group.id, role.id, "
     "scope.project.id, scope.domain.id, scope.system, effective, include_names)", None, 200),
] + [
    (method, f"{prefix}/{actor}s/{{{actor}_id}}/roles{suffix}", f"{summary} ({actor} on {target}, admin)", None,
     status)
    for target, prefix in (("project", "/v3/projects/{project_id}"), ("domain", "/v3/domains/{domain_id}"),
                           ("system", "/v3/system"))
    for actor in ACTORS
    for method, suffix, summary, status in (
        ("get", "", "List granted roles", 200), ("put", "/{role_id}", "Grant a role", 204),
        ("head", "/{role_id}", "Check a role grant", 204), ("get", "/{role_id}", "Check a role grant (204, else 404)", 204),
        ("delete", "/{role_id}", "Revoke a role", 204))
    if not (target, actor, method) == ("project", "user", "put")  # already in the main list
]
