"""fabric's fast Basic.Publish encoder writes exactly the bytes py-amqp's encoder writes."""

from __future__ import annotations

import amqp
import pytest
from amqp import spec
from amqp.method_framing import frame_writer
from amqp.serialization import dumps

from fabric.rpc.amqp import _encode_publish


class _Capture:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data) -> None:
        self.written.append(bytes(data))


class _Connection:
    def __init__(self, frame_max: int) -> None:
        self.frame_max = frame_max
        self.bytes_sent = 0


def py_amqp_bytes(channel_id, frame_max, exchange, routing_key, mandatory, body, properties):
    capture = _Capture()
    write = frame_writer(_Connection(frame_max), capture)
    args = dumps("Bssbb", (0, exchange, routing_key, mandatory, False))
    write(1, channel_id, spec.Basic.Publish, args, amqp.Message(body, **properties))
    return b"".join(capture.written)


@pytest.mark.parametrize("properties", [
    {"content_type": "application/json", "message_id": "m-1"},
    {"content_type": "application/json", "message_id": "m-2", "delivery_mode": 2},
    {"content_type": "application/json", "message_id": "m-3", "correlation_id": "m-3",
     "reply_to": "amq.rabbitmq.reply-to.g1hkAAAAAAAAAAAAAAAAAAAAAAAAA"},
    {"content_type": "application/json", "message_id": "m-4", "delivery_mode": 2,
     "correlation_id": "c", "reply_to": "reply_abc"},
])
@pytest.mark.parametrize(("body", "frame_max"), [
    (b"", 131072), (b'{"v":1}', 131072), (b"x" * 5000, 4096), (b"\xc3\xa9" * 3000, 4096),
])
@pytest.mark.parametrize("mandatory", [True, False])
def test_fast_encoder_matches_py_amqp(properties, body, frame_max, mandatory):
    ours = _encode_publish(2, frame_max, "fabric", "compute.host-1", mandatory, body, properties)
    theirs = py_amqp_bytes(2, frame_max, "fabric", "compute.host-1", mandatory, body, properties)
    assert ours == theirs


def test_overlong_short_string_is_refused():
    with pytest.raises(ValueError, match="at most 255 bytes"):
        _encode_publish(1, 131072, "fabric", "x" * 300, True, b"{}",
                        {"content_type": "application/json", "message_id": "m"})
