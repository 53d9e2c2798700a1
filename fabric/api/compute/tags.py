"""Server tags (Compute 2.26): ``/servers/{id}/tags`` and the ``?tags=`` listing filters.

The one home of the tag rules (Nova's): at most :data:`MAX_TAGS` tags per server,
each 1 to :data:`MAX_TAG_LENGTH` characters without "/" or ",". Changes take the
server's row lock, so two requests adding tags at once cannot pass the limit
together. Below microversion 2.26 the endpoints are not there (404, as in Nova)
and the listing filters are ignored.
"""

from __future__ import annotations

import falcon
import sqlalchemy as sa
from marshmallow import Schema, fields

from fabric import exception
from fabric.api import common
from fabric.api.compute import microversion
from fabric.api.compute.lookup import get_instance, get_instance_for_update
from fabric.db.models import Instance, InstanceTag

MAX_TAGS = 50
MAX_TAG_LENGTH = 60
_FORBIDDEN = ("/", ",")

TAGS_REPLACE = Schema.from_dict({"tags": fields.List(fields.String(), required=True)})()


def check_tag(tag: str) -> str:
    """``tag`` if Nova would accept it; Invalid naming it and the rule otherwise."""
    if not isinstance(tag, str) or not 1 <= len(tag) <= MAX_TAG_LENGTH:
        raise exception.Invalid(reason=f"tag {tag!r} must be 1 to {MAX_TAG_LENGTH} characters")
    bad = [c for c in _FORBIDDEN if c in tag]
    if bad:
        raise exception.Invalid(reason=f"tag {tag!r} contains {' and '.join(map(repr, bad))}; tags may not "
                                       f"contain '/' or ','")
    return tag


def check_tags(values, where: str) -> list[str]:
    """``values`` (a body's list of tags, e.g. a 2.52 server create's, named ``where``) as a sorted
    set if Nova would accept it; Invalid naming the bad value otherwise."""
    if not isinstance(values, list):
        raise exception.Invalid(reason=f"{where} must be a list of tags, not {type(values).__name__}")
    wanted = sorted({check_tag(t) for t in values})
    if len(wanted) > MAX_TAGS:
        raise exception.Invalid(reason=f"{where} names {len(wanted)} tags; the limit is {MAX_TAGS}")
    return wanted


def _check_count(count: int, server_id: str) -> None:
    if count > MAX_TAGS:
        raise exception.Invalid(reason=f"server {server_id} would have {count} tags; the limit is {MAX_TAGS}")


def _require_version(req) -> None:
    if not microversion.at_least(req, microversion.TAGS):
        raise exception.NotFound(kind="Resource", ident=f"{req.path} (server tags need microversion "
                                                        f"{microversion.text(microversion.TAGS)} or later)")


def _tags_of(session, server_id: str) -> list[str]:
    return list(session.scalars(sa.select(InstanceTag.tag).where(InstanceTag.instance_id == server_id)
                                .order_by(InstanceTag.tag)))


def _locked_server(req, session, server_id: str) -> Instance:
    return get_instance_for_update(session, common.ctx(req), server_id)


def _split(value: str, name: str) -> list[str]:
    tags = [t for t in value.split(",") if t]
    if not tags:
        raise exception.Invalid(reason=f"{name}={value!r} names no tag")
    return tags


def filter_servers(query: sa.Select, req) -> sa.Select:
    """``query`` (of instances) narrowed by ``tags`` (all of), ``tags-any``, ``not-tags`` (not all
    of) and ``not-tags-any`` (none of), each a comma-separated list, from microversion 2.26."""
    if not microversion.at_least(req, microversion.TAGS):
        return query

    def having(tag: str):
        return Instance.id.in_(sa.select(InstanceTag.instance_id).where(InstanceTag.tag == tag))

    def having_any(tags: list[str]):
        return Instance.id.in_(sa.select(InstanceTag.instance_id).where(InstanceTag.tag.in_(tags)))

    if value := req.get_param("tags"):
        query = query.where(*[having(t) for t in _split(value, "tags")])
    if value := req.get_param("tags-any"):
        query = query.where(having_any(_split(value, "tags-any")))
    if value := req.get_param("not-tags"):
        query = query.where(sa.not_(sa.and_(*[having(t) for t in _split(value, "not-tags")])))
    if value := req.get_param("not-tags-any"):
        query = query.where(sa.not_(having_any(_split(value, "not-tags-any"))))
    return query


class ServerTags:
    def on_get(self, req, resp, server_id):
        """The server's tags, sorted."""
        _require_version(req)

        with common.deps(req).db.begin() as session:
            get_instance(session, common.ctx(req), server_id)
            common.respond(resp, {"tags": _tags_of(session, server_id)})

    def on_put(self, req, resp, server_id):
        """Replace every tag; answers the new set."""
        _require_version(req)
        wanted = sorted({check_tag(t) for t in common.body(req, TAGS_REPLACE)["tags"]})
        _check_count(len(wanted), server_id)
        with common.deps(req).db.begin() as session:
            _locked_server(req, session, server_id)
            session.execute(sa.delete(InstanceTag).where(InstanceTag.instance_id == server_id))
            session.add_all(InstanceTag(instance_id=server_id, tag=t) for t in wanted)
        common.respond(resp, {"tags": wanted})

    def on_delete(self, req, resp, server_id):
        """Remove every tag."""
        _require_version(req)
        with common.deps(req).db.begin() as session:
            _locked_server(req, session, server_id)
            session.execute(sa.delete(InstanceTag).where(InstanceTag.instance_id == server_id))
        resp.status = falcon.HTTP_204


class ServerTag:
    def on_get(self, req, resp, server_id, tag):
        """204 when the server has ``tag``, 404 naming it otherwise."""
        _require_version(req)

        with common.deps(req).db.begin() as session:
            get_instance(session, common.ctx(req), server_id)
            if session.get(InstanceTag, (server_id, tag)) is None:
                raise exception.NotFound(kind="Tag", ident=f"{tag!r} of server {server_id}")
        resp.status = falcon.HTTP_204

    def on_put(self, req, resp, server_id, tag):
        """Add one tag: 201 with its Location when new, 204 when the server had it."""
        _require_version(req)
        check_tag(tag)
        with common.deps(req).db.begin() as session:
            _locked_server(req, session, server_id)
            if session.get(InstanceTag, (server_id, tag)) is not None:
                resp.status = falcon.HTTP_204
                return
            _check_count(len(_tags_of(session, server_id)) + 1, server_id)
            session.add(InstanceTag(instance_id=server_id, tag=tag))
        resp.status = falcon.HTTP_201
        resp.set_header("Location", f"{common.deps(req).base_url(req)}/compute/v2.1/servers/{server_id}/tags/{tag}")

    def on_delete(self, req, resp, server_id, tag):
        """Remove one tag; 404 naming it when the server does not have it."""
        _require_version(req)
        with common.deps(req).db.begin() as session:
            _locked_server(req, session, server_id)
            removed = session.execute(sa.delete(InstanceTag).where(
                InstanceTag.instance_id == server_id, InstanceTag.tag == tag)).rowcount
            if not removed:
                raise exception.NotFound(kind="Tag", ident=f"{tag!r} of server {server_id}")
        resp.status = falcon.HTTP_204


def register(app: falcon.App, prefix: str) -> None:
    app.add_route(f"{prefix}/servers/{{server_id}}/tags", ServerTags())
    app.add_route(f"{prefix}/servers/{{server_id}}/tags/{{tag}}", ServerTag())
