"""The live-update schedule: back off while nothing changes, snap back on a change."""

from __future__ import annotations

from fabric.dashboard import polling


def test_waits_grow_while_nothing_changes_and_stop_at_the_cap():
    waits, current = [], None
    for _ in range(8):
        current = polling.next_interval(current, changed=False)
        waits.append(current)
    assert waits == [3000, 4500, 6750, 10125, 15000, 15000, 15000, 15000]


def test_a_change_snaps_back_to_the_shortest_wait():
    assert polling.next_interval(15000, changed=True) == polling.MIN_INTERVAL_MS
    assert polling.next_interval(6750, changed=True) == polling.MIN_INTERVAL_MS


def test_a_page_cannot_ask_for_less_than_the_minimum():
    # A tampered or broken page sending interval=10 still gets the minimum wait back.
    assert polling.next_interval(10, changed=False) == polling.MIN_INTERVAL_MS
    assert polling.next_interval(polling.parse_interval("nonsense"), changed=False) == polling.MIN_INTERVAL_MS
    assert polling.parse_interval(None) is None and polling.parse_interval("4500") == 4500


def test_fingerprint_changes_exactly_when_a_shown_value_does():
    rows = [{"id": "a", "status": "BUILD"}, {"id": "b", "status": "ACTIVE"}]
    same = [{"status": "BUILD", "id": "a"}, {"id": "b", "status": "ACTIVE"}]
    assert polling.fingerprint(rows) == polling.fingerprint(same)
    assert polling.fingerprint(rows) != polling.fingerprint([{"id": "a", "status": "ACTIVE"}, rows[1]])
