"""The checksums S3 clients send: CRC32, CRC32C, CRC64NVME, SHA1 and SHA256, plus MD5 for ETags.

Values travel base64-encoded big-endian (``x-amz-checksum-crc32: 3qSr8A==``).
CRC32 comes from zlib; CRC32C and CRC64NVME from awscrt, the C runtime
botocore itself uses for them (its ``[crt]`` extra).

A multipart object's checksum is either the checksum of the whole object
(``FULL_OBJECT``) or, S3's default for CRC32/CRC32C/SHA*, the checksum of the
parts' binary checksums concatenated with ``-<parts>`` appended
(``COMPOSITE``); CRC64NVME is always full-object.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from typing import Protocol

from awscrt import checksums as crt

from fabric.objectstore.errors import S3Error

ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")


class Hasher(Protocol):
    def update(self, data: bytes) -> None: ...

    def digest(self) -> bytes: ...


class _Crc:
    """A running CRC with the hashlib interface (big-endian digest, as S3 encodes it)."""

    def __init__(self, function, width: int) -> None:
        self._function = function
        self._width = width
        self._value = 0

    def update(self, data: bytes) -> None:
        self._value = self._function(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._width, "big")


def new(algorithm: str) -> Hasher:
    """A fresh hasher for one of :data:`ALGORITHMS`; InvalidRequest for any other."""
    if algorithm == "CRC32":
        return _Crc(zlib.crc32, 4)
    if algorithm == "CRC32C":
        return _Crc(crt.crc32c, 4)
    if algorithm == "CRC64NVME":
        return _Crc(crt.crc64nvme, 8)
    if algorithm == "SHA1":
        return hashlib.sha1(usedforsecurity=False)
    if algorithm == "SHA256":
        return hashlib.sha256()
    raise S3Error("InvalidRequest", f"checksum algorithm {algorithm!r} is not supported; use one of "
                                    f"{', '.join(ALGORITHMS)}")


def header_name(algorithm: str) -> str:
    return f"x-amz-checksum-{algorithm.lower()}"


def encode(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def of(algorithm: str, data: bytes) -> str:
    """The encoded checksum of ``data``."""
    hasher = new(algorithm)
    hasher.update(data)
    return encode(hasher.digest())


def composite(algorithm: str, part_values: list[str]) -> str:
    """S3's COMPOSITE checksum of a multipart object from its parts' encoded checksums."""
    hasher = new(algorithm)
    for value in part_values:
        hasher.update(base64.b64decode(value))
    return f"{encode(hasher.digest())}-{len(part_values)}"


def requested(headers: dict[str, str]) -> dict[str, str]:
    """The ``x-amz-checksum-<algorithm>`` values a request carries, by algorithm.

    InvalidRequest when it names an unknown algorithm or more than one.
    """
    found = {}
    for name, value in headers.items():
        if name.startswith("x-amz-checksum-") and name not in ("x-amz-checksum-algorithm", "x-amz-checksum-type",
                                                                 "x-amz-checksum-mode"):
            algorithm = name[len("x-amz-checksum-"):].upper()
            if algorithm not in ALGORITHMS:
                raise S3Error("InvalidRequest", f"header {name} names an unsupported checksum algorithm; "
                                                f"supported: {', '.join(ALGORITHMS)}")
            found[algorithm] = value.strip()
    if len(found) > 1:
        raise S3Error("InvalidRequest", "Expecting a single x-amz-checksum- header. Multiple checksum Types are "
                                        "not allowed.")
    return found


def trailer_algorithm(headers: dict[str, str]) -> str | None:
    """The algorithm an ``x-amz-trailer`` header announces (None when there is none)."""
    trailer = headers.get("x-amz-trailer")
    if not trailer:
        return None
    name = trailer.strip().lower()
    if not name.startswith("x-amz-checksum-") or name[len("x-amz-checksum-"):].upper() not in ALGORITHMS:
        raise S3Error("InvalidRequest", f"x-amz-trailer {trailer!r} is not a supported checksum header")
    return name[len("x-amz-checksum-"):].upper()


def decode_md5(value: str) -> bytes:
    """The 16 bytes of a Content-MD5 header; InvalidDigest when it is not base64 of 16 bytes."""
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except ValueError:
        digest = b""
    if len(digest) != 16:
        raise S3Error("InvalidDigest", f"Content-MD5 {value!r} is not the base64 of a 16-byte MD5 digest",
                      ContentMD5=value)
    return digest
