"""The API worker as the launchers run it: it serves HTTP on eventlet.wsgi and
creates the first admin on an empty database."""

from __future__ import annotations

import json

from eventlet.green.urllib import request

from fabric import config, rpc
from fabric.api.manager import ApiManager
from fabric.api.passwords import verify_password
from fabric.api.versions import COMPUTE_MAX_VERSION
from fabric.db.models import User


def test_manager_serves_and_bootstraps_an_empty_database(sqlite_db, tmp_path, capsys):
    settings = config.Settings().replace(default={"data_dir": str(tmp_path)},
                                         api={"listen": "127.0.0.1", "port": 0},
                                         rpc={"transport_url": "memory://api-manager-test"})
    transport = rpc.get_transport(settings.rpc)
    manager = ApiManager(settings, host="h1", db=sqlite_db, transport=transport)
    try:
        manager.init_host()
        banner = capsys.readouterr().out
        password = banner.split("OS_PASSWORD=")[1].split()[0]
        with sqlite_db.begin() as session:
            admin = session.query(User).filter_by(name="admin").one()
            assert verify_password(password, admin.password_hash)
        url = manager.capabilities()["url"]
        with request.urlopen(f"{url}/compute/v2.1") as resp:
            assert json.loads(resp.read())["version"]["version"] == COMPUTE_MAX_VERSION
            assert resp.headers["x-openstack-request-id"].startswith("req-")
        # A second start on a database with users creates nothing and prints no password.
        manager.cleanup_host()
        manager.init_host()
        assert "OS_PASSWORD=..." in capsys.readouterr().out
    finally:
        manager.cleanup_host()
        transport.cleanup()
