"""The dashboard in-process (webtest) in front of a real API served over HTTP on
127.0.0.1 from a thread (the API harness's app on SQLite with recording worker
clients): the dashboard reaches it only as it would in production, by HTTP."""

from __future__ import annotations

import socketserver
import threading
import wsgiref.simple_server

import pytest
import webtest

from fabric import config
from fabric.dashboard.app import build_app
from tests.fixtures.processes import free_port


class _ThreadingServer(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def api_settings(tmp_path) -> config.Settings:
    """The API's settings with its catalog pointing at the port :func:`live_api` serves on."""
    port = free_port()
    return config.Settings().replace(
        default={"data_dir": str(tmp_path / "data")},
        api={"public_url": f"http://127.0.0.1:{port}", "port": port, "token_ttl": 600})


@pytest.fixture
def live_api(api, api_settings):
    """The API harness served over HTTP; yields the harness (its Identity URL is ``identity_url``)."""
    server = wsgiref.simple_server.make_server("127.0.0.1", api_settings.api.port, api.app.app,
                                               server_class=_ThreadingServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="live-api", daemon=True)
    thread.start()
    api.identity_url = f"{api_settings.api.public_url}/v3"
    yield api
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture
def dashboard(live_api) -> webtest.TestApp:
    """The dashboard app (no one logged in yet) talking to :func:`live_api`."""
    return webtest.TestApp(build_app(live_api.identity_url))


def login(app: webtest.TestApp, user: str = "admin", password: str = "s3cret-admin", project: str = "admin",
          next_path: str | None = None) -> webtest.TestResponse:
    """Log in through the form (with its CSRF token); returns the redirect answer."""
    page = app.get("/dashboard/login" + (f"?next={next_path}" if next_path else ""))
    form = page.forms[0]
    form["user"], form["password"], form["project"] = user, password, project
    return form.submit()


def csrf_of(app: webtest.TestApp, path: str = "/dashboard/overview") -> str:
    """This session's CSRF token, as a page carries it."""
    return app.get(path).html.find("meta", attrs={"name": "csrf-token"})["content"]
