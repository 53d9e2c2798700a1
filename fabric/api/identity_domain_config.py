"""Per-domain identity configuration (``/v3/domains/{domain_id}/config``), as Keystone's API:
the ``identity`` and ``ldap`` groups' options, stored in the database and answered as given
(the password only stored, never answered), plus the defaults under ``/v3/domains/config``.

fabric stores what it is told and does not act on it: its LDAP backend is the one ``[ldap]``
names in the configuration file. The options are Keystone's allowed ones, so a tool that
manages Keystone's domain configuration finds the same answers.
"""

from __future__ import annotations

from typing import Any

import falcon
import sqlalchemy as sa

from fabric import exception
from fabric.api import common
from fabric.api.identity_admin import require_domain
from fabric.db.models.identity import DomainConfig

#: group -> option -> its default (Keystone's defaults for the options it lets a domain set).
DEFAULTS: dict[str, dict[str, Any]] = {
    "identity": {"driver": "sql", "list_limit": None},
    "ldap": {
        "url": "ldap://localhost", "user": None, "suffix": "cn=example,cn=com", "query_scope": "one",
        "page_size": 0, "alias_dereferencing": "default", "chase_referrals": None,
        "user_tree_dn": None, "user_filter": None, "user_objectclass": "inetOrgPerson",
        "user_id_attribute": "cn", "user_name_attribute": "sn", "user_mail_attribute": "mail",
        "user_description_attribute": "description", "user_pass_attribute": "userPassword",
        "user_enabled_attribute": "enabled", "user_enabled_invert": False, "user_enabled_mask": 0,
        "user_enabled_default": "True", "user_attribute_ignore": ["default_project_id"],
        "user_default_project_id_attribute": None, "user_enabled_emulation": False,
        "user_enabled_emulation_dn": None, "user_additional_attribute_mapping": [],
        "group_tree_dn": None, "group_filter": None, "group_objectclass": "groupOfNames",
        "group_id_attribute": "cn", "group_name_attribute": "ou", "group_members_are_ids": False,
        "group_member_attribute": "member", "group_desc_attribute": "description",
        "group_attribute_ignore": [], "group_additional_attribute_mapping": [],
        "tls_cacertfile": None, "tls_cacertdir": None, "use_tls": False, "tls_req_cert": "demand",
    },
}
#: Options a domain may set but that are never answered (Keystone's sensitive options).
SENSITIVE = {"ldap": {"password"}}
#: The longest value stored, as JSON text.
MAX_VALUE = 1024


def _check_option(group: str, option: str) -> None:
    if group not in DEFAULTS:
        raise exception.Invalid(reason=f"configuration group {group!r} cannot be set for a domain; "
                                       f"groups: {', '.join(DEFAULTS)}")
    if option not in DEFAULTS[group] and option not in SENSITIVE.get(group, ()):
        raise exception.Invalid(reason=f"option {option!r} of group {group!r} cannot be set for a domain")


def _check_value(group: str, option: str, value: Any) -> Any:
    """A value is a string, number, boolean, null or a list of strings, of bounded length."""
    scalar = (str, int, float, bool, type(None))
    if not (isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
        raise exception.Invalid(reason=f"{group}.{option} must be a string, number, boolean or list of strings, "
                                       f"got {value!r:.80}")
    if len(repr(value)) > MAX_VALUE:
        raise exception.Invalid(reason=f"{group}.{option} is longer than {MAX_VALUE} characters")
    return value


def _groups_in(body: Any, only: str | None = None) -> dict[str, dict[str, Any]]:
    """The ``{group: {option: value}}`` of a request's ``config``, checked; ``only``: the one
    group the path names."""
    config = body.get("config") if isinstance(body, dict) else None
    if not isinstance(config, dict) or not config:
        raise exception.Invalid(reason="the body must be {\"config\": {group: {option: value}}}")
    for group, options in config.items():
        if only is not None and group != only:
            raise exception.Invalid(reason=f"the path names group {only!r}, the body {group!r}")
        if not isinstance(options, dict) or not options:
            raise exception.Invalid(reason=f"config group {group!r} must be a non-empty object of options")
        for option, value in options.items():
            _check_option(group, option)
            _check_value(group, option, value)
    return config


def _read(session, domain_id: str) -> dict[str, dict[str, Any]]:
    """A domain's stored configuration without its sensitive options."""
    config: dict[str, dict[str, Any]] = {}
    for row in session.scalars(sa.select(DomainConfig).where(DomainConfig.domain_id == domain_id)
                               .order_by(DomainConfig.group, DomainConfig.option)):
        if row.option not in SENSITIVE.get(row.group, ()):
            config.setdefault(row.group, {})[row.option] = row.value
    return config


def _write(session, domain_id: str, config: dict[str, dict[str, Any]]) -> None:
    for group, options in config.items():
        for option, value in options.items():
            row = session.get(DomainConfig, (domain_id, group, option))
            if row is None:
                session.add(DomainConfig(domain_id=domain_id, group=group, option=option, value=value))
            else:
                row.value = value
    session.flush()


def _stored(session, domain_id: str) -> dict[str, dict[str, Any]]:
    config = _read(session, domain_id)
    if not config:
        raise exception.NotFound(kind="Configuration of domain", ident=domain_id)
    return config


def _delete(session, domain_id: str, *where) -> None:
    if not session.execute(sa.delete(DomainConfig).where(DomainConfig.domain_id == domain_id, *where)).rowcount:
        raise exception.NotFound(kind="Configuration of domain", ident=domain_id)


class DomainConfigResource:
    """PUT creates (201) or replaces (200); GET; PATCH merges; DELETE."""

    def on_put(self, req, resp, domain_id):
        body = common.read_json(req)
        with common.deps(req).db.begin() as session:
            require_domain(session, domain_id)
            config = _groups_in(body)
            existed = bool(_read(session, domain_id))
            session.execute(sa.delete(DomainConfig).where(DomainConfig.domain_id == domain_id))
            _write(session, domain_id, config)
            common.respond(resp, {"config": _read(session, domain_id)},
                           falcon.HTTP_200 if existed else falcon.HTTP_201)

    def on_get(self, req, resp, domain_id):
        with common.deps(req).db.begin() as session:
            require_domain(session, domain_id)
            common.respond(resp, {"config": _stored(session, domain_id)})

    def on_patch(self, req, resp, domain_id):
        body = common.read_json(req)
        with common.deps(req).db.begin() as session:
            require_domain(session, domain_id)
            _stored(session, domain_id)
            _write(session, domain_id, _groups_in(body))
            common.respond(resp, {"config": _read(session, domain_id)})

    def on_delete(self, req, resp, domain_id):
        with common.deps(req).db.begin() as session:
            require_domain(session, domain_id)
            _delete(session, domain_id)
        resp.status = falcon.HTTP_204


class DomainConfigGroup:
    def on_get(self, req, resp, domain_id, group):
        with common.deps(req).db.begin() as session:
            require_domain(session, domain_id)
            config = _stored(session, domain_id)
            if group not in config:
                raise exception.NotFound(kind=f"Configuration group of domain {domain_id}", ident=group)
            common.respond(resp, {"config": {group: config[group]}})

    def on_patch(self, req, resp, domain_id, group):
        body = common.read_json(req)
        with common.deps(req).db.begin() as session:
            require_domain(session, domain_id)
            _stored(session, domain_id)
            _write(session, domain_id, _groups_in(body, only=group))
            common.respond(resp, {"config": _read(session, domain_id)})

    def on_delete(self, req, resp, domain_id, group):
        with common.deps(req).db.begin() as session:
            require_domain(session, domain_id)
            _delete(session, domain_id, DomainConfig.group == group)
        resp.status = falcon.HTTP_204


class DomainConfigOption:
    def on_get(self, req, resp, domain_id, group, option):
        with common.deps(req).db.begin() as session:
            require_domain(session, domain_id)
            options = _stored(session, domain_id).get(group, {})
            if option not in options:
                raise exception.NotFound(kind=f"Configuration option of domain {domain_id}", ident=f"{group}.{option}")
            common.respond(resp, {"config": {option: options[option]}})

    def on_patch(self, req, resp, domain_id, group, option):
        body = common.read_json(req)
        config = body.get("config") if isinstance(body, dict) else None
        if not isinstance(config, dict) or set(config) != {option}:
            raise exception.Invalid(reason=f"the body must be {{\"config\": {{\"{option}\": value}}}}")
        _check_option(group, option)
        value = _check_value(group, option, config[option])
        with common.deps(req).db.begin() as session:
            require_domain(session, domain_id)
            _stored(session, domain_id)
            _write(session, domain_id, {group: {option: value}})
            common.respond(resp, {"config": _read(session, domain_id)})

    def on_delete(self, req, resp, domain_id, group, option):
        with common.deps(req).db.begin() as session:
            require_domain(session, domain_id)
            _delete(session, domain_id, DomainConfig.group == group, DomainConfig.option == option)
        resp.status = falcon.HTTP_204


class Defaults:
    def on_get(self, req, resp):
        common.respond(resp, {"config": DEFAULTS})


class GroupDefaults:
    def on_get(self, req, resp, group):
        if group not in DEFAULTS:
            raise exception.NotFound(kind="Configuration group", ident=group)
        common.respond(resp, {"config": {group: DEFAULTS[group]}})


class OptionDefault:
    def on_get(self, req, resp, group, option):
        if option not in DEFAULTS.get(group, {}):
            raise exception.NotFound(kind="Configuration option", ident=f"{group}.{option}")
        common.respond(resp, {"config": {option: DEFAULTS[group][option]}})


_DOMAIN = "/v3/domains/{domain_id}/config"


def register(app: falcon.App) -> None:
    app.add_route("/v3/domains/config/default", Defaults())
    app.add_route("/v3/domains/config/{group}/default", GroupDefaults())
    app.add_route("/v3/domains/config/{group}/{option}/default", OptionDefault())
    app.add_route(_DOMAIN, DomainConfigResource())
    app.add_route(f"{_DOMAIN}/{{group}}", DomainConfigGroup())
    app.add_route(f"{_DOMAIN}/{{group}}/{{option}}", DomainConfigOption())


_CONFIG_BODY: dict = {"type": "object", "required": ["config"], "properties": {"config": {
    "type": "object", "minProperties": 1, "additionalProperties": {"type": "object", "minProperties": 1}}}}

#: This module's operations for the OpenAPI document (fabric.api.openapi).
OPENAPI_OPERATIONS: list = [
    ("get", "/v3/domains/config/default", "The default domain configuration (identity and ldap groups)", None,
     200),
    ("get", "/v3/domains/config/{group}/default", "A configuration group's defaults", None, 200),
    ("get", "/v3/domains/config/{group}/{option}/default", "A configuration option's default", None, 200),
    ("put", _DOMAIN, "Set a domain's configuration (201 new, 200 replaced; admin)", _CONFIG_BODY, 201),
    ("get", _DOMAIN, "A domain's configuration, but its sensitive options (admin)", None, 200),
    ("patch", _DOMAIN, "Change options of a domain's configuration (admin)", _CONFIG_BODY, 200),
    ("delete", _DOMAIN, "Delete a domain's configuration (admin)", None, 204),
    ("get", f"{_DOMAIN}/{{group}}", "One group of a domain's configuration (admin)", None, 200),
    ("patch", f"{_DOMAIN}/{{group}}", "Change options of one group (admin)", _CONFIG_BODY, 200),
    ("delete", f"{_DOMAIN}/{{group}}", "Delete one group of a domain's configuration (admin)", None, 204),
    ("get", f"{_DOMAIN}/{{group}}/{{option}}", "One option of a domain's configuration (admin)", None, 200),
    ("patch", f"{_DOMAIN}/{{group}}/{{option}}", "Change one option (admin)",
     {"type": "object", "required": ["config"], "properties": {"config": {"type": "object", "minProperties": 1,
                                                                          "maxProperties": 1}}}, 200),
    ("delete", f"{_DOMAIN}/{{group}}/{{option}}", "Delete one option of a domain's configuration (admin)", None,
     204),
]
