"""AWS Signature Version 4, as S3 checks it: header, presigned query and streaming chunks.

The canonical request, string to sign and signing key follow AWS's
documentation ("Signature Calculations for the Authorization Header",
"Authenticating Requests: Using Query Parameters", "Signature Calculations
for the Authorization Header: Transferring Payload in Multiple Chunks") to
the byte; the unit tests reproduce AWS's published examples. Nothing here
knows about secrets' storage: :func:`parse` says who claims to sign,
:func:`verify` checks the claim with the secret the caller looked up.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import hmac
import re
from collections.abc import Mapping
from urllib.parse import quote_from_bytes, unquote_to_bytes

from fabric.objectstore.errors import S3Error

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING = (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

#: A request signed more than this far from the server's clock is refused (S3: 15 minutes).
MAX_SKEW = datetime.timedelta(minutes=15)
#: The longest a presigned URL may live (S3: 7 days).
MAX_PRESIGNED_EXPIRES = 7 * 24 * 3600

_SPACES = re.compile(r"\s+")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def uri_encode(value: bytes | str, *, keep_slash: bool = False) -> str:
    """AWS's UriEncode: every byte but A-Z a-z 0-9 - _ . ~ (and ``/`` when kept) as %XX."""
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    # The standard library's quoting keeps exactly those bytes (and what ``safe`` adds), and
    # returns a string of them without looking at each byte in Python.
    return quote_from_bytes(data, safe="/" if keep_slash else "")


def canonical_uri(raw_path: str) -> str:
    """The canonical URI of a request path as sent: decoded once, then UriEncoded with ``/`` kept
    (S3 neither normalises dot segments nor double-encodes)."""
    return uri_encode(unquote_to_bytes(raw_path), keep_slash=True) or "/"


def query_pairs(raw_query: str) -> list[tuple[bytes, bytes]]:
    """The decoded (name, value) pairs of a raw query string, in order (``+`` stays a plus)."""
    pairs = []
    for item in raw_query.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((unquote_to_bytes(name), unquote_to_bytes(value)))
    return pairs


def canonical_query(raw_query: str, *, drop_signature: bool = False) -> str:
    """The canonical query string: each name and value UriEncoded, sorted by name then value."""
    encoded = [(uri_encode(name), uri_encode(value)) for name, value in query_pairs(raw_query)
               if not (drop_signature and name == b"X-Amz-Signature")]
    encoded.sort()
    return "&".join(f"{name}={value}" for name, value in encoded)


def canonical_headers(headers: Mapping[str, str], signed: list[str]) -> str:
    """``name:value\\n`` for each signed header (values trimmed, inner runs of spaces collapsed).

    SignatureDoesNotMatch when a signed header is missing from the request.
    """
    lines = []
    for name in signed:
        value = headers.get(name)
        if value is None:
            raise S3Error("SignatureDoesNotMatch", f"the signed header {name!r} is not in the request")
        value = value.strip()
        if "  " in value or not value.isprintable():  # any whitespace but a lone space (and more)
            value = _SPACES.sub(" ", value)
        lines.append(f"{name}:{value}\n")
    return "".join(lines)


def canonical_request(method: str, raw_path: str, raw_query: str, headers: Mapping[str, str],
                      signed_headers: list[str], payload_hash: str, *, presigned: bool = False) -> str:
    return "\n".join((method, canonical_uri(raw_path), canonical_query(raw_query, drop_signature=presigned),
                      canonical_headers(headers, signed_headers), ";".join(signed_headers), payload_hash))


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    return "\n".join((ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()))


@functools.lru_cache(maxsize=1024)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """HMAC chain AWS4+secret -> date -> region -> service -> aws4_request (cached: it changes daily)."""
    key = hmac.digest(f"AWS4{secret}".encode(), date.encode(), "sha256")
    for part in (region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


def sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclasses.dataclass(frozen=True)
class Claim:
    """Who says they signed a request, and how: what :func:`parse` found."""

    access_key: str
    date: str
    region: str
    service: str
    amz_date: str
    signed_headers: list[str]
    signature: str
    payload_hash: str
    presigned: bool
    expires: int | None = None

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@functools.lru_cache(maxsize=1024)
def _parse_credential(value: str, error: str) -> tuple[str, str, str, str]:
    """(access key, date, region, service) of a credential scope; S3Error ``error`` when malformed.
    Remembered: a client sends the same scope all day (a bad one raises, and is not kept)."""
    parts = value.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not parts[0]:
        raise S3Error(error, f"the credential {value!r} is not <access key>/<date>/<region>/s3/aws4_request")
    access, date, region, service, _ = parts
    if not re.fullmatch(r"\d{8}", date):
        raise S3Error(error, f"the credential's date {date!r} is not YYYYMMDD")
    if service != "s3":
        raise S3Error(error, f"the credential's service is {service!r}; this endpoint is 's3'")
    return access, date, region, service


def _signed_header_list(value: str, error: str) -> list[str]:
    names = value.split(";")
    if not value or names != sorted(names) or any(n != n.lower() or not n for n in names):
        raise S3Error(error, f"SignedHeaders {value!r} must be lower-case names separated by ';', sorted")
    if "host" not in names:
        raise S3Error(error, "SignedHeaders must include host")
    return names


def _header_claim(authorization: str, headers: Mapping[str, str]) -> Claim:
    error = "AuthorizationHeaderMalformed"
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise S3Error("InvalidRequest", "The authorization mechanism you have provided is not supported. "
                                        f"Please use {ALGORITHM}.")
    fields = {}
    for item in rest.split(","):
        name, _, value = item.strip().partition("=")
        fields[name] = value
    missing = [name for name in ("Credential", "SignedHeaders", "Signature") if not fields.get(name)]
    if missing:
        raise S3Error(error, f"the Authorization header lacks {', '.join(missing)}")
    access, date, region, service = _parse_credential(fields["Credential"], error)
    amz_date = headers.get("x-amz-date")
    if not amz_date:
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    payload_hash = headers.get("x-amz-content-sha256")
    if not payload_hash:
        raise S3Error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
    if payload_hash not in (UNSIGNED_PAYLOAD, *STREAMING) and not _HEX64.fullmatch(payload_hash):
        raise S3Error("InvalidArgument", f"x-amz-content-sha256 {payload_hash!r} must be the hex SHA-256 of the "
                                         f"payload, {UNSIGNED_PAYLOAD} or a STREAMING-* value",
                      ArgumentName="x-amz-content-sha256", ArgumentValue=payload_hash)
    return Claim(access, date, region, service, amz_date, _signed_header_list(fields["SignedHeaders"], error),
                 fields["Signature"], payload_hash, presigned=False)


def _query_claim(params: Mapping[str, str], headers: Mapping[str, str]) -> Claim:
    error = "AuthorizationQueryParametersError"
    if params.get("X-Amz-Algorithm") != ALGORITHM:
        raise S3Error(error, f"X-Amz-Algorithm must be {ALGORITHM}")
    missing = [name for name in ("X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
                                 "X-Amz-Signature") if not params.get(name)]
    if missing:
        raise S3Error(error, f"the presigned URL lacks {', '.join(missing)}")
    access, date, region, service = _parse_credential(params["X-Amz-Credential"], error)
    try:
        expires = int(params["X-Amz-Expires"])
    except ValueError:
        expires = -1
    if not 1 <= expires <= MAX_PRESIGNED_EXPIRES:
        raise S3Error(error, f"X-Amz-Expires {params['X-Amz-Expires']!r} must be a number of seconds from 1 to "
                             f"{MAX_PRESIGNED_EXPIRES}")
    payload_hash = headers.get("x-amz-content-sha256") or UNSIGNED_PAYLOAD
    return Claim(access, date, region, service, params["X-Amz-Date"],
                 _signed_header_list(params["X-Amz-SignedHeaders"], error), params["X-Amz-Signature"],
                 payload_hash, presigned=True, expires=expires)


def parse(headers: Mapping[str, str], params: Mapping[str, str]) -> Claim | None:
    """The signature claim of a request (None for an anonymous one); S3Error when it is malformed."""
    authorization = headers.get("authorization")
    if authorization:
        return _header_claim(authorization, headers)
    if "X-Amz-Algorithm" in params or "X-Amz-Signature" in params:
        return _query_claim(params, headers)
    if "AWSAccessKeyId" in params:
        raise S3Error("InvalidRequest", f"Signature Version 2 is not supported; use {ALGORITHM}")
    return None


_AMZ_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z")


def parse_amz_date(value: str) -> datetime.datetime:
    """A naive-UTC datetime from ``YYYYMMDDTHHMMSSZ`` (a regular expression: strptime costs 50 µs)."""
    match = _AMZ_DATE.fullmatch(value)
    try:
        if match is None:
            raise ValueError(value)
        return datetime.datetime(*(int(part) for part in match.groups()))
    except ValueError:
        raise S3Error("AccessDenied", f"x-amz-date {value!r} is not an ISO 8601 basic timestamp "
                                      "(YYYYMMDDTHHMMSSZ)") from None


def check_time(claim: Claim, now: datetime.datetime) -> None:
    """Refuse a request signed too far from ``now`` (naive UTC) or a presigned URL past its expiry."""
    signed_at = parse_amz_date(claim.amz_date)
    if claim.presigned:
        if now > signed_at + datetime.timedelta(seconds=claim.expires or 0):
            raise S3Error("AccessDenied", "Request has expired", Expires=claim.amz_date,
                          ServerTime=now.strftime("%Y-%m-%dT%H:%M:%SZ"))
        if signed_at - now > MAX_SKEW:
            raise S3Error("RequestTimeTooSkewed", RequestTime=claim.amz_date,
                          ServerTime=now.strftime("%Y-%m-%dT%H:%M:%SZ"), MaxAllowedSkewMilliseconds=900000)
        _check_scope_date(claim)
        return
    if abs(now - signed_at) > MAX_SKEW:
        raise S3Error("RequestTimeTooSkewed", RequestTime=claim.amz_date,
                      ServerTime=now.strftime("%Y-%m-%dT%H:%M:%SZ"), MaxAllowedSkewMilliseconds=900000)
    _check_scope_date(claim)


def _check_scope_date(claim: Claim) -> None:
    if claim.amz_date[:8] != claim.date:
        raise S3Error("SignatureDoesNotMatch", f"the credential date {claim.date} is not the day of "
                                               f"x-amz-date {claim.amz_date}")


def verify(claim: Claim, secret: str, method: str, raw_path: str, raw_query: str,
           headers: Mapping[str, str]) -> bytes:
    """Check the claim's signature with ``secret``; the signing key (for streaming chunks).

    SignatureDoesNotMatch (with the string to sign and canonical request, as S3
    reports them) when it is wrong.
    """
    canonical = canonical_request(method, raw_path, raw_query, headers, claim.signed_headers,
                                  UNSIGNED_PAYLOAD if claim.presigned else claim.payload_hash,
                                  presigned=claim.presigned)
    to_sign = string_to_sign(claim.amz_date, claim.scope, canonical)
    key = signing_key(secret, claim.date, claim.region, claim.service)
    if not hmac.compare_digest(sign(key, to_sign), claim.signature):
        raise S3Error("SignatureDoesNotMatch", AWSAccessKeyId=claim.access_key, StringToSign=to_sign,
                      SignatureProvided=claim.signature, CanonicalRequest=canonical)
    return key


def chunk_string_to_sign(amz_date: str, scope: str, previous_signature: str, chunk_sha256: str) -> str:
    """What one aws-chunked chunk's signature signs (chained to the previous signature)."""
    return "\n".join(("AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous_signature, EMPTY_SHA256,
                      chunk_sha256))


def trailer_string_to_sign(amz_date: str, scope: str, previous_signature: str, trailer: bytes) -> str:
    """What the trailer's ``x-amz-trailer-signature`` signs."""
    return "\n".join(("AWS4-HMAC-SHA256-TRAILER", amz_date, scope, previous_signature,
                      hashlib.sha256(trailer).hexdigest()))
