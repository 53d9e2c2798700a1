"""Several brokers in one transport_url, and the order a link tries them in."""

from __future__ import annotations

import logging
import re
import socket

import eventlet
import pytest

from fabric.exception import Invalid
from fabric.rpc.amqp_link import Link, broker_urls


@pytest.mark.parametrize("url, expected", [
    ("amqp://u:p@h1:5672/v", ["amqp://u:p@h1:5672/v"]),
    ("pyamqp://u:p@h1/", ["amqp://u:p@h1/"]),
    # kombu's failover list
    ("amqp://u:p@h1:5672/v; amqp://w:q@h2:5673/v", ["amqp://u:p@h1:5672/v", "amqp://w:q@h2:5673/v"]),
    # oslo.messaging's host list: credentials carry over to the hosts that name none
    ("amqp://u:p@h1:5672,h2:5673,w:q@h3/v",
     ["amqp://u:p@h1:5672/v", "amqp://u:p@h2:5673/v", "amqp://w:q@h3/v"]),
    ("amqp://h1,h2", ["amqp://h1", "amqp://h2"]),
])
def test_broker_urls_accepts_kombu_and_oslo_lists(url, expected):
    assert broker_urls(url) == expected


@pytest.mark.parametrize("url, named", [
    ("amqp://u:p@h1/v;memory://x", "memory://x"),
    ("redis://h1", "redis://h1"),
    ("amqp://u:p@h1,,h3/v", "amqp://u:"),
    (" ; ", "names no broker"),
])
def test_broker_urls_names_the_bad_part(url, named):
    with pytest.raises(Invalid) as err:
        broker_urls(url)
    assert named in err.value.message
    assert ":p@" not in err.value.message  # passwords stay out of the error


def closed_ports(n: int) -> list[int]:
    ports = []
    for _ in range(n):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    return ports


def test_a_link_tries_each_broker_in_turn_and_backs_off_only_after_a_full_round(caplog):
    first, second = closed_ports(2)
    caplog.set_level(logging.WARNING, logger="fabric.rpc.amqp_link")
    link = Link([f"amqp://guest:guest@127.0.0.1:{first}/", f"amqp://guest:guest@127.0.0.1:{second}/"],
                0, "test link", lambda raw: None, lambda error: None)
    try:
        assert not link.wait_up(0.5)
    finally:
        link.close()
    attempts = [(int(m.group(1)), m.group(2)) for r in caplog.records
                if (m := re.search(r"to 127\.0\.0\.1:(\d+)/ .*; (trying the next|retrying in [\d.]+s)",
                                   r.getMessage()))]
    assert len(attempts) >= 4, caplog.text
    # Round-robin in the listed order; a pause (doubling) only after both have failed.
    assert [port for port, _ in attempts[:4]] == [first, second, first, second]
    assert [what for _, what in attempts[:4]] == ["trying the next", "retrying in 0.05s",
                                                  "trying the next", "retrying in 0.10s"]


def test_shuffle_spreads_over_the_brokers(caplog):
    ports = closed_ports(3)
    caplog.set_level(logging.WARNING, logger="fabric.rpc.amqp_link")
    link = Link([f"amqp://127.0.0.1:{port}/" for port in ports], 0, "test link",
                lambda raw: None, lambda error: None, failover_strategy="shuffle")
    try:
        eventlet.sleep(0.5)
    finally:
        link.close()
    tried = {int(m.group(1)) for r in caplog.records
             if (m := re.search(r"to 127\.0\.0\.1:(\d+)/", r.getMessage()))}
    assert tried == set(ports), caplog.text


def test_an_unknown_failover_strategy_is_refused():
    with pytest.raises(ValueError, match="round-robin, shuffle"):
        Link(["amqp://h1/"], 0, "test link", lambda raw: None, lambda error: None, failover_strategy="random")
