"""Concurrent duplicate creates, on PostgreSQL and MariaDB: exactly one 201, the rest 409.

Each handler checks that the name is free before it inserts; two requests at once can
both pass that check, and the database's unique constraint refuses the later insert.
That refusal must reach the client as 409 (fabric.api.errors), never as a 500.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import pytest
import webtest

CLIENTS = 8


def _race(api, method: str, path: str, body: dict, headers: dict) -> Counter:
    """Send the same create from CLIENTS threads at once; the statuses answered."""
    start = threading.Barrier(CLIENTS)
    statuses: Counter = Counter()
    lock = threading.Lock()

    def send() -> None:
        client = webtest.TestApp(api.app.app)
        start.wait()
        status = getattr(client, method)(path, body, headers=headers, expect_errors=True).status_int
        with lock:
            statuses[status] += 1

    threads = [threading.Thread(target=send) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses


@pytest.mark.parametrize("path, body, created", [
    ("/v3/users", lambda n: {"user": {"name": n, "password": "pw-12345678"}}, 201),
    ("/v3/projects", lambda n: {"project": {"name": n}}, 201),
    ("/v3/roles", lambda n: {"role": {"name": n}}, 201),
    ("/compute/v2.1/flavors", lambda n: {"flavor": {"name": n, "ram": 64, "vcpus": 1, "disk": 1}}, 200),
])
def test_one_create_wins_the_rest_are_told_409(server_api, path, body, created):
    name = f"race-{uuid.uuid4().hex[:8]}"
    headers = {"X-Auth-Token": server_api.admin.token}
    statuses = _race(server_api, "post_json", path, body(name), headers)
    assert statuses[created] == 1, statuses
    assert statuses[409] == CLIENTS - 1, statuses
