"""What a project carries beyond its row: the project it nests in, and its tags
(Keystone's project hierarchy and project tags, ``/v3/projects/{id}/tags``).

Promises:

* a project nests in a project of its own domain (``parent_id``; without one, or with its
  domain's id, it sits directly in the domain, whose id its document names as parent);
* a project with children cannot be deleted (403 naming them; Keystone's rule), nor can a
  parent be deleted under a child being made (the parent row is RESTRICTed);
* tags: at most :data:`MAX_TAGS` per project, each 1 to 255 characters without ``/`` or
  ``,`` (they are path segments and list separators), a project's tags unique; refusals
  are 400s naming the tag;
* ``?tags=a,b`` lists projects with every tag, ``?tags-any=`` with one of them,
  ``?not-tags=`` without all of them, ``?not-tags-any=`` with none of them.
"""

from __future__ import annotations

import falcon
import sqlalchemy as sa

from fabric import exception
from fabric.api import common
from fabric.db.models import Project, ProjectParent, ProjectTag

#: Keystone's limit of tags on one project.
MAX_TAGS = 80


def check_tag(tag: object) -> str:
    if not isinstance(tag, str) or not 0 < len(tag) <= 255 or "/" in tag or "," in tag:
        raise exception.Invalid(reason=f"tag {tag!r} must be 1 to 255 characters without '/' or ','")
    return tag


def check_tags(tags: object) -> list[str]:
    if not isinstance(tags, list):
        raise exception.Invalid(reason=f"tags must be a list of strings, got {tags!r}")
    if len(tags) > MAX_TAGS:
        raise exception.Invalid(reason=f"{len(tags)} tags given; a project has at most {MAX_TAGS}")
    return sorted({check_tag(tag) for tag in tags})


def set_tags(session, project_id: str, tags: list[str]) -> None:
    """Replace the project's tags with ``tags`` (checked by :func:`check_tags`)."""
    session.execute(sa.delete(ProjectTag).where(ProjectTag.project_id == project_id))
    session.add_all(ProjectTag(project_id=project_id, name=tag) for tag in tags)
    session.flush()


def tags_of(session, project_id: str) -> list[str]:
    return list(session.scalars(sa.select(ProjectTag.name).where(ProjectTag.project_id == project_id)
                                .order_by(ProjectTag.name)))


def set_parent(session, project: Project, parent_id: str | None) -> None:
    """Nest a new ``project`` in ``parent_id`` (None or its domain's id: in the domain itself)."""
    if parent_id in (None, project.domain_id):
        return
    parent = session.get(Project, parent_id)
    if parent is None:
        raise exception.Invalid(reason=f"parent_id {parent_id!r}: no such project")
    if parent.domain_id != project.domain_id:
        raise exception.Invalid(reason=f"parent_id {parent_id!r} is in domain {parent.domain_id}; project "
                                       f"{project.name!r} is in {project.domain_id}: a project nests in its own domain")
    session.add(ProjectParent(project_id=project.id, parent_id=parent_id))
    session.flush()


def domain_of_parent(session, parent_id: str | None) -> str | None:
    """The domain a new project nested in ``parent_id`` belongs to (Keystone takes the
    parent's when none is given); None when ``parent_id`` names no project."""
    parent = session.get(Project, parent_id) if parent_id else None
    return parent.domain_id if parent is not None else None


def refuse_delete_with_children(session, project_id: str) -> None:
    children = list(session.scalars(sa.select(ProjectParent.project_id).where(ProjectParent.parent_id == project_id)
                                    .order_by(ProjectParent.project_id)))
    if children:
        raise exception.Forbidden(reason=f"project {project_id} has child projects ({', '.join(children)}): "
                                         f"delete them first")


def ancestors(session, project_id: str) -> list[str]:
    """The projects ``project_id`` nests in, nearest first (not itself)."""
    found: list[str] = []
    parent = session.scalar(sa.select(ProjectParent.parent_id).where(ProjectParent.project_id == project_id))
    while parent is not None and parent not in found:
        found.append(parent)
        parent = session.scalar(sa.select(ProjectParent.parent_id).where(ProjectParent.project_id == parent))
    return found


def descendants(session, project_id: str) -> list[str]:
    """Every project nested under ``project_id``, at any depth (not itself)."""
    found: list[str] = []
    level = [project_id]
    while level:
        level = [p for p in session.scalars(sa.select(ProjectParent.project_id)
                                            .where(ProjectParent.parent_id.in_(level))) if p not in found]
        found += level
    return found


def unnest_domain(session, domain_id: str) -> None:
    """Undo the nesting of a domain's projects, so that deleting them all (with their domain)
    meets no parent still holding a child."""
    in_domain = sa.select(Project.id).where(Project.domain_id == domain_id)
    session.execute(sa.delete(ProjectParent).where(ProjectParent.project_id.in_(in_domain)))


def carried(session, projects: list[Project]) -> dict[str, tuple[str | None, list[str]]]:
    """Project id -> (its parent project's id or None, its tags), for these projects in two queries."""
    ids = [p.id for p in projects]
    if not ids:
        return {}
    parents = dict(session.execute(sa.select(ProjectParent.project_id, ProjectParent.parent_id)
                                   .where(ProjectParent.project_id.in_(ids))).all())
    tags: dict[str, list[str]] = {}
    for project_id, name in session.execute(sa.select(ProjectTag.project_id, ProjectTag.name)
                                            .where(ProjectTag.project_id.in_(ids)).order_by(ProjectTag.name)):
        tags.setdefault(project_id, []).append(name)
    return {i: (parents.get(i), tags.get(i, [])) for i in ids}


def filtered(query: sa.Select, req: falcon.Request) -> sa.Select:
    """``query`` (of projects) narrowed by ``?parent_id`` and the tag filters."""
    parent_id = req.get_param("parent_id")
    if parent_id:
        nested = sa.select(ProjectParent.project_id).where(ProjectParent.parent_id == parent_id)
        query = query.where(sa.or_(Project.id.in_(nested), sa.and_(
            Project.domain_id == parent_id, Project.id.not_in(sa.select(ProjectParent.project_id)))))
    for param, wanted_all, negate in (("tags", True, False), ("tags-any", False, False),
                                      ("not-tags", True, True), ("not-tags-any", False, True)):
        raw = req.get_param(param)
        if not raw:
            continue
        tags = [check_tag(t) for t in raw.split(",")]
        having = sa.select(ProjectTag.project_id).where(ProjectTag.name.in_(tags)).group_by(ProjectTag.project_id)
        if wanted_all:
            having = having.having(sa.func.count() == len(set(tags)))
        query = query.where(Project.id.not_in(having) if negate else Project.id.in_(having))
    return query


class ProjectTags:
    """``/v3/projects/{id}/tags``: list, replace (PUT ``{"tags": [...]}``), remove all."""

    def on_get(self, req, resp, project_id):
        with common.deps(req).db.begin() as session:
            common.get_or_404(session, Project, project_id, "Project")
            common.respond(resp, {"tags": tags_of(session, project_id)})

    def on_put(self, req, resp, project_id):
        body = common.read_json(req)
        tags = check_tags(body.get("tags") if isinstance(body, dict) else None)
        with common.deps(req).db.begin() as session:
            common.get_or_404(session, Project, project_id, "Project")
            set_tags(session, project_id, tags)
        common.respond(resp, {"tags": tags})

    def on_delete(self, req, resp, project_id):
        with common.deps(req).db.begin() as session:
            common.get_or_404(session, Project, project_id, "Project")
            set_tags(session, project_id, [])
        resp.status = falcon.HTTP_204


class ProjectTagItem:
    """``/v3/projects/{id}/tags/{tag}``: check (204 or 404), add (201), remove."""

    def on_get(self, req, resp, project_id, tag):
        with common.deps(req).db.begin() as session:
            common.get_or_404(session, Project, project_id, "Project")
            if tag not in tags_of(session, project_id):
                raise exception.NotFound(kind="Tag", ident=tag)
        resp.status = falcon.HTTP_204

    on_head = on_get

    def on_put(self, req, resp, project_id, tag):
        check_tag(tag)
        with common.deps(req).db.begin() as session:
            common.get_or_404(session, Project, project_id, "Project")
            present = tags_of(session, project_id)
            if tag not in present:
                set_tags(session, project_id, check_tags([*present, tag]))
        resp.status = falcon.HTTP_201
        resp.location = req.uri

    def on_delete(self, req, resp, project_id, tag):
        with common.deps(req).db.begin() as session:
            common.get_or_404(session, Project, project_id, "Project")
            present = tags_of(session, project_id)
            if tag not in present:
                raise exception.NotFound(kind="Tag", ident=tag)
            set_tags(session, project_id, [t for t in present if t != tag])
        resp.status = falcon.HTTP_204


def register(app: falcon.App) -> None:
    app.add_route("/v3/projects/{project_id}/tags", ProjectTags())
    app.add_route("/v3/projects/{project_id}/tags/{tag}", ProjectTagItem())


OPENAPI_OPERATIONS: list = [
    ("get", "/v3/projects/{project_id}/tags", "List a project's tags", None, 200),
    ("put", "/v3/projects/{project_id}/tags", "Replace a project's tags (admin)", None, 200),
    ("delete", "/v3/projects/{project_id}/tags", "Remove every tag of a project (admin)", None, 204),
    ("get", "/v3/projects/{project_id}/tags/{tag}", "Check a project has a tag (204, else 404)", None, 204),
    ("head", "/v3/projects/{project_id}/tags/{tag}", "Check a project has a tag (204, else 404)", None, 204),
    ("put", "/v3/projects/{project_id}/tags/{tag}", "Add a tag to a project (admin)", None, 201),
    ("delete", "/v3/projects/{project_id}/tags/{tag}", "Remove a tag from a project (admin)", None, 204),
]
