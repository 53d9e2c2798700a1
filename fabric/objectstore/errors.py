"""S3's errors: a code, an HTTP status and a message, rendered as S3's XML ``<Error>``.

Every failure a client can cause is an :class:`S3Error` with one of S3's own
codes (the table below), so SDKs map it to the same exception they get from
AWS. Extra fields (``BucketName``, ``Key``, ``StringToSign`` ...) go into the
document as S3 puts them there.
"""

from __future__ import annotations

from typing import Any

#: S3 error code -> (HTTP status, default message), as AWS documents them.
CODES: dict[str, tuple[int, str]] = {
    "AccessDenied": (403, "Access Denied"),
    "AuthorizationHeaderMalformed": (400, "The authorization header is malformed."),
    "AuthorizationQueryParametersError": (400, "The presigned query parameters are malformed."),
    "BadDigest": (400, "The Content-MD5 you specified did not match what we received."),
    "BucketAlreadyExists": (409, "The requested bucket name is not available. The bucket namespace is shared "
                                 "by all users of the system. Please select a different name and try again."),
    "BucketAlreadyOwnedByYou": (409, "Your previous request to create the named bucket succeeded and you "
                                     "already own it."),
    "BucketNotEmpty": (409, "The bucket you tried to delete is not empty."),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed size."),
    "EntityTooSmall": (400, "Your proposed upload is smaller than the minimum allowed object size."),
    "IncompleteBody": (400, "You did not provide the number of bytes specified by the Content-Length HTTP header."),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidAccessKeyId": (403, "The AWS Access Key Id you provided does not exist in our records."),
    "InvalidArgument": (400, "Invalid Argument"),
    "InvalidBucketName": (400, "The specified bucket is not valid."),
    "InvalidDigest": (400, "The Content-MD5 you specified is not valid."),
    "InvalidLocationConstraint": (400, "The specified location constraint is not valid."),
    "InvalidPart": (400, "One or more of the specified parts could not be found. The part might not have been "
                         "uploaded, or the specified entity tag might not have matched the part's entity tag."),
    "InvalidPartOrder": (400, "The list of parts was not in ascending order. Parts must be ordered by part number."),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidRequest": (400, "Invalid Request"),
    "InvalidURI": (400, "Couldn't parse the specified URI."),
    "InvalidStorageClass": (400, "The storage class you specified is not valid"),
    "KeyTooLongError": (400, "Your key is too long"),
    "MalformedXML": (400, "The XML you provided was not well-formed or did not validate against our published "
                          "schema"),
    "MetadataTooLarge": (400, "Your metadata headers exceed the maximum allowed metadata size."),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "MissingContentLength": (411, "You must provide the Content-Length HTTP header."),
    "NoSuchBucket": (404, "The specified bucket does not exist"),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchUpload": (404, "The specified upload does not exist. The upload ID may be invalid, or the upload may "
                          "have been aborted or completed."),
    "NotImplemented": (501, "A header or query you provided implies functionality that is not implemented."),
    "NotModified": (304, "Not Modified"),
    "PreconditionFailed": (412, "At least one of the pre-conditions you specified did not hold"),
    "RequestTimeTooSkewed": (403, "The difference between the request time and the current time is too large."),
    "SignatureDoesNotMatch": (403, "The request signature we calculated does not match the signature you "
                                   "provided. Check your key and signing method."),
    "XAmzContentSHA256Mismatch": (400, "The provided 'x-amz-content-sha256' header does not match what was "
                                       "computed."),
}


class S3Error(Exception):
    """One of S3's errors: ``code`` from :data:`CODES`, an optional specific message, extra fields."""

    def __init__(self, code: str, message: str | None = None, *, headers: dict[str, str] | None = None,
                 **fields: Any) -> None:
        if code not in CODES:
            raise ValueError(f"unknown S3 error code {code!r}")
        self.code = code
        self.status, default = CODES[code]
        self.message = message or default
        self.fields = fields
        self.headers = headers or {}
        super().__init__(f"{code}: {self.message}")


def no_such_bucket(name: str) -> S3Error:
    return S3Error("NoSuchBucket", BucketName=name)


def no_such_key(key: str) -> S3Error:
    return S3Error("NoSuchKey", Key=key)


def no_such_upload(upload_id: str) -> S3Error:
    return S3Error("NoSuchUpload", UploadId=upload_id)


def access_denied(message: str | None = None) -> S3Error:
    return S3Error("AccessDenied", message)
