"""SigV4 against AWS's published S3 examples (header, presigned and streaming), byte for byte,
and the checks around it: clock skew, expiry, malformed claims."""

from __future__ import annotations

import datetime

import pytest

from fabric.objectstore import sigv4
from fabric.objectstore.errors import S3Error

# The credentials and moment every example in AWS's "Signature Calculations for the
# Authorization Header" and "Authenticating Requests: Using Query Parameters" pages uses.
ACCESS = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AMZ_DATE = "20130524T000000Z"
SCOPE = "20130524/us-east-1/s3/aws4_request"
HOST = "examplebucket.s3.amazonaws.com"
EMPTY = sigv4.EMPTY_SHA256
WHEN = datetime.datetime(2013, 5, 24, 0, 5)


def _authorization(signed: str, signature: str) -> str:
    return f"AWS4-HMAC-SHA256 Credential={ACCESS}/{SCOPE},SignedHeaders={signed},Signature={signature}"


def _verify(method: str, raw_path: str, raw_query: str, headers: dict, params: dict | None = None) -> bytes:
    claim = sigv4.parse(headers, params or {})
    sigv4.check_time(claim, WHEN)
    return sigv4.verify(claim, SECRET, method, raw_path, raw_query, headers)


# (method, raw path, raw query, headers, signature) of AWS's four header-signing examples.
AWS_HEADER_EXAMPLES = {
    "GET object": ("GET", "/test.txt", "", {"range": "bytes=0-9", "x-amz-content-sha256": EMPTY},
                   "host;range;x-amz-content-sha256;x-amz-date",
                   "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
    "PUT object": ("PUT", "/test$file.text", "",
                   {"date": "Fri, 24 May 2013 00:00:00 GMT", "x-amz-storage-class": "REDUCED_REDUNDANCY",
                    "x-amz-content-sha256": "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"},
                   "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
                   "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"),
    "GET bucket lifecycle": ("GET", "/", "lifecycle", {"x-amz-content-sha256": EMPTY},
                             "host;x-amz-content-sha256;x-amz-date",
                             "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
    "GET bucket list objects": ("GET", "/", "max-keys=2&prefix=J", {"x-amz-content-sha256": EMPTY},
                                "host;x-amz-content-sha256;x-amz-date",
                                "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
}


@pytest.mark.parametrize("example", AWS_HEADER_EXAMPLES)
def test_aws_header_examples_verify(example):
    method, path, query, extra, signed, signature = AWS_HEADER_EXAMPLES[example]
    headers = {"host": HOST, "x-amz-date": AMZ_DATE, **extra, "authorization": _authorization(signed, signature)}
    _verify(method, path, query, headers)


@pytest.mark.parametrize("example", AWS_HEADER_EXAMPLES)
def test_a_changed_byte_breaks_each_aws_example(example):
    method, path, query, extra, signed, signature = AWS_HEADER_EXAMPLES[example]
    headers = {"host": HOST, "x-amz-date": AMZ_DATE, **extra, "authorization": _authorization(signed, signature)}
    with pytest.raises(S3Error) as err:
        _verify(method, path + "x", query, headers)
    assert err.value.code == "SignatureDoesNotMatch"
    assert err.value.fields["StringToSign"].startswith(f"AWS4-HMAC-SHA256\n{AMZ_DATE}\n{SCOPE}\n")


def test_the_put_example_signs_the_percent_encoded_path():
    _, path, _, extra, signed, _ = AWS_HEADER_EXAMPLES["PUT object"]
    canonical = sigv4.canonical_request("PUT", path, "", {"host": HOST, "x-amz-date": AMZ_DATE, **extra},
                                        signed.split(";"), extra["x-amz-content-sha256"])
    assert canonical.splitlines()[1] == "/test%24file.text"


def test_aws_presigned_example_verifies_and_expires():
    query = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3"
             "%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
             "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    params = {name.decode(): value.decode() for name, value in sigv4.query_pairs(query)}
    claim = sigv4.parse({"host": HOST}, params)
    assert claim.presigned and claim.expires == 86400
    sigv4.verify(claim, SECRET, "GET", "/test.txt", query, {"host": HOST})
    sigv4.check_time(claim, datetime.datetime(2013, 5, 24, 23, 59))
    with pytest.raises(S3Error, match="Request has expired"):
        sigv4.check_time(claim, datetime.datetime(2013, 5, 25, 0, 0, 1))
    with pytest.raises(S3Error) as err:
        sigv4.verify(claim, SECRET.replace("w", "W"), "GET", "/test.txt", query, {"host": HOST})
    assert err.value.code == "SignatureDoesNotMatch"


def test_aws_streaming_example_seed_signature():
    headers = {"host": "s3.amazonaws.com", "x-amz-date": AMZ_DATE, "x-amz-storage-class": "REDUCED_REDUNDANCY",
               "x-amz-content-sha256": sigv4.STREAMING_SIGNED, "content-encoding": "aws-chunked",
               "x-amz-decoded-content-length": "66560", "content-length": "66824",
               "authorization": _authorization(
                   "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
                   "x-amz-decoded-content-length;x-amz-storage-class",
                   "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9")}
    key = _verify("PUT", "/examplebucket/chunkObject.txt", "", headers)
    assert key == sigv4.signing_key(SECRET, "20130524", "us-east-1", "s3")


@pytest.mark.parametrize("offset, refused", [(datetime.timedelta(minutes=14), False),
                                             (datetime.timedelta(minutes=16), True),
                                             (-datetime.timedelta(minutes=16), True)])
def test_clock_skew_over_fifteen_minutes_is_refused(offset, refused):
    claim = sigv4.parse({"authorization": _authorization("host", "0" * 64), "x-amz-date": AMZ_DATE,
                         "x-amz-content-sha256": EMPTY}, {})
    now = datetime.datetime(2013, 5, 24) + offset
    if refused:
        with pytest.raises(S3Error) as err:
            sigv4.check_time(claim, now)
        assert err.value.code == "RequestTimeTooSkewed"
    else:
        sigv4.check_time(claim, now)


@pytest.mark.parametrize("authorization, headers, code", [
    ("AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=", {}, "InvalidRequest"),
    (f"AWS4-HMAC-SHA256 Credential={ACCESS}/20130524/us-east-1/s3/aws4_request,SignedHeaders=host", {},
     "AuthorizationHeaderMalformed"),
    (f"AWS4-HMAC-SHA256 Credential={ACCESS}/20130524/us-east-1/ec2/aws4_request,SignedHeaders=host,Signature=ab", {},
     "AuthorizationHeaderMalformed"),
    (_authorization("x-amz-date", "ab"), {}, "AuthorizationHeaderMalformed"),
    (_authorization("host", "ab"), {"x-amz-content-sha256": None}, "InvalidRequest"),
    (_authorization("host", "ab"), {"x-amz-content-sha256": "nothex"}, "InvalidArgument"),
])
def test_malformed_claims_get_s3_codes(authorization, headers, code):
    given = {"authorization": authorization, "x-amz-date": AMZ_DATE, "x-amz-content-sha256": EMPTY, "host": HOST}
    given.update(headers)
    given = {k: v for k, v in given.items() if v is not None}
    with pytest.raises(S3Error) as err:
        sigv4.parse(given, {})
    assert err.value.code == code


def test_canonical_query_sorts_and_encodes_each_pair():
    assert sigv4.canonical_query("prefix=a b&delimiter=%2F&uploads") == "delimiter=%2F&prefix=a%20b&uploads="
    assert sigv4.uri_encode("a b/ü~", keep_slash=True) == "a%20b/%C3%BC~"
