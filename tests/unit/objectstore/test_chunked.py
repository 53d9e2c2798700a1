"""The aws-chunked decoder: AWS's published streaming example, signed trailers, unsigned trailers
(what botocore sends over TLS), and every way a body can be wrong."""

from __future__ import annotations

import hashlib
import io
import zlib

import pytest

from fabric.objectstore import checksums, sigv4
from fabric.objectstore.chunked import AwsChunkedReader, ChunkSigning
from fabric.objectstore.errors import S3Error

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AMZ_DATE = "20130524T000000Z"
SCOPE = "20130524/us-east-1/s3/aws4_request"
KEY = sigv4.signing_key(SECRET, "20130524", "us-east-1", "s3")
SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
# AWS's example: 66,560 bytes of "a" in chunks of 65,536 and 1,024, then the final chunk.
AWS_CHUNKS = [(b"a" * 65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"),
              (b"a" * 1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"),
              (b"", "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9")]


def aws_body() -> bytes:
    return b"".join(b"%x;chunk-signature=%s\r\n%s\r\n" % (len(data), sig.encode(), data) for data, sig in AWS_CHUNKS)


def reader(body: bytes, decoded: int, *, signed: bool = True, trailer: str | None = None,
           seed: str = SEED) -> AwsChunkedReader:
    signing = ChunkSigning(KEY, AMZ_DATE, SCOPE, seed) if signed else None
    return AwsChunkedReader(io.BytesIO(body), encoded_length=len(body), decoded_length=decoded, signing=signing,
                            trailer=trailer)


def drain(stream: AwsChunkedReader, size: int = 7000) -> bytes:
    out = bytearray()
    while piece := stream.read(size):
        out += piece
    return bytes(out)


def sign_chunks(chunks: list[bytes], trailer: bytes | None = None) -> bytes:
    """A signed streaming body (with a signed trailer when given), as an SDK would produce it."""
    previous, out = SEED, bytearray()
    for data in [*chunks, b""]:
        signature = sigv4.sign(KEY, sigv4.chunk_string_to_sign(AMZ_DATE, SCOPE, previous,
                                                                hashlib.sha256(data).hexdigest()))
        out += b"%x;chunk-signature=%s\r\n" % (len(data), signature.encode())
        out += data + b"\r\n" if data else b""
        previous = signature
    if trailer is None:
        return bytes(out) + b"\r\n"
    signature = sigv4.sign(KEY, sigv4.trailer_string_to_sign(AMZ_DATE, SCOPE, previous, trailer))
    return bytes(out) + trailer.replace(b"\n", b"\r\n") + b"x-amz-trailer-signature:%s\r\n\r\n" % signature.encode()


def test_aws_streaming_example_decodes_and_verifies():
    body = aws_body()
    assert len(body) == 66824  # the example's Content-Length
    stream = reader(body, 66560)
    assert drain(stream) == b"a" * 66560


@pytest.mark.parametrize("size", [1, 100, 65536, 1 << 20])
def test_any_read_size_gives_the_same_bytes(size):
    assert drain(reader(aws_body(), 66560), size) == b"a" * 66560


def test_a_changed_byte_fails_its_chunk_signature():
    body = bytearray(aws_body())
    body[200] = ord("b")
    with pytest.raises(S3Error) as err:
        drain(reader(bytes(body), 66560))
    assert err.value.code == "SignatureDoesNotMatch"


def test_chunks_are_chained_to_the_seed_signature():
    with pytest.raises(S3Error) as err:
        drain(reader(aws_body(), 66560, seed="0" * 64))
    assert err.value.code == "SignatureDoesNotMatch"


def test_a_missing_final_chunk_is_an_incomplete_body():
    body = aws_body()
    truncated = body[:body.rindex(b"0;chunk-signature")]
    with pytest.raises(S3Error) as err:
        drain(reader(truncated, 66560))
    assert err.value.code == "IncompleteBody"


def test_a_decoded_length_other_than_announced_is_refused():
    with pytest.raises(S3Error) as err:
        drain(reader(aws_body(), 66561))
    assert err.value.code == "IncompleteBody"
    with pytest.raises(S3Error) as err:
        drain(reader(aws_body(), 1000))
    assert err.value.code == "IncompleteBody"


def test_unsigned_chunks_in_a_signed_upload_are_refused():
    with pytest.raises(S3Error) as err:
        drain(reader(b"5\r\nhello\r\n0\r\n\r\n", 5))
    assert err.value.code == "SignatureDoesNotMatch"


@pytest.mark.parametrize("body", [b"zz;chunk-signature=ab\r\n", b"5;color=blue\r\nhello\r\n",
                                  b"3;chunk-signature=ab\r\nhello\r\n"])
def test_malformed_chunks_are_invalid_requests(body):
    with pytest.raises(S3Error) as err:
        drain(reader(body, 5))
    assert err.value.code in ("InvalidRequest", "SignatureDoesNotMatch")


def test_signed_trailer_carries_the_checksum_and_is_verified():
    data = b"x" * 9000
    crc = checksums.of("CRC32", data)
    trailer = b"x-amz-checksum-crc32:%s\n" % crc.encode()
    stream = reader(sign_chunks([data[:8192], data[8192:]], trailer), len(data), trailer="x-amz-checksum-crc32")
    assert drain(stream) == data
    assert stream.trailers == {"x-amz-checksum-crc32": crc}

    forged = sign_chunks([data], trailer).replace(crc.encode(), b"AAAAAA==")
    with pytest.raises(S3Error) as err:
        drain(reader(forged, len(data), trailer="x-amz-checksum-crc32"))
    assert err.value.code == "SignatureDoesNotMatch"


def test_unsigned_trailer_body_as_botocore_sends_it():
    data = b"hello world" * 1000
    crc = checksums.of("CRC32", data)
    assert crc == checksums.encode(zlib.crc32(data).to_bytes(4, "big"))
    body = b"%x\r\n%s\r\n0\r\nx-amz-checksum-crc32:%s\r\n\r\n" % (len(data), data, crc.encode())
    stream = reader(body, len(data), signed=False, trailer="x-amz-checksum-crc32")
    assert drain(stream) == data
    assert stream.trailers["x-amz-checksum-crc32"] == crc


def test_an_announced_trailer_that_never_comes_is_refused():
    body = b"5\r\nhello\r\n0\r\n\r\n"
    with pytest.raises(S3Error) as err:
        drain(reader(body, 5, signed=False, trailer="x-amz-checksum-crc32"))
    assert err.value.code == "IncompleteBody"
