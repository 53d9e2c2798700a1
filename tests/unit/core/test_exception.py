"""FabricError formatting and rebuilding from wire data."""

from __future__ import annotations

import json

import pytest

from fabric import exception


def test_message_is_formatted_from_fields():
    err = exception.AddressExhausted(pool="net-1", size=254, in_use=254)
    assert err.message == "No free address in pool net-1 (254 addresses, 254 in use)."
    assert err.code == 409
    assert err.fields["pool"] == "net-1"


def test_missing_field_keeps_the_template_and_the_fields():
    err = exception.NotFound(kind="Instance")
    assert "could not be found" in err.message
    assert "'kind': 'Instance'" in err.message


def test_registered_type_is_rebuilt_as_itself():
    original = exception.QuotaExceeded(resource="instances", project="p", requested=1, in_use=10, limit=10)
    wire = json.loads(json.dumps(original.to_dict()))
    rebuilt = exception.rebuild(wire, traceback="tb")
    assert type(rebuilt) is exception.QuotaExceeded
    assert rebuilt.message == original.message
    assert rebuilt.fields == original.fields
    assert rebuilt.code == 413


@pytest.mark.parametrize("type_name", ["ValueError", "os.system", "RemoteError", "", "__import__"])
def test_unregistered_types_arrive_as_remote_error(type_name):
    rebuilt = exception.rebuild({"type": type_name, "message": "boom"}, traceback="Traceback ...")
    assert isinstance(rebuilt, exception.RemoteError)
    assert rebuilt.exc_type == type_name
    assert rebuilt.value == "boom"
    assert rebuilt.traceback == "Traceback ..."


def test_non_json_fields_are_sent_as_text():
    err = exception.Conflict(reason=object())
    assert isinstance(err.to_dict()["fields"]["reason"], str)
