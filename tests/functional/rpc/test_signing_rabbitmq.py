"""Signed messages on a real RabbitMQ (the memory:// twin is tests/unit/rpc/test_signing.py):
forged, unsigned, stale and wrong-role messages to a real IPAM manager are dead-lettered
to ``ipam.dead`` with their reason, counted, and change nothing; rotation holds."""

from __future__ import annotations

import pytest

from fabric.rpc import signing
from tests.fixtures import signing as cases
from tests.fixtures.rpc import wait_for
from tests.functional.rpc.test_rpc_rabbitmq import take_dead_letters

pytestmark = pytest.mark.functional


@pytest.fixture
def ipam(rabbit_vhost, tmp_path, sqlite_db):
    signing.generate(tmp_path / "keys")

    def wait(condition, what="condition"):
        wait_for(condition, timeout=15, what=what)

    signed = cases.SignedIpam(rabbit_vhost, tmp_path / "keys", sqlite_db,
                              lambda queue: take_dead_letters(rabbit_vhost, queue), wait)
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
