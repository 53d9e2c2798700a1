"""Signed messages on memory:// (the same scenarios run on RabbitMQ in
tests/functional/rpc/test_signing_rabbitmq.py): forged, unsigned, stale and wrong-role
messages are dead-lettered with their reason, counted, and change nothing."""

from __future__ import annotations

import secrets

import pytest

from fabric.rpc import envelope, signing
from fabric.rpc.client import ReplyRouter, _PendingCall
from fabric.rpc.deferred import Deferred
from fabric.rpc.target import Target
from tests.fixtures import signing as cases
from tests.fixtures.rpc import wait_for
from tests.unit.rpc.test_rpc_memory import dead_letters


@pytest.fixture
def key_dir(tmp_path):
    signing.generate(tmp_path / "keys")
    return tmp_path / "keys"


@pytest.fixture
def ipam(key_dir, sqlite_db):
    url = f"memory://signing-{secrets.token_hex(4)}"
    signed = cases.SignedIpam(url, key_dir, sqlite_db, lambda q: dead_letters(signed.server_transport, q),
                              wait_for)
    yield signed
    signed.close()


def test_unsigned_and_forged_messages_are_refused(ipam):
    cases.unsigned_and_forged_are_refused(ipam)


def test_a_compute_key_cannot_call_what_compute_never_asks(ipam):
    cases.compute_key_cannot_configure_ipam(ipam)


def test_a_stale_replay_is_refused(ipam):
    cases.stale_replay_is_refused(ipam)


def test_rotation_accepts_the_old_key_until_it_is_retired(ipam):
    cases.rotation_keeps_the_old_key_until_retired(ipam)


# --------------------------------------------------------------------------- the keyring itself
def test_a_message_signed_for_another_role_is_refused(key_dir):
    api = signing.load(key_dir, ["api"])
    wire = api.sign(signing.REQUEST, b"{}", "api", "compute")
    ipam = signing.load(key_dir, ["ipam"])
    with pytest.raises(signing.Refused) as refused:
        ipam.check(signing.REQUEST, wire, "ipam")
    assert refused.value.code == "wrong-destination"
    # A reply cannot pass for a request (the kind is signed too).
    compute = signing.load(key_dir, ["compute"])
    assert compute.check(signing.REQUEST, wire, "compute")[0] == "api"
    with pytest.raises(signing.Refused, match="forged"):
        compute.check(signing.REPLY, wire, "compute")


def test_the_signature_is_rfc_2104_hmac_sha256_and_a_pair_once_checked_is_held_to_its_role(key_dir):
    """Workers of the previous release compute the MAC with Python's ``hmac``: the wire
    must be byte for byte what it checks. A keyring remembers the pair keys it checked
    with; a later message of that pair addressed elsewhere is still refused."""
    import hashlib
    import hmac

    api = signing.load(key_dir, ["api"])
    body = b'{"v":1,"x":"' + b"y" * 3000 + b'"}'
    wire = api.sign(signing.REQUEST, body, "api", "compute")
    header, _, rest = wire.partition(b"\n")
    assert rest == body
    line, mac = header.rsplit(b" ", 1)
    kid = header.split(b" ")[2].decode()
    key = signing.pair_key(next(m.secret for m in api.masters["api"] if m.kid == kid), "compute")
    assert mac == hmac.new(key, signing.REQUEST + line + b"\n" + body, hashlib.sha256).hexdigest().encode()
    compute = signing.load(key_dir, ["compute"])
    assert compute.check(signing.REQUEST, wire, "compute") == ("api", "compute", kid, body)
    with pytest.raises(signing.Refused) as refused:
        compute.check(signing.REQUEST, wire, "network")
    assert refused.value.code == "wrong-destination"
    tampered = wire[:-1] + b"!"
    with pytest.raises(signing.Refused, match="forged"):
        compute.check(signing.REQUEST, tampered, "compute")


def test_a_host_holds_only_its_roles_keys(key_dir):
    compute = signing.load(key_dir, ["compute"])
    assert compute.held_roles == ("compute",)
    with pytest.raises(signing.SigningError, match="no key for role 'api'"):
        compute.sign(signing.REQUEST, b"{}", "api", "ipam")
    # It checks what api sends to compute, but holds nothing that signs api>ipam.
    with pytest.raises(signing.SigningError, match="no key .* from api to ipam"):
        compute.sign(signing.REQUEST, b"{}", "api", "ipam", kid=signing.load(key_dir, ["api"]).masters["api"][0].kid)


def test_key_files_others_can_read_are_refused(key_dir):
    (key_dir / "api.key").chmod(0o644)
    with pytest.raises(signing.SigningError, match="readable by others"):
        signing.load(key_dir, ["api"])


def test_missing_role_key_names_the_file(tmp_path):
    with pytest.raises(signing.SigningError, match="compute.key is missing"):
        signing.load(tmp_path, ["compute"])


def test_a_forged_reply_is_dropped_and_the_call_keeps_waiting(key_dir):
    class Bare:
        on_reply = on_returned = on_connection_lost = None
        reply_router = None
        keyring = signing.load(key_dir, ["api"])

    transport = Bare()
    router = ReplyRouter.of(transport)
    deferred = Deferred("test call")
    router.pending["m1"] = _PendingCall(deferred, Target("ipam"), "lookup", 5, False, lambda: None, "api")
    reply = envelope.encode_reply("m1", result="forged")
    network = signing.load(key_dir, ["network"])  # holds K(api>network), not K(api>ipam)
    router.on_reply(network.sign(signing.REPLY, reply, "api", "network",
                                 kid=transport.keyring.masters["api"][0].kid), "m1")
    assert router.refused["wrong-role"] == 1 and not deferred.done
    router.on_reply(reply, "m1")
    assert router.refused["unsigned"] == 1 and not deferred.done
    ipam = signing.load(key_dir, ["ipam"])
    router.on_reply(ipam.sign(signing.REPLY, reply, "api", "ipam", kid=transport.keyring.masters["api"][0].kid),
                    "m1")
    assert deferred.wait(1) == "forged"  # the genuine pair's reply is taken


def test_a_process_with_every_key_signs_as_a_role_the_callee_accepts(key_dir):
    import fabric.ipam.manager  # noqa: F401 - registers who may call IPAM
    import fabric.network.manager  # noqa: F401

    everything = signing.load(key_dir)
    assert everything.signing_role("network", "plug") == "compute"  # api and scheduler may not plug
    assert everything.signing_role("ipam", "configure_datacenter") == "api"
    assert everything.signing_role("network", "host_joined") == "ipam"
    with signing.acting_as("scheduler"):
        assert everything.signing_role("ipam", "allocate") == "scheduler"
