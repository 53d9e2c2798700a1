"""The link's inbound frame parser (fabric.rpc.amqp_frames): registered deliveries and
confirms handled directly, everything else handed to py-amqp unchanged and in order."""

from __future__ import annotations

import struct
import types

import amqp
import pytest
from amqp.exceptions import UnexpectedFrame
from amqp.method_framing import frame_handler
from amqp.serialization import decode_properties_basic

from fabric.rpc.amqp_frames import FrameReader, decode_properties


def frame(frame_type: int, channel: int, payload: bytes, end: bytes = b"\xce") -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + end


def shortstr(value: str) -> bytes:
    return bytes((len(value),)) + value.encode()


def deliver(channel: int, consumer_tag: str, delivery_tag: int, body: bytes, *, redelivered: bool = False,
            chunk: int = 4096, **properties) -> bytes:
    """basic.deliver, its content header and body frames (``chunk`` bytes each), as RabbitMQ sends them."""
    method = (b"\x00\x3c\x00\x3c" + shortstr(consumer_tag) + struct.pack(">QB", delivery_tag, int(redelivered))
              + shortstr("fabric") + shortstr("topic.key"))
    header = struct.pack(">HHQ", 60, 0, len(body)) + amqp.Message(body, **properties)._serialize_properties()
    frames = frame(1, channel, method) + frame(2, channel, header)
    for offset in range(0, len(body), chunk):
        frames += frame(3, channel, body[offset:offset + chunk])
    return frames


def ack(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    return frame(1, channel, b"\x00\x3c\x00\x50" + struct.pack(">QB", delivery_tag, int(multiple)))


class Recorder:
    def __init__(self) -> None:
        self.deliveries: list[tuple] = []
        self.confirms: list[tuple] = []
        self.fallback: list[tuple[int, int, bytes]] = []

    def reader(self) -> FrameReader:
        reader = FrameReader(self.fallback.append)
        reader.deliveries[(2, "ctag-1")] = lambda *args: self.deliveries.append(args)
        reader.confirms[1] = lambda *args: self.confirms.append(args)
        return reader


def feed_in_pieces(reader: FrameReader, data: bytes, size: int) -> None:
    """Give ``data`` as a socket might, ``size`` bytes at a time, keeping what is returned."""
    pending = b""
    for offset in range(0, len(data), size):
        pending = reader.feed(pending + data[offset:offset + size])
    assert pending == b""


@pytest.mark.parametrize("piece", [1, 7, 8, 100, 65536])
def test_a_delivery_arrives_once_whole_however_the_bytes_are_cut(piece):
    recorder = Recorder()
    body = b'{"v":2,"value":"' + b"x" * 3000 + b'"}'
    data = deliver(2, "ctag-1", 7, body, chunk=1000, redelivered=True, reply_to="amq.rabbitmq.reply-to.abc",
                   correlation_id="m-1", application_headers={"x-delivery-count": 2},
                   content_type="application/json")
    feed_in_pieces(recorder.reader(), data + ack(1, 9, True), piece)
    assert recorder.deliveries == [(body, {"content_type": "application/json", "application_headers":
                                           {"x-delivery-count": 2}, "correlation_id": "m-1",
                                           "reply_to": "amq.rabbitmq.reply-to.abc"}, 7, True)]
    assert recorder.confirms == [(9, True)]
    assert recorder.fallback == []


def test_an_empty_body_is_delivered_at_its_header():
    recorder = Recorder()
    recorder.reader().feed(deliver(2, "ctag-1", 1, b"", message_id="m"))
    assert recorder.deliveries == [(b"", {"message_id": "m"}, 1, False)]


def test_other_frames_go_to_py_amqp_unchanged_and_in_order():
    """A delivery to a consumer that registered nothing, a confirm on another channel, a
    basic.nack and a heartbeat: py-amqp's own frame handler gets every frame but the
    heartbeat, in order, and rebuilds the message as it always did."""
    recorder = Recorder()
    seen = []
    connection = types.SimpleNamespace(bytes_recv=0)
    reader = FrameReader(frame_handler(connection, lambda channel, method, args, content: seen.append(
        (channel, method, content.body if content is not None else None))))
    reader.deliveries[(2, "ctag-1")] = lambda *args: recorder.deliveries.append(args)
    nack = frame(1, 1, b"\x00\x3c\x00\x78" + struct.pack(">QB", 4, 0))
    data = (deliver(2, "other", 3, b"elsewhere", chunk=4) + ack(5, 11, False) + frame(8, 0, b"")
            + deliver(2, "ctag-1", 4, b"mine") + nack)
    assert reader.feed(data) == b""
    assert seen == [(2, (60, 60), b"elsewhere"), (5, (60, 80), None), (1, (60, 120), None)]
    assert recorder.deliveries == [(b"mine", {}, 4, False)]


def test_an_incomplete_frame_is_returned_for_later():
    recorder = Recorder()
    reader = recorder.reader()
    data = ack(1, 1, False) + ack(1, 2, False)
    rest = reader.feed(data[:-3])
    assert recorder.confirms == [(1, False)] and rest == data[21:-3]
    assert reader.feed(rest + data[-3:]) == b""
    assert recorder.confirms == [(1, False), (2, False)]


def test_a_frame_without_its_end_octet_breaks_the_connection():
    with pytest.raises(UnexpectedFrame, match="frame_end 0x00"):
        Recorder().reader().feed(frame(1, 1, b"\x00\x3c\x00\x50" + struct.pack(">QB", 1, 0), end=b"\x00"))


@pytest.mark.parametrize("properties", [
    {},
    {"content_type": "application/json", "message_id": "m-1"},
    {"content_type": "text/plain", "message_id": "m-\u00e9"},
    {"content_type": "application/json", "message_id": "m-2", "delivery_mode": 2},
    {"content_type": "application/json", "message_id": "m-3", "correlation_id": "c-3", "reply_to": "reply_abc"},
    {"correlation_id": "", "reply_to": "amq.rabbitmq.reply-to.g1hkAAAA", "message_id": "x" * 255},
    {"content_type": "application/json", "message_id": "m-4", "application_headers": {"x-delivery-count": 2}},
    {"content_type": "application/json", "message_id": "m-5", "timestamp": 1700000000, "priority": 3},
])
def test_properties_decode_as_py_amqp_decodes_them(properties):
    header = struct.pack(">HHQ", 60, 0, 0) + amqp.Message(b"", **properties)._serialize_properties()
    assert decode_properties(header, 12) == decode_properties_basic(header, 12)[0]


def test_a_header_cut_short_gets_py_amqps_verdict():
    whole = struct.pack(">HHQ", 60, 0, 0) + amqp.Message(
        b"", content_type="application/json", delivery_mode=2, message_id="m-1")._serialize_properties()
    for end in range(12, len(whole)):
        cut = whole[:end]
        try:
            expected = decode_properties_basic(cut, 12)[0]
        except struct.error:
            with pytest.raises(struct.error):
                decode_properties(cut, 12)
        else:
            assert decode_properties(cut, 12) == expected
