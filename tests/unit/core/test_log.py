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


def test_remove_takes_the_handler_off_and_closes_it(tmp_path):
    log.setup("INFO", str(tmp_path / "fabric.log"))
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_fabric", False)]
    log.remove()
    assert len(ours) == 1 and ours[0] not in logging.getLogger().handlers
    assert ours[0].stream is None  # the file is closed, not left open until exit
    log.remove()  # without a handler: nothing to do


def test_remove_gives_back_the_levels_setup_changed(tmp_path):
    root, kombu = logging.getLogger(), logging.getLogger("kombu")
    before = root.level, kombu.level
    root.setLevel(logging.ERROR)
    kombu.setLevel(logging.NOTSET)
    try:
        log.setup("DEBUG")
        log.setup("INFO", str(tmp_path / "fabric.log"))  # still the levels from before the first call
        assert (root.level, kombu.level) == (logging.INFO, logging.WARNING)
        log.remove()
        assert (root.level, kombu.level) == (logging.ERROR, logging.NOTSET)
        root.setLevel(logging.CRITICAL)
        log.remove()  # after remove, or without setup: nothing to give back
        assert root.level == logging.CRITICAL
    finally:
        root.setLevel(before[0])
        kombu.setLevel(before[1])


#: The root logger's level when the test below started, for the test after it.
_root_level_found: list[int] = []


def test_a_test_that_sets_a_level_with_caplog_then_calls_setup(caplog):
    """As a test of a launcher does: caplog first, then the launcher's ``main`` sets up logging.
    The next test checks that the level from before this one is back."""
    _root_level_found.append(logging.getLogger().level)
    caplog.set_level(logging.INFO)
    log.setup("DEBUG")


def test_leaves_the_root_level_it_found():
    """Runs after the test above: file order (``-n 0``, or one worker per module under
    ``tools/test``'s ``--dist loadgroup``); alone (``-k``), it has nothing to compare."""
    assert logging.getLogger().level == (_root_level_found or [logging.getLogger().level])[-1]


def test_context_round_trips_through_wire_data():
    ctx = context.RequestContext(user_id="u", project_id="p", roles=("member",))
    again = context.RequestContext.from_dict(ctx.to_dict())
    assert again == ctx
