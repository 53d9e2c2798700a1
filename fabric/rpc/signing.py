"""Signed messages: every request and reply carries an HMAC-SHA256 over its exact wire bytes.

Roles are the workers' topics (:data:`ROLES`). Each role ``X`` has a secret master key
``K_X`` (up to two at once, for rotation). A message from ``X`` to a worker of role ``Y``
is signed with the *pair key* ``K(X>Y) = HMAC(K_X, "fabric-rpc pair " + Y)``; the reply
to it with the same pair key (and the request's key id). So:

* a host running ``X`` holds ``X.key`` (its masters: it can sign as ``X`` to anyone) and
  ``X.verify`` (the pair keys ``K(W>X)`` of every role ``W``: it can check what is sent
  to it). It needs no other role's key to check replies: it derives ``K(X>Y)`` itself.
* what a stolen compute host can do: everything the compute role may ask (the
  ``rpc_callers`` tables of the managers say what: IPAM allocations and releases, plugging
  and unplugging on network hosts, rescheduling a build), and forge messages *to compute
  workers* as any role (it holds ``K(api>compute)``), e.g. ask another compute host to stop
  a guest. What it cannot do: sign as api, scheduler, network or ipam towards any other
  role, so it cannot configure IPAM, build through the scheduler or fan out to network
  workers as IPAM would.

Why HMAC and not Ed25519 (measured on the 2-core development machine, 600-byte body):
HMAC-SHA256 costs ~2 µs to sign and ~2 µs to check; Ed25519 (``cryptography``) ~33 µs
to sign and ~110 µs to check, ~290 µs per call (request and reply each signed and
checked), which would take the RPC benchmark's call rates below their targets. The pair
keys give most of what public keys would: a verifier cannot sign as the sender towards
anyone but its own role.

The wire body is one header line, then the envelope bytes exactly as encoded::

    FSIG1 <signer>><verifier> <key id> <unix time> <hex mac>\\n<envelope JSON>

The MAC covers the kind (request or reply), the header fields and the envelope bytes,
so nothing is re-serialised between signing and checking. A receiver refuses (see
:class:`Refused` and its ``code``) an unsigned message, a bad header, a key it does not
hold, a MAC that does not match, a time outside ``[signing] max_age`` of its clock, a
message signed for another role, and (the server, with the manager's table) a signer the
method does not name.

A replay inside the window is a duplicate delivery, which handlers already tolerate
(they are idempotent for redelivery); outside it, it is refused as stale. A backlog
older than ``max_age`` (a worker down that long) is dead-lettered as stale too. A cast
the server re-publishes to be tried again is signed afresh with the pair key it was
checked with (towards the server's own role only), so a retry's wait is not counted.

Which keyring a process uses: the one attached to its transport (``transport.keyring``),
else the one installed with :func:`install` (launchers do, from settings), else the one
the environment's settings name (``config.load()``), loaded on first use.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import dataclasses
import hashlib
import hmac
import logging
import os
import secrets
import stat
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from fabric.exception import MessagingError

LOG = logging.getLogger(__name__)

#: Every role a key exists for, in the order a process holding several prefers them.
ROLES = ("api", "scheduler", "compute", "network", "ipam", "objectstore", "volume")
#: Roles a message may be signed by: every role (the managers' tables narrow it per method).
ANY_ROLE = frozenset(ROLES)

MAGIC = b"FSIG1"
_MAGIC_SPACE = MAGIC + b" "
REQUEST = b"q"
REPLY = b"r"
#: Master keys a role keeps at once: the newest signs, either is accepted.
KEYS_PER_ROLE = 2

_PAIR_LABEL = b"fabric-rpc pair "


class SigningError(MessagingError):
    msg_fmt = "RPC signing: {reason}"


class Refused(Exception):
    """A received message was refused; ``code`` is one of unsigned, malformed, unknown-key,
    forged, stale, wrong-destination, wrong-role."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class MasterKey:
    """One generation of a role's secret."""

    kid: str
    created: str
    secret: bytes


def key_id(secret: bytes) -> str:
    """A short public name of a master key (never reveals it)."""
    return hashlib.sha256(b"fabric-rpc kid " + secret).hexdigest()[:12]


def pair_key(master: bytes, verifier: str) -> bytes:
    """``K(X>Y)``: the key ``X``'s master gives for messages to role ``verifier``."""
    return hmac.new(master, _PAIR_LABEL + verifier.encode(), hashlib.sha256).digest()


# --------------------------------------------------------------------------- the callers tables
_CALLERS: dict[str, Mapping[str, frozenset[str]]] = {}


def register_callers(topic: str, table: Mapping[str, frozenset[str]]) -> None:
    """Record which roles may call each method of ``topic`` (done by each Manager class), so a
    process holding several roles' keys signs a message as a role the callee accepts."""
    if topic:
        _CALLERS[topic] = table


_ACTING: contextvars.ContextVar[str | None] = contextvars.ContextVar("fabric_rpc_acting_role", default=None)


@contextlib.contextmanager
def acting_as(role: str) -> Iterator[None]:
    """Sign the messages sent inside the block as ``role`` (a tool doing one role's job)."""
    token = _ACTING.set(role)
    try:
        yield
    finally:
        _ACTING.reset(token)


# --------------------------------------------------------------------------- keyring
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class _PairKey:
    """One pair key ready to sign with: HMAC-SHA256 (RFC 2104) as two SHA-256 states
    keyed once, copied for each message, and the signature line's start for it."""

    __slots__ = ("signer", "verifier", "kid", "prefix", "_inner", "_outer")

    def __init__(self, signer: str, verifier: str, kid: str, key: bytes) -> None:
        self.signer, self.verifier, self.kid = signer, verifier, kid
        #: ``FSIG1 <signer>><verifier> <key id> `` (the time and the MAC follow).
        self.prefix = b"%s %s>%s %s " % (MAGIC, signer.encode(), verifier.encode(), kid.encode())
        if len(key) > 64:  # longer than SHA-256's block: hashed first, as RFC 2104 says
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def mac(self, head: bytes, body: bytes = b"") -> bytes:
        """HMAC-SHA256 of ``head + body`` (fed in two parts, so a message body is never
        copied to be signed), as lowercase hex bytes. The states' copies cost less than
        ``hmac``'s object (its copy, and a second one in ``hexdigest``, through
        Python-level methods): 1.3 instead of 1.85 µs per 1.4 kB message, in a loop."""
        inner = self._inner.copy()
        inner.update(head)
        inner.update(body)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest().encode()


class Keyring:
    """The keys one process holds and how it signs and checks with them.

    ``masters``: role -> master keys, oldest first (the roles this process may sign as).
    ``verify``: (signer, verifier) -> {key id: pair key} for pairs it cannot derive.
    A disabled keyring (``enabled=False``) sends bare envelopes and accepts anything.
    """

    def __init__(self, masters: Mapping[str, list[MasterKey]], verify: Mapping[tuple[str, str], dict[str, bytes]],
                 *, max_age: float = 600.0, enabled: bool = True, default_role: str | None = None,
                 source: str = "memory") -> None:
        self.masters = {role: list(keys) for role, keys in masters.items() if keys}
        self.verify = {pair: dict(keys) for pair, keys in verify.items()}
        self.max_age = max_age
        self.enabled = enabled
        self.source = source
        held = [role for role in ROLES if role in self.masters] + sorted(set(self.masters) - set(ROLES))
        self.held_roles = tuple(held)
        self.default_role = default_role or (held[0] if held else None)
        #: (signer, verifier, key id or None: the newest) -> the pair key it signs with.
        self._signing: dict[tuple[str, str, str | None], _PairKey] = {}
        #: (b"signer>verifier", key id bytes) as a signature line has them -> the pair key
        #: that checks it (only keys held: a made-up line adds nothing here).
        self._checking: dict[tuple[bytes, bytes], _PairKey] = {}

    @classmethod
    def disabled(cls) -> Keyring:
        """Signing off (``[signing] enabled = false``)."""
        return cls({}, {}, enabled=False, source="disabled")

    # -- choosing --------------------------------------------------------------
    def signing_role(self, topic: str, method: str) -> str:
        """The role a message to ``topic.method`` is signed as: the one named with
        :func:`acting_as`, else the only one held, else the first held role the callee's
        table accepts, else the default. Raises SigningError when none is held."""
        acting = _ACTING.get()
        if acting is not None:
            return acting
        if len(self.held_roles) == 1:
            return self.held_roles[0]
        allowed = _CALLERS.get(topic, {}).get(method)
        if allowed:
            for role in self.held_roles:
                if role in allowed:
                    return role
        if self.default_role is None:
            raise SigningError(reason=f"this process holds no role key to sign with (keys from {self.source})")
        return self.default_role

    def _key(self, signer: str, verifier: str, kid: str) -> bytes | None:
        for master in self.masters.get(signer, ()):
            if master.kid == kid:
                return pair_key(master.secret, verifier)
        return self.verify.get((signer, verifier), {}).get(kid)

    # -- signing ---------------------------------------------------------------
    def sign(self, kind: bytes, body: bytes, signer: str, verifier: str, kid: str | None = None) -> bytes:
        """``body`` framed with its signature: signed by ``signer`` for role ``verifier``
        with the newest key (or key ``kid``: a reply uses its request's). A disabled
        keyring returns ``body`` unchanged. Raises SigningError for a key not held."""
        if not self.enabled:
            return body
        pair = self._signing.get((signer, verifier, kid))
        if pair is None:
            pair = self._signing_pair(signer, verifier, kid)
        header = pair.prefix + b"%.3f" % time.time()
        return b"".join((header, b" ", pair.mac(kind + header + b"\n", body), b"\n", body))

    def _signing_pair(self, signer: str, verifier: str, kid: str | None) -> _PairKey:
        if kid is None:
            masters = self.masters.get(signer)
            if not masters:
                raise SigningError(reason=f"no key for role {signer!r} in {self.source} (this process holds: "
                                          f"{', '.join(self.held_roles) or 'none'})")
            newest = masters[-1].kid
        else:
            newest = kid
        key = self._key(signer, verifier, newest)
        if key is None:
            raise SigningError(reason=f"no key {newest} for messages from {signer} to {verifier} in {self.source}")
        pair = self._signing[(signer, verifier, kid)] = _PairKey(signer, verifier, newest, key)
        return pair

    # -- checking --------------------------------------------------------------
    def check(self, kind: bytes, wire: bytes, verifier: str | None = None) -> tuple[str, str, str, bytes]:
        """(signer, verifier, key id, envelope bytes) of a signed message.

        ``verifier``: the role it must be addressed to (a server's own); None accepts
        any pair whose key this keyring holds (a caller checks the pair itself). A
        disabled keyring strips a signature unchecked and returns ("", "", "", body).
        Raises :class:`Refused`.
        """
        if not wire.startswith(_MAGIC_SPACE):
            if not self.enabled:
                return "", "", "", wire
            raise Refused("unsigned", "the message carries no signature")
        first, newline, body = wire.partition(b"\n")
        if not newline:
            raise Refused("malformed", "a signature line without a message")
        if not self.enabled:
            return "", "", "", body
        fields = first.split(b" ")
        if len(fields) != 5:
            raise Refused("malformed", f"bad signature line {first[:120]!r}")
        _, pair_b, kid_b, ts_b, mac = fields
        try:
            signed_at = float(ts_b)
        except ValueError:
            raise Refused("malformed", f"bad signature line {first[:120]!r}") from None
        pair = self._checking.get((pair_b, kid_b))
        if pair is None:
            pair = self._checking_pair(first, pair_b, kid_b, verifier)
        elif verifier is not None and pair.verifier != verifier:
            raise Refused("wrong-destination", f"signed by {pair.signer} for {pair.verifier}, received by {verifier}")
        expected = pair.mac(kind + first[:-len(mac) - 1] + b"\n", body)
        if not hmac.compare_digest(expected, mac):
            raise Refused("forged", f"the signature of {pair.signer}>{pair.verifier} key {pair.kid} does not match")
        age = time.time() - signed_at
        if not -self.max_age <= age <= self.max_age:
            raise Refused("stale", f"signed {age:.0f}s ago by {pair.signer}; accepted within {self.max_age:g}s")
        return pair.signer, pair.verifier, pair.kid, body

    def _checking_pair(self, first: bytes, pair_b: bytes, kid_b: bytes, verifier: str | None) -> _PairKey:
        """The pair key a signature line names (remembered once found); Refused if the
        line is malformed, is addressed to another role than ``verifier`` (if given), or
        no key is held for it."""
        try:
            signer_b, arrow, verifier_b = pair_b.partition(b">")
            signer, to, kid = signer_b.decode("ascii"), verifier_b.decode("ascii"), kid_b.decode("ascii")
        except UnicodeDecodeError:
            raise Refused("malformed", f"bad signature line {first[:120]!r}") from None
        if not arrow or not signer or not to:
            raise Refused("malformed", f"bad signer>verifier {pair_b[:80]!r}")
        if verifier is not None and to != verifier:
            raise Refused("wrong-destination", f"signed by {signer} for {to}, received by {verifier}")
        key = self._key(signer, to, kid)
        if key is None:
            raise Refused("unknown-key", f"no key {kid} for messages from {signer} to {to}")
        if len(self._checking) > 1024:  # bounded: held keys only, but a check may name any pair
            self._checking.clear()
        pair = self._checking[(pair_b, kid_b)] = _PairKey(signer, to, kid, key)
        return pair


def strip(wire: bytes) -> bytes:
    """The envelope of a message, signature line (if any) removed, unchecked (for display)."""
    return wire.partition(b"\n")[2] if wire.startswith(MAGIC + b" ") else wire


# --------------------------------------------------------------------------- key files
def _read_private(path: Path) -> list[str]:
    info = path.stat()
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningError(reason=f"{path} is readable by others (mode {stat.filemode(info.st_mode)}); "
                                  f"it holds secrets: chmod 600 {path}")
    return [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def _write_private(path: Path, lines: Iterable[str], header: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"# {header}\n" + "".join(f"{line}\n" for line in lines))
    os.chmod(partial, 0o600)
    os.replace(partial, path)  # atomic: a worker never reads half a file


def read_masters(key_dir: str | os.PathLike, role: str) -> list[MasterKey]:
    """The master keys in ``<key_dir>/<role>.key``, oldest first ([] when there is no file).
    Raises SigningError for a file others may read or a bad line."""
    path = Path(key_dir) / f"{role}.key"
    if not path.exists():
        return []
    keys = []
    for line in _read_private(path):
        try:
            kid, created, encoded = line.split()
            keys.append(MasterKey(kid, created, base64.b64decode(encoded, validate=True)))
        except ValueError:
            raise SigningError(reason=f"{path}: bad line (expected '<key id> <created> <base64 key>')") from None
    return keys


def read_verify(key_dir: str | os.PathLike, role: str) -> dict[tuple[str, str], dict[str, bytes]]:
    """The pair keys in ``<key_dir>/<role>.verify``: {(signer, role): {key id: key}}."""
    path = Path(key_dir) / f"{role}.verify"
    pairs: dict[tuple[str, str], dict[str, bytes]] = {}
    if not path.exists():
        return pairs
    for line in _read_private(path):
        try:
            signer, kid, encoded = line.split()
            pairs.setdefault((signer, role), {})[kid] = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise SigningError(reason=f"{path}: bad line (expected '<signer> <key id> <base64 key>')") from None
    return pairs


def write_masters(key_dir: str | os.PathLike, role: str, keys: list[MasterKey]) -> None:
    _write_private(Path(key_dir) / f"{role}.key", (f"{k.kid} {k.created} {base64.b64encode(k.secret).decode()}"
                                                   for k in keys),
                   f"fabric RPC signing: master keys of role {role}, oldest first (the last signs). Secret.")


def write_verify_files(key_dir: str | os.PathLike) -> None:
    """Rewrite every ``<role>.verify`` from the masters in ``key_dir`` (the key host's job)."""
    masters = {role: read_masters(key_dir, role) for role in ROLES}
    for verifier in ROLES:
        lines = [f"{signer} {key.kid} {base64.b64encode(pair_key(key.secret, verifier)).decode()}"
                 for signer in ROLES for key in masters[signer]]
        _write_private(Path(key_dir) / f"{verifier}.verify", lines,
                       f"fabric RPC signing: keys checking messages to role {verifier}. Secret.")


def new_master() -> MasterKey:
    secret = secrets.token_bytes(32)
    return MasterKey(key_id(secret), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), secret)


def generate(key_dir: str | os.PathLike, roles: Iterable[str] = ROLES) -> list[str]:
    """Create a master key for each of ``roles`` that has none, then the verify files;
    returns the roles given a key (existing keys are kept)."""
    made = []
    for role in roles:
        if not read_masters(key_dir, role):
            write_masters(key_dir, role, [new_master()])
            made.append(role)
    write_verify_files(key_dir)
    return made


def rotate(key_dir: str | os.PathLike, roles: Iterable[str] = ROLES) -> dict[str, str]:
    """Give each role a new newest key, keeping the previous one (older ones are dropped);
    returns {role: new key id}. Raises SigningError for a role without keys."""
    made = {}
    for role in roles:
        keys = read_masters(key_dir, role)
        if not keys:
            raise SigningError(reason=f"role {role} has no key in {key_dir} to rotate: run `fabric-manage keys generate`")
        key = new_master()
        write_masters(key_dir, role, [*keys, key][-KEYS_PER_ROLE:])
        made[role] = key.kid
    write_verify_files(key_dir)
    return made


def retire(key_dir: str | os.PathLike, roles: Iterable[str] = ROLES) -> dict[str, list[str]]:
    """Drop every key but the newest of each role; returns {role: retired key ids}."""
    retired = {}
    for role in roles:
        keys = read_masters(key_dir, role)
        if len(keys) > 1:
            write_masters(key_dir, role, keys[-1:])
            retired[role] = [k.kid for k in keys[:-1]]
    write_verify_files(key_dir)
    return retired


def load(key_dir: str | os.PathLike, roles: Iterable[str] | None = None, *, max_age: float = 600.0,
         default_role: str | None = None) -> Keyring:
    """The keyring of a process running ``roles`` (None: every role whose files are present).

    Raises SigningError naming the file when a role in ``roles`` has no master key.
    """
    wanted = list(ROLES if roles is None else roles)
    masters: dict[str, list[MasterKey]] = {}
    verify: dict[tuple[str, str], dict[str, bytes]] = {}
    for role in wanted:
        keys = read_masters(key_dir, role)
        if not keys and roles is not None:
            raise SigningError(reason=f"no key for role {role}: {Path(key_dir) / (role + '.key')} is missing; run "
                                      f"`fabric-manage keys generate` on the key host and give this host "
                                      f"{role}.key and {role}.verify")
        masters[role] = keys
        verify.update(read_verify(key_dir, role))
    return Keyring(masters, verify, max_age=max_age, default_role=default_role, source=str(key_dir))


def from_settings(settings: Any, roles: Iterable[str] | None = None, *, default_role: str | None = None,
                  generate_missing: bool = False) -> Keyring:
    """The keyring ``settings`` name (``[signing]``). With ``generate_missing`` (fabric-all),
    a key directory holding no key at all gets every role's keys first (logged)."""
    if not settings.signing.enabled:
        return Keyring.disabled()
    key_dir = settings.signing_key_dir
    if generate_missing and not any((Path(key_dir) / f"{role}.key").exists() for role in ROLES):
        generate(key_dir)
        LOG.warning("Generated RPC signing keys for every role in %s (first start; see `fabric-manage keys`)",
                    key_dir)
    return load(key_dir, roles, max_age=settings.signing.max_age, default_role=default_role)


# --------------------------------------------------------------------------- which keyring
_installed: Keyring | None = None


def install(keyring: Keyring | None) -> None:
    """Make ``keyring`` this process's (None: forget it). Launchers call it at start."""
    global _installed
    _installed = keyring


def keyring_of(transport: Any) -> Keyring:
    """The keyring for messages over ``transport`` (see the module docstring for the order).
    Raises SigningError when none can be loaded."""
    keyring = getattr(transport, "keyring", None)
    if keyring is not None:
        return keyring
    if _installed is None:
        from fabric import config

        settings = config.load(None)
        install(from_settings(settings))
        LOG.info("Loaded RPC signing keys from %s (the environment's settings)", _installed.source)
    return _installed


def refusal_reason(refused: Refused) -> str:
    """The dead-letter reason of a refused message."""
    return f"refused ({refused.code}): {refused.reason}"


__all__ = ["ANY_ROLE", "ROLES", "Keyring", "Refused", "SigningError", "acting_as", "generate",
           "install", "keyring_of", "load", "register_callers", "retire", "rotate"]
