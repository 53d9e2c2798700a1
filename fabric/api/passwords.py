"""Password hashing with scrypt (``hashlib.scrypt``, RFC 7914): a vetted,
memory-hard KDF in the standard library, so no extra dependency.

A stored hash reads ``scrypt$<n>$<r>$<p>$<salt b64>$<key b64>``; its
parameters travel with it so they can be raised later without breaking old
hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# 2**14 with r=8 costs 16 MiB and ~50 ms here: OWASP's minimum for scrypt.
_N, _R, _P = 2**14, 8, 1
_KEY_LEN = 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, cost: int = _N) -> str:
    """A salted scrypt hash of ``password`` to store. ``cost`` (scrypt's N, a power of two) is for
    test harnesses that make thousands of users: stored passwords always get the default."""
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=cost, r=_R, p=_P,
                         maxmem=64 * 1024 * 1024, dklen=_KEY_LEN)
    return f"scrypt${cost}${_R}${_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``; False for any malformed hash."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key)
        actual = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r),
                                p=int(p), maxmem=64 * 1024 * 1024, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
