"""os-keypairs: import a public key or generate a pair; list, show, delete.

Keys are parsed with ``cryptography`` so a malformed key is refused with a
clear message; generated SSH pairs are Ed25519, generated x509 ones an RSA key
and its self-signed certificate, and the private key is returned once, never
stored. From microversion 2.2 a pair has a ``type`` (``ssh`` or ``x509``) and
create and delete answer 201 and 204; from 2.35 the listing pages (``limit``,
``marker`` naming a key pair), sorted by name.
"""

from __future__ import annotations

import base64
import datetime
import hashlib

import falcon
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import NameOID
from marshmallow import Schema, fields, validate
from sqlalchemy import exc as sa_exc

from fabric import exception
from fabric.api import common, quota
from fabric.api.compute import microversion
from fabric.db.models import Keypair

_NAME = validate.Regexp(r"^[A-Za-z0-9 _.@-]{1,255}$",
                        error="keypair names are 1-255 letters, digits, spaces, '_', '-', '.' or '@'")


class KeypairCreateSchema(Schema):
    name = fields.String(required=True, validate=_NAME)
    public_key = fields.String(load_default=None, allow_none=True)
    type = fields.String(validate=validate.OneOf(["ssh", "x509"]))  # 2.2


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


def certificate_fingerprint_of(certificate: str) -> str:
    """An x509 certificate's SHA-1 fingerprint (aa:bb:...) as Nova shows it; Invalid if it is not one."""
    try:
        cert = x509.load_pem_x509_certificate(certificate.strip().encode("utf-8"))
    except (ValueError, UnicodeError) as exc:
        raise exception.Invalid(reason=f"keypair.public_key is not a PEM x509 certificate: {exc}") from None
    digest = cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303 (Nova's fingerprint, not a signature)
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def generate_certificate(name: str) -> tuple[str, str]:
    """(private key in PEM, self-signed certificate in PEM) of a new x509 pair named ``name``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=3650)).sign(key, hashes.SHA256()))
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode("ascii")
    return private, cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def generate_pair() -> tuple[str, str]:
    """(private key in OpenSSH PEM, public key line) of a new Ed25519 pair."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode("ascii")
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode("ascii")
    return private, public + " fabric-generated"


def keypair_document(pair: Keypair, full: bool, with_type: bool = True) -> dict:
    """A key pair as Nova shows it (``full``: as ``show`` does; ``with_type``: from 2.2)."""
    doc = {"name": pair.name, "public_key": pair.public_key, "fingerprint": pair.fingerprint}
    if with_type:
        doc["type"] = pair.type
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
        typed = microversion.at_least(req, microversion.KEYPAIR_TYPE)
        query = sa.select(Keypair).where(Keypair.user_id == user_id).order_by(Keypair.name)
        limit, marker = None, None
        if microversion.at_least(req, microversion.KEYPAIR_PAGES):
            limit, marker = common.int_param(req, "limit", minimum=0), req.get_param("marker")
        with common.deps(req).db.begin() as session:
            if marker is not None:
                if session.scalar(sa.select(Keypair.id).where(Keypair.user_id == user_id,
                                                              Keypair.name == marker)) is None:
                    raise exception.Invalid(reason=f"marker {marker!r} is not a keypair of this user")
                query = query.where(Keypair.name > marker)
            rows = session.scalars(query.limit(limit + 1) if limit is not None else query).all()
            more = limit is not None and len(rows) > limit
            rows = rows[:limit] if limit is not None else rows
            doc: dict = {"keypairs": [{"keypair": keypair_document(k, False, typed)} for k in rows]}
        if more and rows:
            doc["keypairs_links"] = [{"rel": "next", "href": f"{common.deps(req).base_url(req)}/compute/v2.1/"
                                                             f"os-keypairs?limit={limit}&marker={rows[-1].name}"}]
        common.respond(resp, doc)

    def on_post(self, req, resp):
        context = common.ctx(req)
        data = common.body(req, KEYPAIR_CREATE)["keypair"]
        typed = microversion.at_least(req, microversion.KEYPAIR_TYPE)
        if "type" in data:
            microversion.require(req, microversion.KEYPAIR_TYPE, "keypair.type")
        kind = data.get("type", "ssh")
        private = None
        public = data["public_key"]
        if public is None:
            private, public = generate_certificate(data["name"]) if kind == "x509" else generate_pair()
        fingerprint = certificate_fingerprint_of(public) if kind == "x509" else fingerprint_of(public)
        try:
            with common.deps(req).db.begin() as session:
                count = session.scalar(sa.select(sa.func.count()).select_from(Keypair)
                                       .where(Keypair.user_id == context.user_id))
                limit = quota.DEFAULT_LIMITS["key_pairs"]
                if count >= limit:
                    raise exception.QuotaExceeded(resource="key_pairs", project=context.project_id,
                                                  requested=1, in_use=count, limit=limit)
                pair = Keypair(name=data["name"], user_id=context.user_id, fingerprint=fingerprint,
                               public_key=public.strip(), type=kind)
                session.add(pair)
                session.flush()
                doc = keypair_document(pair, False, typed)
                doc["user_id"] = context.user_id
        except sa_exc.IntegrityError:
            raise exception.Conflict(reason=f"keypair {data['name']!r} already exists for this user") from None
        if private is not None:
            doc["private_key"] = private
        common.respond(resp, {"keypair": doc}, falcon.HTTP_201 if typed else falcon.HTTP_200)


class KeypairItem:
    def on_get(self, req, resp, name):
        user_id = _user_filter(req)
        with common.deps(req).db.begin() as session:
            pair = session.scalar(sa.select(Keypair).where(Keypair.user_id == user_id, Keypair.name == name))
            if pair is None:
                raise exception.NotFound(kind="Keypair", ident=name)
            common.respond(resp, {"keypair": keypair_document(
                pair, True, microversion.at_least(req, microversion.KEYPAIR_TYPE))})

    def on_delete(self, req, resp, name):
        user_id = _user_filter(req)
        with common.deps(req).db.begin() as session:
            if not session.execute(sa.delete(Keypair).where(Keypair.user_id == user_id,
                                                            Keypair.name == name)).rowcount:
                raise exception.NotFound(kind="Keypair", ident=name)
        resp.status = falcon.HTTP_204 if microversion.at_least(req, microversion.KEYPAIR_TYPE) else falcon.HTTP_202


def register(app: falcon.App, prefix: str) -> None:
    app.add_route(f"{prefix}/os-keypairs", Keypairs())
    app.add_route(f"{prefix}/os-keypairs/{{name}}", KeypairItem())
