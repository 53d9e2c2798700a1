"""os-keypairs: import a public key or generate a pair; list, show, delete.

Keys are parsed with ``cryptography`` so a malformed key is refused with a
clear message; generated pairs are Ed25519 and the private key is returned
once, never stored.
"""

from __future__ import annotations

import base64
import hashlib

import falcon
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from marshmallow import Schema, fields, validate
from sqlalchemy import exc as sa_exc

from fabric import exception
from fabric.api import common, quota
from fabric.db.models import Keypair

_NAME = validate.Regexp(r"^[A-Za-z0-9 _.@-]{1,255}$",
                        error="keypair names are 1-255 letters, digits, spaces, '_', '-', '.' or '@'")


class KeypairCreateSchema(Schema):
    name = fields.String(required=True, validate=_NAME)
    public_key = fields.String(load_default=None, allow_none=True)
    type = fields.String(load_default="ssh", validate=validate.OneOf(["ssh"]))


KEYPAIR_CREATE = Schema.from_dict({"keypair": fields.Nested(KeypairCreateSchema, required=True)})()


def fingerprint_of(public_key: str) -> str:
    """The key's MD5 fingerprint (aa:bb:...) as nova shows it; Invalid if it is not an SSH public key."""
    try:
        serialization.load_ssh_public_key(public_key.strip().encode("utf-8"))
        blob = base64.b64decode(public_key.split()[1])
    except (ValueError, IndexError, UnicodeError) as exc:
        raise exception.Invalid(reason=f"keypair.public_key is not an SSH public key "
                                       f"('ssh-ed25519 AAAA...' or 'ssh-rsa AAAA...'): {exc}") from None
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def generate_pair() -> tuple[str, str]:
    """(private key in OpenSSH PEM, public key line) of a new Ed25519 pair."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode("ascii")
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode("ascii")
    return private, public + " fabric-generated"


def keypair_document(pair: Keypair, full: bool) -> dict:
    doc = {"name": pair.name, "public_key": pair.public_key, "fingerprint": pair.fingerprint, "type": pair.type}
    if full:
        doc.update({"id": pair.id, "user_id": pair.user_id, "created_at": common.isotime(pair.created_at),
                    "updated_at": None, "deleted": False, "deleted_at": None})
    return doc


def _user_filter(req) -> str:
    context = common.ctx(req)
    wanted = req.get_param("user_id")
    if wanted and wanted != context.user_id:
        if not context.is_admin:
            raise exception.Forbidden(reason="only an admin may see another user's keypairs")
        return wanted
    return context.user_id


class Keypairs:
    def on_get(self, req, resp):
        user_id = _user_filter(req)
        with common.deps(req).db.begin() as session:
            rows = session.scalars(sa.select(Keypair).where(Keypair.user_id == user_id).order_by(Keypair.name))
            common.respond(resp, {"keypairs": [{"keypair": keypair_document(k, False)} for k in rows]})

    def on_post(self, req, resp):
        context = common.ctx(req)
        data = common.body(req, KEYPAIR_CREATE)["keypair"]
        private = None
        public = data["public_key"]
        if public is None:
            private, public = generate_pair()
        fingerprint = fingerprint_of(public)
        try:
            with common.deps(req).db.begin() as session:
                count = session.scalar(sa.select(sa.func.count()).select_from(Keypair)
                                       .where(Keypair.user_id == context.user_id))
                limit = quota.DEFAULT_LIMITS["key_pairs"]
                if count >= limit:
                    raise exception.QuotaExceeded(resource="key_pairs", project=context.project_id,
                                                  requested=1, in_use=count, limit=limit)
                pair = Keypair(name=data["name"], user_id=context.user_id, fingerprint=fingerprint,
                               public_key=public.strip(), type=data["type"])
                session.add(pair)
                session.flush()
                doc = keypair_document(pair, False)
                doc["user_id"] = context.user_id
        except sa_exc.IntegrityError:
            raise exception.Conflict(reason=f"keypair {data['name']!r} already exists for this user") from None
        if private is not None:
            doc["private_key"] = private
        common.respond(resp, {"keypair": doc})


class KeypairItem:
    def on_get(self, req, resp, name):
        user_id = _user_filter(req)
        with common.deps(req).db.begin() as session:
            pair = session.scalar(sa.select(Keypair).where(Keypair.user_id == user_id, Keypair.name == name))
            if pair is None:
                raise exception.NotFound(kind="Keypair", ident=name)
            common.respond(resp, {"keypair": keypair_document(pair, True)})

    def on_delete(self, req, resp, name):
        user_id = _user_filter(req)
        with common.deps(req).db.begin() as session:
            if not session.execute(sa.delete(Keypair).where(Keypair.user_id == user_id,
                                                            Keypair.name == name)).rowcount:
                raise exception.NotFound(kind="Keypair", ident=name)
        resp.status = falcon.HTTP_202


def register(app: falcon.App, prefix: str) -> None:
    app.add_route(f"{prefix}/os-keypairs", Keypairs())
    app.add_route(f"{prefix}/os-keypairs/{{name}}", KeypairItem())
