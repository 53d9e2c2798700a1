"""``fabric-manage service list|disable|enable`` against a real registry."""

from __future__ import annotations

import datetime

import pytest
import sqlalchemy as sa

from fabric import servicegroup
from fabric.cmd import manage
from fabric.db.models import Service
from fabric.db.types import utcnow


@pytest.fixture
def registry(sqlite_db, monkeypatch):
    monkeypatch.setenv("FABRIC_DATABASE_URL", sqlite_db.url.render_as_string(hide_password=False))
    monkeypatch.setenv("FABRIC_SERVICE_SERVICE_DOWN_TIME", "20")
    monkeypatch.delenv("FABRIC_CONFIG", raising=False)
    for host in ("h1", "h2"):
        servicegroup.register(sqlite_db, host=host, binary="fabric-compute", topic="compute",
                              version="0.1.0", address="", capabilities={})
    servicegroup.register(sqlite_db, host="h1", binary="fabric-ipam", topic="ipam",
                          version="0.1.0", address="", capabilities={})
    with sqlite_db.begin() as session:
        session.execute(sa.update(Service).where(Service.host == "h2")
                        .values(last_heartbeat=utcnow() - datetime.timedelta(seconds=45)))
    return sqlite_db


def run(capsys, *argv):
    status = manage.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def rows(out):
    lines = out.splitlines()
    return {tuple(line.split()[:2]): line.split() for line in lines[2:]}


def test_list_shows_up_down_and_heartbeat(registry, capsys):
    status, out, _ = run(capsys, "service", "list")
    assert status == 0
    header = out.splitlines()[0].split("  ")
    assert [h.strip() for h in header if h.strip()] == [
        "Host", "Binary", "Topic", "State", "Last heartbeat (UTC)", "Status", "Disabled reason"]
    table = rows(out)
    assert table[("h1", "fabric-compute")][2:4] == ["compute", "up"]
    assert table[("h2", "fabric-compute")][2:4] == ["compute", "down"]
    assert table[("h1", "fabric-ipam")][3] == "up"
    assert all(row[6] == "enabled" for row in table.values())


def test_list_filters(registry, capsys):
    _, out, _ = run(capsys, "service", "list", "--topic", "ipam")
    assert set(rows(out)) == {("h1", "fabric-ipam")}
    _, out, _ = run(capsys, "service", "list", "--host", "h2")
    assert set(rows(out)) == {("h2", "fabric-compute")}


def test_disable_then_enable(registry, capsys):
    status, out, _ = run(capsys, "service", "disable", "h1", "fabric-compute", "--reason", "new disks")
    assert status == 0 and out == "Service fabric-compute on host h1 is disabled (new disks).\n"
    _, out, _ = run(capsys, "service", "list")
    line = " ".join(rows(out)[("h1", "fabric-compute")])
    assert line.endswith("disabled new disks")
    assert servicegroup.get_service(registry, "h1", "fabric-compute").disabled

    status, out, _ = run(capsys, "service", "enable", "h1", "fabric-compute")
    assert status == 0 and out == "Service fabric-compute on host h1 is enabled.\n"
    row = servicegroup.get_service(registry, "h1", "fabric-compute")
    assert not row.disabled and row.disabled_reason is None


def test_disable_unknown_service_is_one_clear_line(registry, capsys):
    status, out, err = run(capsys, "service", "disable", "h9", "fabric-compute")
    assert status == 2 and out == ""
    assert err.strip().endswith("error: Service fabric-compute on host h9 could not be found.")
    assert len(err.strip().splitlines()) == 1


def test_empty_registry(sqlite_db, monkeypatch, capsys):
    monkeypatch.setenv("FABRIC_DATABASE_URL", sqlite_db.url.render_as_string(hide_password=False))
    status, out, _ = run(capsys, "service", "list")
    assert status == 0 and out == "No services are registered.\n"


def test_a_database_without_schema_is_one_clear_line(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    monkeypatch.setenv("FABRIC_DATABASE_URL", url)
    status, out, err = run(capsys, "service", "list")
    assert status == 2 and out == ""
    assert err.strip().endswith(f"error: Database {url} has no fabric schema yet: "
                                "run `fabric-manage db sync` first.")
