"""Implied roles (Keystone's role inference rules): whoever holds a prior role also holds
every role it implies, transitively, in tokens and in effective role assignments.

``/v3/roles/{role_id}/implies[/{implied_role_id}]`` and ``/v3/role_inferences``.
Refused: a role implying itself or a rule that would close a cycle (400 naming the roles),
and implying ``admin`` (403: Keystone's ``prohibited_implied_role``), which would make every
holder of the prior role a cloud admin.
"""

from __future__ import annotations

import falcon
import sqlalchemy as sa

from fabric import exception
from fabric.api import common
from fabric.db import constraints
from fabric.db.models import ImpliedRole, Role

#: Roles no rule may imply (Keystone's ``[assignment] prohibited_implied_role`` default).
PROHIBITED = frozenset({"admin"})

_RULES = sa.select(ImpliedRole.prior_role_id, ImpliedRole.implied_role_id)


def _rules(session) -> dict[str, set[str]]:
    rules: dict[str, set[str]] = {}
    for prior, implied in session.execute(_RULES):
        rules.setdefault(prior, set()).add(implied)
    return rules


def _closure(rules: dict[str, set[str]], role_ids: set[str]) -> set[str]:
    found, todo = set(role_ids), list(role_ids)
    while todo:
        for implied in rules.get(todo.pop(), ()):
            if implied not in found:
                found.add(implied)
                todo.append(implied)
    return found


def with_implied(session, roles: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``roles`` ((id, name), by name) and every role they imply, by name."""
    rules = _rules(session)
    if not rules or not roles:
        return roles
    held = {role_id for role_id, _ in roles}
    extra = _closure(rules, held) - held
    if not extra:
        return roles
    # An implied domain-specific role is never held itself (Keystone), only what it implies.
    more = session.execute(sa.select(Role.id, Role.name).where(Role.id.in_(extra), Role.domain_id == "")).all()
    return sorted([*roles, *((r.id, r.name) for r in more)], key=lambda role: role[1])


def implied_by(session, role_id: str) -> set[str]:
    """Every role ``role_id`` implies, transitively (not itself)."""
    return _closure(_rules(session), {role_id}) - {role_id}


def _role(session, role_id: str) -> Role:
    role = session.get(Role, role_id)
    if role is None:
        raise exception.NotFound(kind="Role", ident=role_id)
    return role


def _ref(role: Role, base: str) -> dict:
    return {"id": role.id, "name": role.name, "links": {"self": f"{base}/v3/roles/{role.id}"}}


def _rule_document(prior: Role, implied: Role, base: str) -> dict:
    return {"role_inference": {"prior_role": _ref(prior, base), "implies": _ref(implied, base)},
            "links": {"self": f"{base}/v3/roles/{prior.id}/implies/{implied.id}"}}


def _rule_row(session, prior_id: str, implied_id: str) -> ImpliedRole:
    row = session.get(ImpliedRole, (prior_id, implied_id))
    if row is None:
        raise exception.NotFound(kind="Implied role", ident=f"{prior_id} -> {implied_id}")
    return row


class Implies:
    """GET: the roles one role implies directly."""

    def on_get(self, req, resp, role_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            prior = _role(session, role_id)
            implied = session.scalars(sa.select(Role).join(ImpliedRole, ImpliedRole.implied_role_id == Role.id)
                                      .where(ImpliedRole.prior_role_id == prior.id).order_by(Role.name)).all()
            base = deps.base_url(req)
            doc = {"role_inference": {"prior_role": _ref(prior, base), "implies": [_ref(r, base) for r in implied]},
                   "links": {"self": f"{base}/v3/roles/{prior.id}/implies"}}
        common.respond(resp, doc)


class ImpliesItem:
    def on_put(self, req, resp, role_id, implied_role_id):
        deps = common.deps(req)
        try:
            with deps.db.begin() as session:
                prior, implied = _role(session, role_id), _role(session, implied_role_id)
                if implied.domain_id and not prior.domain_id:
                    raise exception.Forbidden(reason=f"global role {prior.name!r} cannot imply {implied.name!r}, a "
                                                     f"role of domain {implied.domain_id}")
                if implied.name in PROHIBITED and not implied.domain_id:
                    raise exception.Forbidden(reason=f"no role may imply {implied.name!r}: every holder of "
                                                     f"{prior.name!r} would be a cloud admin")
                if prior.id == implied.id:
                    raise exception.Invalid(reason=f"role {prior.name!r} cannot imply itself")
                if prior.id in implied_by(session, implied.id):
                    raise exception.Invalid(reason=f"{prior.name!r} -> {implied.name!r} would be a cycle: "
                                                   f"{prior.name!r} already follows from {implied.name!r}")
                if session.get(ImpliedRole, (prior.id, implied.id)) is None:
                    session.add(ImpliedRole(prior_role_id=prior.id, implied_role_id=implied.id))
                    session.flush()
                doc = _rule_document(prior, implied, deps.base_url(req))
        except sa.exc.IntegrityError as exc:  # the same rule, made at the same moment: it exists
            if constraints.violation(exc) != constraints.UNIQUE:
                raise
            with deps.db.begin() as session:
                doc = _rule_document(_role(session, role_id), _role(session, implied_role_id),
                                     deps.base_url(req))
        common.respond(resp, doc, falcon.HTTP_201)

    def on_get(self, req, resp, role_id, implied_role_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            _rule_row(session, role_id, implied_role_id)
            doc = _rule_document(_role(session, role_id), _role(session, implied_role_id), deps.base_url(req))
        common.respond(resp, doc)

    def on_head(self, req, resp, role_id, implied_role_id):
        with common.deps(req).db.begin() as session:
            _rule_row(session, role_id, implied_role_id)
        resp.status = falcon.HTTP_204

    def on_delete(self, req, resp, role_id, implied_role_id):
        with common.deps(req).db.begin() as session:
            session.delete(_rule_row(session, role_id, implied_role_id))
        resp.status = falcon.HTTP_204


class RoleInferences:
    """GET: every rule, grouped by prior role."""

    def on_get(self, req, resp):
        deps = common.deps(req)
        with deps.db.begin() as session:
            roles = {r.id: r for r in session.scalars(sa.select(Role))}
            base = deps.base_url(req)
            docs = [{"prior_role": _ref(roles[prior], base),
                     "implies": [_ref(roles[i], base) for i in sorted(implied, key=lambda i: roles[i].name)]}
                    for prior, implied in sorted(_rules(session).items(), key=lambda item: roles[item[0]].name)]
        common.respond(resp, {"role_inferences": docs, "links": {"self": f"{base}/v3/role_inferences"}})


def register(app: falcon.App) -> None:
    app.add_route("/v3/roles/{role_id}/implies", Implies())
    app.add_route("/v3/roles/{role_id}/implies/{implied_role_id}", ImpliesItem())
    app.add_route("/v3/role_inferences", RoleInferences())


OPENAPI_OPERATIONS: list = [
    ("get", "/v3/roles/{role_id}/implies", "List the roles a role implies", None, 200),
    ("put", "/v3/roles/{role_id}/implies/{implied_role_id}", "Make a role imply another (admin)", None, 201),
    ("get", "/v3/roles/{role_id}/implies/{implied_role_id}", "Show a role inference rule", None, 200),
    ("head", "/v3/roles/{role_id}/implies/{implied_role_id}", "Check a role inference rule", None, 204),
    ("delete", "/v3/roles/{role_id}/implies/{implied_role_id}", "Delete a role inference rule (admin)",
     None, 204),
    ("get", "/v3/role_inferences", "List every role inference rule", None, 200),
]
