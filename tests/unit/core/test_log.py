"""Every log line carries the request id of the context it was written in."""

from __future__ import annotations

import logging

from fabric import context, log


def test_log_lines_carry_the_current_request_id(tmp_path):
    path = tmp_path / "fabric.log"
    log.setup("INFO", str(path))
    logger = logging.getLogger("fabric.test")
    logger.info("outside")
    token = context.RequestContext(request_id="req-abc").activate()
    try:
        logger.info("inside")
    finally:
        context.reset(token)
    for handler in logging.getLogger().handlers:
        handler.flush()
    lines = path.read_text().splitlines()
    assert "[-] outside" in lines[0]
    assert "[req-abc] inside" in lines[1]
    log.setup("WARNING")


def test_remove_takes_the_handler_off_and_closes_it(tmp_path):
    log.setup("INFO", str(tmp_path / "fabric.log"))
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_fabric", False)]
    log.remove()
    assert len(ours) == 1 and ours[0] not in logging.getLogger().handlers
    assert ours[0].stream is None  # the file is closed, not left open until exit
    log.remove()  # without a handler: nothing to do


def test_context_round_trips_through_wire_data():
    ctx = context.RequestContext(user_id="u", project_id="p", roles=("member",))
    again = context.RequestContext.from_dict(ctx.to_dict())
    assert again == ctx
