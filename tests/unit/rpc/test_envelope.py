"""The envelope: the fast pre-check accepts exactly what the marshmallow schema accepts."""

from __future__ import annotations

import copy
import json

import pytest

from fabric import config
from fabric.rpc import envelope

GOOD_REQUEST = {
    "v": 2, "kind": "call", "msg_id": "m-1", "method": "describe", "args": {"a": [1, 2]},
    "context": {"request_id": "req-1", "user_id": "u", "project_id": None, "roles": ["admin"],
                "is_admin": True},
    "deadline": 1700000000.5, "reply_to": "amq.rabbitmq.reply-to", "target": "ipam", "sent_at": 1699999999.25,
}
GOOD_REPLY = {"v": 2, "msg_id": "m-1", "ok": True, "result": {"x": 1}}
GOOD_ERROR_REPLY = {"v": 2, "msg_id": "m-1", "ok": False, "traceback": "tb",
                    "error": {"type": "NotFound", "code": 404, "message": "gone", "fields": {}}}


def _variant(base, path, value):
    data = copy.deepcopy(base)
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


REQUEST_CASES = [
    GOOD_REQUEST,
    _variant(GOOD_REQUEST, ["v"], 2),
    _variant(GOOD_REQUEST, ["v"], 0),
    _variant(GOOD_REQUEST, ["v"], 3),
    _variant(_variant(GOOD_REQUEST, ["v"], 2), ["sent_at"], 1700000000.25),
    _variant(_variant(GOOD_REQUEST, ["v"], 2), ["sent_at"], "now"),
    _variant(_variant(GOOD_REQUEST, ["v"], 2), ["sent_at"], None),
    _variant(GOOD_REQUEST, ["v"], "1"),
    _variant(GOOD_REQUEST, ["v"], 1.0),
    _variant(GOOD_REQUEST, ["v"], True),
    _variant(GOOD_REQUEST, ["kind"], "notify"),
    _variant(GOOD_REQUEST, ["msg_id"], ""),
    _variant(GOOD_REQUEST, ["msg_id"], 5),
    _variant(GOOD_REQUEST, ["method"], KeyError),
    _variant(GOOD_REQUEST, ["args"], []),
    _variant(GOOD_REQUEST, ["args"], KeyError),
    _variant(GOOD_REQUEST, ["context"], KeyError),
    _variant(GOOD_REQUEST, ["context", "request_id"], None),
    _variant(GOOD_REQUEST, ["context", "roles"], "admin"),
    _variant(GOOD_REQUEST, ["context", "roles"], [1]),
    _variant(GOOD_REQUEST, ["context", "is_admin"], 1),
    _variant(GOOD_REQUEST, ["context", "is_admin"], KeyError),
    _variant(GOOD_REQUEST, ["context", "user_id"], 7),
    _variant(GOOD_REQUEST, ["context", "extra"], "x"),
    _variant(GOOD_REQUEST, ["deadline"], None),
    _variant(GOOD_REQUEST, ["deadline"], 5),
    _variant(GOOD_REQUEST, ["deadline"], "soon"),
    _variant(GOOD_REQUEST, ["deadline"], KeyError),
    _variant(GOOD_REQUEST, ["reply_to"], 3),
    _variant(GOOD_REQUEST, ["target"], None),
    _variant(GOOD_REQUEST, ["surprise"], 1),
    [GOOD_REQUEST],
    "text",
]
REPLY_CASES = [
    GOOD_REPLY,
    _variant(GOOD_REPLY, ["v"], 2),
    _variant(GOOD_REPLY, ["v"], 0),
    GOOD_ERROR_REPLY,
    _variant(GOOD_REPLY, ["ok"], 1),
    _variant(GOOD_REPLY, ["ok"], KeyError),
    _variant(GOOD_REPLY, ["result"], None),
    _variant(GOOD_REPLY, ["result"], KeyError),
    _variant(GOOD_REPLY, ["msg_id"], ""),
    _variant(GOOD_REPLY, ["extra"], 1),
    _variant(GOOD_ERROR_REPLY, ["error", "type"], KeyError),
    _variant(GOOD_ERROR_REPLY, ["error", "code"], "404"),
    _variant(GOOD_ERROR_REPLY, ["error", "fields"], []),
    _variant(GOOD_ERROR_REPLY, ["error", "why"], "x"),
    _variant(GOOD_ERROR_REPLY, ["traceback"], None),
    _variant(GOOD_ERROR_REPLY, ["error"], "boom"),
]


@pytest.mark.parametrize("data", REQUEST_CASES)
def test_request_precheck_agrees_with_schema(data):
    fast, schema = envelope.precheck_agrees("request", data)
    assert fast == schema


@pytest.mark.parametrize("data", REPLY_CASES)
def test_reply_precheck_agrees_with_schema(data):
    fast, schema = envelope.precheck_agrees("reply", data)
    assert fast == schema


def test_request_round_trip_fills_defaults():
    body = envelope.encode_request("cast", "m-2", "build", {"x": 1}, {"request_id": "req-9"},
                                   None, None, "compute.h1")
    request = envelope.decode_request(body)
    assert request["args"] == {"x": 1}
    assert request["context"] == {"request_id": "req-9", "user_id": None, "project_id": None,
                                  "roles": [], "is_admin": False}


@pytest.mark.parametrize(("body", "needle"), [
    (b"\xff\xfe", "not JSON"),
    (b"{not json", "not JSON"),
    (json.dumps(_variant(GOOD_REQUEST, ["kind"], "notify")).encode(), "kind"),
    (json.dumps(_variant(GOOD_REQUEST, ["context", "is_admin"], "yes")).encode(), "is_admin"),
])
def test_malformed_request_names_the_problem(body, needle):
    with pytest.raises(envelope.MalformedMessage) as err:
        envelope.decode_request(body)
    assert needle in err.value.message


def test_unserialisable_argument_is_refused_before_sending():
    with pytest.raises(envelope.MalformedMessage, match="arguments of build must be JSON"):
        envelope.encode_request("cast", "m", "build", {"when": object()}, {"request_id": "r"},
                                None, None, "t")


def test_unserialisable_result_becomes_an_error_reply():
    reply = envelope.decode_reply(envelope.encode_reply("m", result={1, 2}))
    assert reply["ok"] is False
    assert reply["error"]["type"] == "MalformedMessage"


def test_this_release_reads_the_previous_envelope_version_and_answers_in_it():
    assert envelope.OLDEST_READ == envelope.VERSION - 1 == GOOD_REQUEST["v"]
    request = envelope.decode_request(json.dumps(GOOD_REQUEST).encode())
    assert request["v"] == envelope.OLDEST_READ and request["sent_at"] == GOOD_REQUEST["sent_at"]
    reply = envelope.decode_reply(envelope.encode_reply("m-1", result=7, version=request["v"]))
    assert (reply["v"], reply["result"]) == (envelope.OLDEST_READ, 7)


def test_a_request_written_for_the_previous_release_has_its_fields_and_says_its_version():
    body = envelope.encode_request("cast", "m-3", "build", {}, {"request_id": "r"}, None, None, "compute",
                                   version=envelope.OLDEST_READ)
    assert set(json.loads(body)) == set(GOOD_REQUEST) and json.loads(body)["v"] == envelope.OLDEST_READ
    current = json.loads(envelope.encode_request("cast", "m-4", "build", {}, {"request_id": "r"}, None, None, "c"))
    assert current["v"] == envelope.VERSION and isinstance(current["sent_at"], float)


def test_the_version_written_by_default_is_this_releases():
    assert config.Settings().rpc.envelope_version == envelope.VERSION
    with pytest.raises(ValueError, match="this release writes 2 to 3"):
        envelope.check_version(envelope.OLDEST_READ - 1)


def test_a_newer_envelope_is_refused_saying_so_never_guessed_at():
    newer = dict(GOOD_REQUEST, v=envelope.VERSION + 1, something_new={"x": 1})
    with pytest.raises(envelope.NewerEnvelope) as refused:
        envelope.decode_request(json.dumps(newer).encode())
    assert f"Envelope version {envelope.VERSION + 1} is newer than this worker reads" in refused.value.message
    assert "requeue-dead" in refused.value.message
    with pytest.raises(envelope.NewerEnvelope):
        envelope.decode_reply(json.dumps(dict(GOOD_REPLY, v=envelope.VERSION + 1)).encode())


def test_a_release_writes_only_versions_it_reads():
    assert envelope.check_version(envelope.OLDEST_READ) == envelope.OLDEST_READ
    with pytest.raises(ValueError, match="this release writes"):
        envelope.check_version(envelope.VERSION + 1)


@pytest.mark.parametrize("args", [
    {"a": [1, 2.5, None, True, False, -0.0, 1e300, 10**30]},
    {"text": "é \u2028 \" \\ \n \x00 \U0001f600", "nested": {"k": [{"x": {}}, []]}},
    {"tuple": (1, "two"), "keys": {5: "int", 2.5: "float", None: "none", True: "bool"}},
])
def test_messages_are_encoded_as_pythons_json_encoder_writes_them(args):
    """The reused C encoder writes what ``json.JSONEncoder`` (compact, UTF-8 as is, no NaN)
    wrote before it, so messages read the same in every release."""
    reference = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
    body = envelope.encode_request("cast", "m-1", "work", args, {"request_id": "r"}, None, None, "t")
    sent_at = json.loads(body)["sent_at"]
    assert body.decode() == reference({"v": envelope.VERSION, "kind": "cast", "msg_id": "m-1", "method": "work",
                                       "args": args, "context": {"request_id": "r"}, "deadline": None,
                                       "reply_to": None, "target": "t", "sent_at": sent_at})
    assert envelope.encode_reply("m-1", result=args).decode() == reference(
        {"v": envelope.VERSION, "msg_id": "m-1", "ok": True, "result": args})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {1, 2}, b"bytes", "circular"])
def test_what_json_cannot_carry_is_refused_by_name_before_sending(value):
    if value == "circular":
        value = []
        value.append(value)
    with pytest.raises(envelope.MalformedMessage, match="arguments of work must be JSON-serialisable"):
        envelope.encode_request("cast", "m-1", "work", {"a": value}, {"request_id": "r"}, None, None, "t")
