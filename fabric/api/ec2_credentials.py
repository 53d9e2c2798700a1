"""Identity v3's OS-EC2 credentials: the access keys the objectstore's SigV4 checks.

``/v3/users/{user_id}/credentials/OS-EC2`` (create, list) and
``/v3/users/{user_id}/credentials/OS-EC2/{access}`` (show, delete), in
Keystone's shapes, so ``openstack ec2 credentials create|list|show|delete``
work. Each credential is bound to one user and one project the user has a
role on; a user manages their own, an admin anyone's.

The secret is stored as issued (Keystone does the same): a SigV4 signature is
an HMAC keyed by a key derived from the secret, so the verifier needs the
secret itself and cannot keep only a hash.
"""

from __future__ import annotations

import hashlib
import secrets

import falcon
import sqlalchemy as sa
from marshmallow import INCLUDE, Schema, fields

from fabric import exception
from fabric.api import common
from fabric.db.models import Ec2Credential, Project, RoleAssignment, User


class CredentialCreateSchema(Schema):
    class Meta:
        unknown = INCLUDE

    tenant_id = fields.String(required=True)


def credential_document(row: Ec2Credential, base: str) -> dict:
    return {"user_id": row.user_id, "tenant_id": row.project_id, "access": row.access, "secret": row.secret,
            "trust_id": None,
            "links": {"self": f"{base}/v3/users/{row.user_id}/credentials/OS-EC2/{row.access}"}}


def _user_or_404(session, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise exception.NotFound(kind="User", ident=user_id)
    return user


def credential_id(access: str) -> str:
    """A credential's id under ``/v3/credentials``: Keystone's, the SHA-256 of its access key."""
    return hashlib.sha256(access.encode()).hexdigest()


def require_role_on(session, user_id: str, project_id: str, *, role_needed: bool = True) -> None:
    """NotFound for an unknown user or project; unless ``role_needed`` is false (an admin
    giving one), Forbidden unless the user holds a role on the project (an EC2 credential
    acts as the user in that project)."""
    _user_or_404(session, user_id)
    if session.get(Project, project_id) is None:
        raise exception.NotFound(kind="Project", ident=project_id)
    if not role_needed:
        return
    granted = session.scalar(sa.select(RoleAssignment.id).where(
        RoleAssignment.user_id == user_id, RoleAssignment.project_id == project_id).limit(1))
    if granted is None:
        raise exception.Forbidden(reason=f"user {user_id} has no role on project {project_id}; "
                                         "an EC2 credential needs one")


class Ec2Credentials:
    """POST creates an access key for (user, project); GET lists the user's."""

    def on_post(self, req, resp, user_id):
        deps = common.deps(req)
        project_id = common.body(req, CredentialCreateSchema())["tenant_id"]
        with deps.db.begin() as session:
            require_role_on(session, user_id, project_id)
            access = secrets.token_hex(16)
            row = Ec2Credential(access=access, secret=secrets.token_hex(20), user_id=user_id,
                                project_id=project_id, credential_id=credential_id(access))
            session.add(row)
            session.flush()
            common.respond(resp, {"credential": credential_document(row, deps.base_url(req))}, falcon.HTTP_201)

    def on_get(self, req, resp, user_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            _user_or_404(session, user_id)
            rows = session.scalars(sa.select(Ec2Credential).where(Ec2Credential.user_id == user_id)
                                   .order_by(Ec2Credential.created_at, Ec2Credential.access)).all()
            base = deps.base_url(req)
            common.respond(resp, {"credentials": [credential_document(r, base) for r in rows],
                                  "links": {"self": f"{base}/v3/users/{user_id}/credentials/OS-EC2",
                                            "previous": None, "next": None}})


class Ec2CredentialItem:
    """GET shows, DELETE removes one of the user's access keys."""

    def _row(self, session, user_id: str, access: str) -> Ec2Credential:
        row = session.get(Ec2Credential, access)
        if row is None or row.user_id != user_id:
            raise exception.NotFound(kind="EC2 credential", ident=access)
        return row

    def on_get(self, req, resp, user_id, access):
        deps = common.deps(req)
        with deps.db.begin() as session:
            common.respond(resp, {"credential": credential_document(self._row(session, user_id, access),
                                                                    deps.base_url(req))})

    def on_delete(self, req, resp, user_id, access):
        with common.deps(req).db.begin() as session:
            session.delete(self._row(session, user_id, access))
        resp.status = falcon.HTTP_204


def register(app: falcon.App) -> None:
    app.add_route("/v3/users/{user_id}/credentials/OS-EC2", Ec2Credentials())
    app.add_route("/v3/users/{user_id}/credentials/OS-EC2/{access}", Ec2CredentialItem())
