"""Who may do what to a bucket: its project, plus the canned ACLs of the supported subset.

A bucket belongs to the project whose credentials created it; that project's
keys may do everything to it and its objects. Everything else is refused
with AccessDenied unless the bucket's canned ACL grants it:

- ``private`` (the default): nobody else.
- ``public-read``: anyone, signed or anonymous, may list the bucket and read
  (GET/HEAD) its objects.
- ``authenticated-read``: the same for any request signed by a valid key of
  any project.

Set with ``x-amz-acl`` on CreateBucket or PutBucketAcl (``PUT ?acl``); other
canned ACLs, grant headers, ACL documents and bucket policies are refused with
NotImplemented rather than silently ignored.
"""

from __future__ import annotations

from fabric.objectstore import documents
from fabric.objectstore.errors import S3Error, access_denied
from fabric.objectstore.metadata import BucketInfo, Principal

CANNED_ACLS = ("private", "public-read", "authenticated-read")

#: What a public-read or authenticated-read ACL lets others do.
READ_ACTIONS = frozenset({"ListBucket", "GetObject", "HeadBucket"})

_ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
_AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"


def canned_acl(headers: dict[str, str]) -> str:
    """The canned ACL a request asks for (``private`` when none); NotImplemented outside the subset."""
    grants = [name for name in headers if name.startswith("x-amz-grant-")]
    if grants:
        raise S3Error("NotImplemented", f"ACL grant headers ({', '.join(sorted(grants))}) are not supported; use "
                                        f"x-amz-acl with one of {', '.join(CANNED_ACLS)}")
    acl = headers.get("x-amz-acl", "private").strip()
    if acl not in CANNED_ACLS:
        raise S3Error("NotImplemented", f"canned ACL {acl!r} is not supported; use one of {', '.join(CANNED_ACLS)}")
    return acl


def allowed(bucket: BucketInfo, caller: Principal | None, action: str) -> bool:
    if caller is not None and caller.project_id == bucket.project_id:
        return True
    if action not in READ_ACTIONS:
        return False
    return bucket.acl == "public-read" or (bucket.acl == "authenticated-read" and caller is not None)


def require(bucket: BucketInfo, caller: Principal | None, action: str) -> None:
    """AccessDenied unless ``caller`` may do ``action`` to ``bucket``."""
    if not allowed(bucket, caller, action):
        raise access_denied()


def acl_document(bucket: BucketInfo, owner_name: str) -> bytes:
    """The bucket's ACL as S3's AccessControlPolicy: the owner's full control plus the canned grant."""
    def grant(grantee: str, permission: str) -> str:
        return f"<Grant>{grantee}{documents.element('Permission', permission)}</Grant>"

    xsi = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    grants = [grant(f'<Grantee {xsi} xsi:type="CanonicalUser">{documents.element("ID", bucket.project_id)}'
                    f'{documents.element("DisplayName", owner_name)}</Grantee>', "FULL_CONTROL")]
    group = {"public-read": _ALL_USERS, "authenticated-read": _AUTHENTICATED_USERS}.get(bucket.acl)
    if group:
        grants.append(grant(f'<Grantee {xsi} xsi:type="Group">{documents.element("URI", group)}</Grantee>', "READ"))
    return documents.document("AccessControlPolicy", documents.owner(bucket.project_id, owner_name)
                              + f"<AccessControlList>{''.join(grants)}</AccessControlList>")
