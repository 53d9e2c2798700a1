"""The versioned JSON envelope every fabric message travels in.

A request is ``{"v": 3, "kind": "call"|"cast", "msg_id", "method", "args",
"context", "deadline", "reply_to", "target", "sent_at"}``; a reply is ``{"v": 3, "msg_id",
"ok", "result"}`` or ``{"v": 3, "msg_id", "ok": false, "error", "traceback"}``.
``deadline`` is the caller's absolute give-up time (UNIX seconds) or null; ``sent_at``
(since version 2) the sender's clock when it sent the request, so a worker sees how long a
message waited in its queue. Version 3 has the fields of version 2; what it adds is a
method the release before lacks (the network's ``security_members_changed_many``), so a
sender writing version 2 does not use it.

The version rules, which make a rolling upgrade possible (workers of two releases on one
broker):

1. A release reads its own version and the one before (:data:`OLDEST_READ`), and writes
   ``[rpc] envelope_version`` (its own by default). During an upgrade, the upgraded workers
   are set to write the previous version until every worker is upgraded, then the setting
   is removed (README: rolling upgrades).
2. A reply is written in the version of the request it answers, so an old caller can read it.
3. A message of a newer version than this release reads is not guessed at: it is refused
   with a reason that says so (:class:`NewerEnvelope`, dead-lettered as ``newer-version``),
   and moved back with ``fabric-manage queues requeue-dead`` once the worker is upgraded.
4. A new version may only add fields (each with a default for messages of the version
   before), change what a field means in a way the reader can tell by ``v``, or add
   methods: a sender writing the version before sends what that release understands.

The marshmallow schemas below are the definition of a valid envelope. Because a
full marshmallow load costs ~60 µs, received messages first go through
:func:`_precheck`, a hand-written test that accepts exactly what the schemas
accept (``tests/unit/rpc/test_envelope.py`` holds the two to the same cases);
only a message the pre-check rejects is loaded through marshmallow, whose
error text is what the dead-letter reason carries. Either way, a bad envelope
raises :class:`MalformedMessage` and nothing is dispatched.
"""

from __future__ import annotations

import json
import math
import time
from json import encoder as json_encoder
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from fabric.exception import MessagingError

#: The version this release writes by default, and the newest it reads.
VERSION = 3
#: The oldest version this release reads (the previous release's).
OLDEST_READ = 2
_READ = frozenset(range(OLDEST_READ, VERSION + 1))


def _not_serialisable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


if json_encoder.c_make_encoder is not None:
    # One C encoder for every message: ``JSONEncoder.encode`` builds one per call (with
    # a closure and a circular-reference map), a third of encoding a reply. Without
    # that map, a circular argument ends in RecursionError (see ``_dumps``).
    _encode = json_encoder.c_make_encoder(None, _not_serialisable, json_encoder.encode_basestring, None,
                                          ":", ",", False, False, False)

    def _dumps(value: Any) -> str:
        """Compact JSON (UTF-8 as is, no NaN or infinity); TypeError, ValueError or
        RecursionError for what cannot be encoded."""
        return "".join(_encode(value, 0))
else:  # pragma: no cover - CPython always has _json
    _dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class MalformedMessage(MessagingError):
    msg_fmt = "Malformed message: {reason}"


class NewerEnvelope(MalformedMessage):
    """A message of an envelope version this release does not read yet."""

    msg_fmt = ("Envelope version {version} is newer than this worker reads ({oldest} to {newest}): "
               "upgrade this worker, then move the message back with `fabric-manage queues requeue-dead`")


def check_version(version: int) -> int:
    """``version`` if this release can write it; ValueError naming the ones it can otherwise."""
    if version not in _READ:
        raise ValueError(f"envelope version {version!r}: this release writes {OLDEST_READ} to {VERSION}")
    return version


class StrictBoolean(fields.Field):
    """true or false only (marshmallow's Boolean also takes 1, "yes", ...)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if type(value) is not bool:
            raise ValidationError("Not a boolean (true or false).")
        return value


class ContextSchema(Schema):
    request_id = fields.String(required=True)
    user_id = fields.String(allow_none=True, load_default=None)
    project_id = fields.String(allow_none=True, load_default=None)
    roles = fields.List(fields.String(), load_default=list)
    is_admin = StrictBoolean(load_default=False)


class RequestSchema(Schema):
    v = fields.Integer(strict=True, required=True, validate=validate.OneOf(sorted(_READ)))
    kind = fields.String(required=True, validate=validate.OneOf(["call", "cast"]))
    msg_id = fields.String(required=True, validate=validate.Length(min=1))
    method = fields.String(required=True, validate=validate.Length(min=1))
    args = fields.Dict(keys=fields.String(), required=True)
    context = fields.Nested(ContextSchema, required=True)
    deadline = fields.Float(allow_none=True, load_default=None, allow_nan=False)
    reply_to = fields.String(allow_none=True, load_default=None)
    target = fields.String(load_default="")
    sent_at = fields.Float(allow_none=True, load_default=None, allow_nan=False)


class ErrorSchema(Schema):
    type = fields.String(required=True)
    code = fields.Integer(strict=True, load_default=500)
    message = fields.String(required=True)
    fields_ = fields.Dict(keys=fields.String(), load_default=dict, data_key="fields")


class ReplySchema(Schema):
    v = fields.Integer(strict=True, required=True, validate=validate.OneOf(sorted(_READ)))
    msg_id = fields.String(required=True, validate=validate.Length(min=1))
    ok = StrictBoolean(required=True)
    result = fields.Raw(allow_none=True, load_default=None)
    error = fields.Nested(ErrorSchema, allow_none=True, load_default=None)
    traceback = fields.String(load_default="")


_REQUEST_SCHEMA = RequestSchema()
_REPLY_SCHEMA = ReplySchema()


def encode_request(
    kind: str, msg_id: str, method: str, args: dict[str, Any], context: dict[str, Any],
    deadline: float | None, reply_to: str | None, target: str, version: int = VERSION,
) -> bytes:
    """The request as wire bytes, in envelope ``version`` (a version this release reads).

    Raises :class:`~fabric.exception.Invalid`-like :class:`MalformedMessage` naming the
    method when an argument is not JSON-serialisable (nothing is sent then).
    """
    request = {"v": version, "kind": kind, "msg_id": msg_id, "method": method, "args": args,
               "context": context, "deadline": deadline, "reply_to": reply_to, "target": target,
               "sent_at": time.time()}
    try:
        return _dumps(request).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise MalformedMessage(
            reason=f"arguments of {method} must be JSON-serialisable "
            f"(dict, list, str, int, float, bool, None): {exc}"
        ) from exc


def encode_reply(msg_id: str, result: Any = None, error: dict[str, Any] | None = None,
                 traceback: str = "", version: int = VERSION) -> bytes:
    """A reply as wire bytes, in the envelope ``version`` of its request (rule 2); a result that
    cannot be serialised becomes an error reply."""
    if error is None:
        try:
            return _dumps({"v": version, "msg_id": msg_id, "ok": True, "result": result}).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            error = {"type": "MalformedMessage", "code": 503, "fields": {},
                     "message": f"Malformed message: result is not JSON-serialisable: {exc}"}
    return _dumps({"v": version, "msg_id": msg_id, "ok": False, "error": error,
                   "traceback": traceback}).encode()


_raw_decode = json.JSONDecoder().raw_decode


def _loads(body: bytes | str) -> Any:
    # fabric's own messages are compact UTF-8 JSON: decoded and parsed directly, ~3 µs
    # less than json.loads (its encoding detection and whitespace regex). Anything else
    # gets json.loads's own verdict.
    try:
        text = body.decode() if type(body) is bytes else body
        data, end = _raw_decode(text)
        if end == len(text):
            return data
    except (ValueError, UnicodeDecodeError, AttributeError):
        pass
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedMessage(reason=f"body is not JSON: {exc}") from exc


def _is_str_or_none(value: Any) -> bool:
    return value is None or type(value) is str


def _precheck_context(ctx: Any) -> bool:
    if type(ctx) is not dict or type(ctx.get("request_id")) is not str:
        return False
    if not (_is_str_or_none(ctx.get("user_id")) and _is_str_or_none(ctx.get("project_id"))):
        return False
    roles = ctx.get("roles", [])
    if type(roles) is not list or (roles and any(type(r) is not str for r in roles)):
        return False
    if type(ctx.get("is_admin", False)) is not bool:
        return False
    return _CONTEXT_KEYS.issuperset(ctx)


_CONTEXT_KEYS = frozenset(ContextSchema().fields)
_REQUEST_KEYS = frozenset(RequestSchema().fields)
_REPLY_KEYS = frozenset(ReplySchema().fields)
_ERROR_KEYS = frozenset({"type", "code", "message", "fields"})


def _check_not_newer(data: Any) -> None:
    """Rule 3: raise NewerEnvelope for a message of a version after this release's."""
    if type(data) is dict and type(data.get("v")) is int and data["v"] > VERSION:
        raise NewerEnvelope(version=data["v"], oldest=OLDEST_READ, newest=VERSION)


def _precheck_request(data: Any) -> bool:
    if type(data) is not dict or type(data.get("v")) is not int or data["v"] not in _READ:
        return False
    sent_at = data.get("sent_at")
    if sent_at is not None and (type(sent_at) not in (int, float) or not math.isfinite(sent_at)):
        return False
    if data.get("kind") not in ("call", "cast"):
        return False
    if type(data.get("msg_id")) is not str or not data["msg_id"]:
        return False
    if type(data.get("method")) is not str or not data["method"]:
        return False
    if type(data.get("args")) is not dict or not _precheck_context(data.get("context")):
        return False
    deadline = data.get("deadline")
    if deadline is not None and (type(deadline) not in (int, float) or not math.isfinite(deadline)):
        return False
    if not _is_str_or_none(data.get("reply_to")) or type(data.get("target", "")) is not str:
        return False
    return _REQUEST_KEYS.issuperset(data)


def _precheck_reply(data: Any) -> bool:
    if type(data) is not dict or type(data.get("v")) is not int or data["v"] not in _READ:
        return False
    if type(data.get("msg_id")) is not str or not data["msg_id"] or type(data.get("ok")) is not bool:
        return False
    error = data.get("error")
    if error is not None:
        if type(error) is not dict or type(error.get("type")) is not str:
            return False
        if type(error.get("message")) is not str or type(error.get("code", 500)) is not int:
            return False
        if type(error.get("fields", {})) is not dict or not _ERROR_KEYS.issuperset(error):
            return False
    if type(data.get("traceback", "")) is not str:
        return False
    return _REPLY_KEYS.issuperset(data)


def _schema_error(schema: Schema, data: Any, what: str) -> MalformedMessage | None:
    try:
        schema.load(data)
    except ValidationError as exc:
        return MalformedMessage(reason=f"{what} envelope: {exc.messages}")
    except Exception as exc:  # noqa: BLE001 - non-dict input and the like
        return MalformedMessage(reason=f"{what} envelope: {exc}")
    # The pre-check is stricter than the schema here: the test suite keeps them equal,
    # but if they ever drift, the schema (the definition) wins.
    return None


def decode_request(body: bytes | str) -> dict[str, Any]:
    """A received request as a dict with every field present.

    Raises :class:`MalformedMessage` naming what is wrong.
    """
    data = _loads(body)
    if not _precheck_request(data):
        _check_not_newer(data)
        error = _schema_error(_REQUEST_SCHEMA, data, "request")
        if error is not None:
            raise error
        data = _REQUEST_SCHEMA.load(data)
    ctx = data["context"]
    ctx.setdefault("user_id", None)
    ctx.setdefault("project_id", None)
    ctx.setdefault("roles", [])
    ctx.setdefault("is_admin", False)
    data.setdefault("deadline", None)
    data.setdefault("reply_to", None)
    data.setdefault("target", "")
    data.setdefault("sent_at", None)
    return data


def decode_reply(body: bytes | str) -> dict[str, Any]:
    """A received reply as a dict. Raises :class:`MalformedMessage` naming what is wrong."""
    data = _loads(body)
    if not _precheck_reply(data):
        _check_not_newer(data)
        error = _schema_error(_REPLY_SCHEMA, data, "reply")
        if error is not None:
            raise error
        data = _REPLY_SCHEMA.load(data)
        if data.get("error") is not None:
            data["error"]["fields"] = data["error"].pop("fields_", {})
    data.setdefault("result", None)
    data.setdefault("error", None)
    data.setdefault("traceback", "")
    return data


def precheck_agrees(kind: str, data: Any) -> tuple[bool, bool]:
    """(pre-check accepts, schema accepts) for ``data``: the test suite's hook."""
    schema, check = (_REQUEST_SCHEMA, _precheck_request) if kind == "request" else (
        _REPLY_SCHEMA, _precheck_reply)
    try:
        schema.load(data)
        schema_ok = True
    except Exception:  # noqa: BLE001
        schema_ok = False
    return check(data), schema_ok
