"""Bucket operations: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation, bucket ACLs."""

from __future__ import annotations

from fabric.objectstore import access, documents, metadata, upload
from fabric.objectstore.core import Objectstore
from fabric.objectstore.errors import S3Error, access_denied
from fabric.objectstore.metadata import Principal
from fabric.objectstore.request import Reply, S3Request


def _signed(req: S3Request) -> Principal:
    if req.caller is None:
        raise access_denied("this operation needs a signed request")
    return req.caller


def list_buckets(service: Objectstore, req: S3Request) -> Reply:
    caller = _signed(req)
    buckets = metadata.list_buckets(service.db, caller.project_id)
    listed = "".join(f"<Bucket>{documents.element('Name', b.name)}"
                     f"{documents.element('CreationDate', documents.timestamp(b.created_at))}</Bucket>"
                     for b in buckets)
    body = documents.owner(caller.project_id, caller.project_name) + f"<Buckets>{listed}</Buckets>"
    return Reply.xml(documents.document("ListAllMyBucketsResult", body))


def create_bucket(service: Objectstore, req: S3Request) -> Reply:
    caller = _signed(req)
    acl = access.canned_acl(req.headers)
    if req.headers.get("x-amz-bucket-object-lock-enabled", "").lower() == "true":
        raise S3Error("NotImplemented", "object lock is not supported")
    if (req.header_int("content-length") or 0) > 0:
        body = upload.read_document(req)
        if body.strip():
            config = documents.parse(body, "CreateBucketConfiguration")
            location = (documents.text_of(config, "LocationConstraint") or "").strip()
            if location and location != service.settings.objectstore.region:
                raise S3Error("InvalidLocationConstraint",
                              f"the location constraint {location!r} is not this endpoint's region "
                              f"{service.settings.objectstore.region!r}", LocationConstraint=location)
    metadata.create_bucket(service.db, req.bucket, caller.project_id, caller.user_id, acl)
    service.forget_bucket(req.bucket)  # a row of a deleted bucket of that name may be cached
    return Reply(200, {"Location": f"/{req.bucket}"}, b"")


def head_bucket(service: Objectstore, req: S3Request) -> Reply:
    service.bucket(req, "HeadBucket")
    return Reply(200, {"x-amz-bucket-region": service.settings.objectstore.region}, None, 0)


def delete_bucket(service: Objectstore, req: S3Request) -> Reply:
    bucket = service.bucket(req, "DeleteBucket")
    try:
        metadata.delete_bucket(service.db, bucket)
    finally:
        service.forget_bucket(bucket.name)
    return Reply(204)


def get_bucket_location(service: Objectstore, req: S3Request) -> Reply:
    service.bucket(req, "GetBucketLocation")
    region = service.settings.objectstore.region
    # S3 answers an empty constraint for us-east-1, its original region; clients rely on it.
    value = "" if region == "us-east-1" else documents.escape(region)
    return Reply.xml(documents.document("LocationConstraint", value))


def get_bucket_acl(service: Objectstore, req: S3Request) -> Reply:
    bucket = service.bucket(req, "GetBucketAcl")
    owner = req.caller.project_name if req.caller and req.caller.project_id == bucket.project_id else bucket.project_id
    return Reply.xml(access.acl_document(bucket, owner))


def put_bucket_acl(service: Objectstore, req: S3Request) -> Reply:
    bucket = service.bucket(req, "PutBucketAcl")
    if "x-amz-acl" not in req.headers and not any(h.startswith("x-amz-grant-") for h in req.headers):
        raise S3Error("NotImplemented", "ACL documents are not supported; set a canned ACL with x-amz-acl (one of "
                                        f"{', '.join(access.CANNED_ACLS)})")
    metadata.set_bucket_acl(service.db, bucket, access.canned_acl(req.headers))
    service.forget_bucket(bucket.name)
    return Reply(200, {}, b"")
