"""A link's reader hands a delivery's green thread the turn itself (fabric.rpc.amqp_link.wake_soon):
the woken green thread runs when the reader next waits, and the reader is still resumed by its
socket, as when it switched to the hub."""

from __future__ import annotations

import socket

import eventlet
import greenlet
from eventlet import hubs

from fabric.rpc import amqp_link


def test_a_waiting_reader_runs_its_hand_off_and_is_resumed_by_its_socket():
    ours, broker = socket.socketpair()
    events = []

    def handler() -> None:
        events.append("handler ran")
        broker.send(b"x")  # the reader's socket becomes readable while the handler runs
        hubs.get_hub().switch()  # then it parks, as a server's handler green thread does

    worker = greenlet.greenlet(handler, parent=hubs.get_hub().greenlet)

    def reader() -> None:
        waiter = amqp_link._ReadableWaiter(ours.fileno(), None)
        try:
            waiter.wait(worker.switch)
            events.append("reader resumed")
        finally:
            waiter.close()

    eventlet.spawn(reader).wait()
    assert events == ["handler ran", "reader resumed"]
    ours.close()
    broker.close()


def test_wake_soon_on_a_reader_is_held_for_its_next_wait_and_elsewhere_goes_to_the_hub():
    class Reader:
        _hand_off = None

    link = Reader()
    calls = []

    def on_the_reader() -> None:
        me = greenlet.getcurrent()
        amqp_link._READERS[me] = link
        try:
            amqp_link.wake_soon(lambda: calls.append("first"))
            amqp_link.wake_soon(lambda: calls.append("second"))  # one hand-off: the next goes to the hub
        finally:
            del amqp_link._READERS[me]

    eventlet.spawn(on_the_reader).wait()
    eventlet.sleep(0)
    assert calls == ["second"]
    link._hand_off()
    assert calls == ["second", "first"]
    amqp_link.wake_soon(lambda: calls.append("elsewhere"))
    assert calls == ["second", "first"]  # not at once: on the hub's next turn
    eventlet.sleep(0)
    assert calls == ["second", "first", "elsewhere"]
