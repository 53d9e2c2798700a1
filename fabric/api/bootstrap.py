"""The first admin, made by ``fabric-manage bootstrap`` (:mod:`fabric.cmd.manage_bootstrap`)
and by the API worker on an empty database.

Creates (or brings up to date) the admin, member and reader roles, the admin project
and the admin user with the admin role on it. Running it again changes
nothing but the password, if a new one is given.

The image service's identity (:func:`ensure_image_service`) is made by the Image API
on its first upload, not here: nothing can download an image before one is uploaded,
and a cloud bootstrapped before images moved to the objectstore gets it all the same.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from fabric import exception, images
from fabric.api import identity_catalog, passwords, policy
from fabric.db import Database
from fabric.db.models import Domain, Ec2Credential, Project, Role, RoleAssignment, User

ROLES = policy.ROLES


def _get_or_create(db: Database, model, lookup: dict, create: dict):
    """The row matching ``lookup``; created if missing (a concurrent creator wins the unique key)."""
    for _ in range(3):
        with db.begin() as session:
            row = session.scalar(sa.select(model).filter_by(**lookup))
            if row is not None:
                return row, False
        try:
            with db.begin() as session:
                row = model(**lookup, **create)
                session.add(row)
            return row, True
        except sa_exc.IntegrityError:
            continue
    raise exception.Conflict(reason=f"could not create {model.__tablename__} {lookup}")


def bootstrap(db: Database, admin_password: str, admin_user: str = "admin", admin_project: str = "admin",
              region: str = "RegionOne") -> dict:
    """Make sure the Default domain, the default service catalog (in ``region``), the roles,
    admin project, admin user and its grant exist; returns their ids."""
    if not admin_password:
        raise exception.Invalid(reason="the admin password must not be empty")
    _get_or_create(db, Domain, {"id": "default"}, {"name": "Default", "description": "The default domain"})
    try:
        with db.begin() as session:
            identity_catalog.seed(session, region)
    except sa_exc.IntegrityError:
        pass  # a concurrent bootstrap seeded it
    roles = {name: _get_or_create(db, Role, {"name": name, "domain_id": ""}, {})[0].id for name in ROLES}
    project, _ = _get_or_create(db, Project, {"name": admin_project, "domain_id": "default"},
                                {"description": "Bootstrap project for administering the cloud.", "enabled": True})
    user, created = _get_or_create(db, User, {"name": admin_user, "domain_id": "default"},
                                   {"password_hash": passwords.hash_password(admin_password), "enabled": True,
                                    "default_project_id": project.id})
    with db.begin() as session:
        current = session.get(User, user.id)
        if not created and not passwords.verify_password(admin_password, current.password_hash):
            current.password_hash = passwords.hash_password(admin_password)
        current.enabled = True
    for role in (policy.ADMIN_ROLE, policy.MEMBER_ROLE):
        _get_or_create(db, RoleAssignment, {"user_id": user.id, "project_id": project.id, "role_id": roles[role]},
                       {})
    return {"user_id": user.id, "project_id": project.id, "roles": roles}


def ensure_image_service(db: Database) -> tuple[str, str]:
    """(access key, secret) of the EC2 credential the image service signs its objectstore requests
    with, made on first use: a user :data:`fabric.images.SERVICE_USER` with no password (it
    cannot log in) and the member role on project :data:`fabric.images.SERVICE_PROJECT`.

    A credential of Identity's own, not a key of the objectstore's: the objectstore checks it
    like any other (project-private bucket, SigV4), and it lives where every host that reads
    images already reaches (the database), so no secret is copied into configuration files.
    """
    found = images.service_credential(db)
    if found is not None:
        return found
    member = _get_or_create(db, Role, {"name": "member", "domain_id": ""}, {})[0]
    project, _ = _get_or_create(db, Project, {"name": images.SERVICE_PROJECT, "domain_id": "default"},
                                {"description": "fabric's own services.", "enabled": True})
    user, _ = _get_or_create(db, User, {"name": images.SERVICE_USER, "domain_id": "default"},
                             {"password_hash": "", "enabled": True, "default_project_id": project.id})
    _get_or_create(db, RoleAssignment, {"user_id": user.id, "project_id": project.id, "role_id": member.id}, {})
    if images.service_credential(db) is None:
        with db.begin() as session:
            session.add(Ec2Credential(access=secrets.token_hex(16), secret=secrets.token_hex(20),
                                      user_id=user.id, project_id=project.id))
    # Two first uses at once may each have made one: every caller then uses the oldest.
    made = images.service_credential(db)
    assert made is not None  # just made, and nothing deletes it
    return made

