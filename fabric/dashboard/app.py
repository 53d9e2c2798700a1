"""The dashboard as a WSGI app: the middleware, error handlers and routes.

A small hand-written script (``static/dashboard.js``) adds live updates,
upload progress and confirm dialogs on top of server-rendered pages, and every
page works without it except the image upload. The app keeps no state but its
sessions and talks to the cloud only through :mod:`fabric.dashboard.client`.
"""

from __future__ import annotations

import falcon

from fabric.dashboard import pages_admin, pages_resources, pages_security, pages_servers, pages_tenant
from fabric.dashboard.client import ApiError, TokenExpired
from fabric.dashboard.web import (
    HERE,
    PREFIX,
    CsrfRefused,
    Dashboard,
    SessionMiddleware,
    handle_api_error,
    handle_csrf,
    handle_expired,
    handle_http_error,
    handle_unexpected,
    redirect,
)


class Static:
    """The dashboard's own CSS and JavaScript, from the package (cacheable for an hour)."""

    public = True
    TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        path = HERE / "static" / name
        if "/" in name or path.suffix not in self.TYPES or not path.is_file():
            raise falcon.HTTPNotFound(description=f"no static file {name!r}")
        resp.content_type = self.TYPES[path.suffix]
        resp.set_header("Cache-Control", "max-age=3600")
        resp.data = path.read_bytes()


class Root:
    public = True

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        redirect(f"{PREFIX}/overview")


class DashboardApp(falcon.App):
    """The Falcon app, carrying its :class:`Dashboard` as ``dashboard``."""

    dashboard: Dashboard


def build_app(identity_url: str, *, secure_cookies: bool = False) -> DashboardApp:
    """The dashboard, talking to the API whose Identity v3 endpoint is ``identity_url``."""
    dash = Dashboard(identity_url=identity_url.rstrip("/"), secure_cookies=secure_cookies)
    app = DashboardApp(middleware=[SessionMiddleware(dash)])
    app.req_options.strip_url_path_trailing_slash = True
    app.resp_options.secure_cookies_by_default = False
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(ApiError, handle_api_error)
    app.add_error_handler(TokenExpired, handle_expired)
    app.add_error_handler(CsrfRefused, handle_csrf)
    app.add_route(PREFIX, Root())
    app.add_route(f"{PREFIX}/static/{{name}}", Static())
    for module in (pages_tenant, pages_servers, pages_resources, pages_security, pages_admin):
        module.register(app, PREFIX)
    app.dashboard = dash
    return app
