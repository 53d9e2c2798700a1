"""The objectstore's metadata: EC2-style credentials, buckets, objects and multipart uploads.

Object bytes live in files (``fabric.objectstore.storage``); a row names its
file by ``blob``. Keys are stored as UTF-8 bytes (VARBINARY) so that every
backend orders them bytewise, which is S3's listing order, and so that a
1,024-byte key fits MariaDB's index limit.
"""

from __future__ import annotations

import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column

from fabric.db.models.base import Base
from fabric.db.types import Json, Timestamp, utcnow

#: S3's longest key, in UTF-8 bytes.
MAX_KEY_BYTES = 1024

#: Object keys: raw UTF-8 bytes, compared bytewise on every backend.
KeyBytes = sa.LargeBinary(MAX_KEY_BYTES).with_variant(mysql.VARBINARY(MAX_KEY_BYTES), "mysql", "mariadb")


class Ec2Credential(Base):
    """An access key and its secret, bound to one user and one project (Identity's OS-EC2).

    The secret is kept as given: a SigV4 signature is an HMAC keyed by it, so
    the verifier needs the secret itself, not a hash (as Keystone keeps it).
    """

    __tablename__ = "ec2_credentials"

    access: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    secret: Mapped[str] = mapped_column(sa.String(64))
    user_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("projects.id", ondelete="CASCADE"))
    created_at: Mapped[datetime.datetime] = mapped_column(Timestamp, default=utcnow)
    #: Its id as ``/v3/credentials`` names it (Keystone: the SHA-256 of the first access key;
    #: kept when the blob changes). NULL on rows the previous release made: see
    #: :func:`fabric.api.identity_credentials.credential_id`.
    credential_id: Mapped[str | None] = mapped_column(sa.String(64), unique=True, index=True)


class Bucket(Base):
    """A bucket: its name is global; it belongs to one project."""

    __tablename__ = "s3_buckets"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(63), unique=True)
    project_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("projects.id", ondelete="CASCADE"),
                                            index=True)
    owner_id: Mapped[str] = mapped_column(sa.String(36))
    #: A canned ACL of the supported subset (fabric.objectstore.access).
    acl: Mapped[str] = mapped_column(sa.String(32), default="private")
    created_at: Mapped[datetime.datetime] = mapped_column(Timestamp, default=utcnow)


class StoredObject(Base):
    """The current version of one key in a bucket."""

    __tablename__ = "s3_objects"
    __table_args__ = (sa.UniqueConstraint("bucket_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    bucket_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("s3_buckets.id", ondelete="CASCADE"))
    key: Mapped[bytes] = mapped_column(KeyBytes)
    blob: Mapped[str] = mapped_column(sa.String(36))
    size: Mapped[int] = mapped_column(sa.BigInteger)
    etag: Mapped[str] = mapped_column(sa.String(64))
    content_type: Mapped[str] = mapped_column(sa.String(255))
    #: User metadata (``x-amz-meta-*``) and stored content headers.
    meta: Mapped[dict] = mapped_column(Json, default=dict)
    checksum_algorithm: Mapped[str | None] = mapped_column(sa.String(16))
    checksum_value: Mapped[str | None] = mapped_column(sa.String(128))
    checksum_type: Mapped[str | None] = mapped_column(sa.String(16))
    last_modified: Mapped[datetime.datetime] = mapped_column(Timestamp, default=utcnow)


class MultipartUpload(Base):
    """A multipart upload in progress."""

    __tablename__ = "s3_uploads"
    __table_args__ = (sa.Index("ix_s3_uploads_bucket_key", "bucket_id", "key"),)

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    bucket_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("s3_buckets.id", ondelete="CASCADE"))
    key: Mapped[bytes] = mapped_column(KeyBytes)
    owner_id: Mapped[str] = mapped_column(sa.String(36))
    content_type: Mapped[str] = mapped_column(sa.String(255))
    meta: Mapped[dict] = mapped_column(Json, default=dict)
    checksum_algorithm: Mapped[str | None] = mapped_column(sa.String(16))
    checksum_type: Mapped[str | None] = mapped_column(sa.String(16))
    initiated: Mapped[datetime.datetime] = mapped_column(Timestamp, default=utcnow)


class UploadPart(Base):
    """One uploaded part of a multipart upload (the newest upload of that number)."""

    __tablename__ = "s3_parts"

    upload_id: Mapped[str] = mapped_column(sa.String(64), sa.ForeignKey("s3_uploads.id", ondelete="CASCADE"),
                                           primary_key=True)
    part_number: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    blob: Mapped[str] = mapped_column(sa.String(36))
    size: Mapped[int] = mapped_column(sa.BigInteger)
    etag: Mapped[str] = mapped_column(sa.String(64))
    checksum_value: Mapped[str | None] = mapped_column(sa.String(128))
    last_modified: Mapped[datetime.datetime] = mapped_column(Timestamp, default=utcnow)
