"""Build the WSGI application.

Falcon was chosen as the toolkit: a maintained, dependency-free WSGI
framework with explicit routing (URI templates and per-method responders),
error handlers by exception class and request/response middleware — the three
things this API needs — and no global state or plug-in loading, so one app
per ``Settings`` is easy to build in tests. It runs unchanged on
``eventlet.wsgi``.
"""

from __future__ import annotations

import functools
import json

import falcon

from fabric import config
from fabric.api import (
    admin,
    ec2_credentials,
    errors,
    floating_ips,
    identity,
    identity_admin,
    identity_app_creds,
    identity_catalog,
    identity_credentials,
    identity_domain_config,
    identity_endpoint_groups,
    identity_grants,
    identity_groups,
    identity_implied,
    identity_inherited,
    identity_policies,
    identity_projects,
    identity_regions,
    image,
    network,
    openapi,
    ports,
    routers,
    security_groups,
    versions,
)
from fabric.api.block_storage import register as register_block_storage
from fabric.api.clients import Clients
from fabric.api.common import ApiDeps
from fabric.api.compute import register as register_compute
from fabric.api.middleware import RequestContextMiddleware
from fabric.api.request_metrics import RequestMetricsMiddleware
from fabric.db import Database
from fabric.rpc.outbox import Outbox


class FabricApp(falcon.App):
    """The Falcon app, carrying its :class:`ApiDeps` as ``deps`` and, as ``operations``, every
    (HTTP method, route template) it has a responder for (what :mod:`fabric.api.policy`
    must cover)."""

    deps: ApiDeps

    def __init__(self, deps: ApiDeps) -> None:
        self.operations: set[tuple[str, str]] = set()
        super().__init__(middleware=[RequestMetricsMiddleware(), RequestContextMiddleware(deps, self.operations)])
        self.deps = deps

    def add_route(self, uri_template: str, resource: object, **kwargs) -> None:
        super().add_route(uri_template, resource, **kwargs)
        responders = falcon.routing.map_http_methods(resource, suffix=kwargs.get("suffix"))
        self.operations.update((method, uri_template) for method in responders)


def build_app(settings: config.Settings, db: Database, clients: Clients, *,
              bound_port: int | None = None) -> FabricApp:
    """The API as a WSGI callable, talking to ``db`` and the workers through ``clients``."""
    deps = ApiDeps(settings=settings, db=db, clients=clients, bound_port=bound_port,
                   outbox=Outbox(db, "api", clients, host=settings.default.host))
    app = FabricApp(deps)
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.auto_parse_qs_csv = False
    app.resp_options.secure_cookies_by_default = False
    # Compact, no circularity check: listings of a thousand servers are mostly encoding time.
    json_handler = falcon.media.JSONHandler(dumps=functools.partial(json.dumps, separators=(",", ":"),
                                                                    check_circular=False))
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = json_handler
    errors.install(app)
    versions.register(app)
    identity.register(app)
    identity_admin.register(app)
    identity_groups.register(app)
    identity_grants.register(app)
    identity_catalog.register(app)
    identity_regions.register(app)
    identity_implied.register(app)
    identity_inherited.register(app)
    identity_endpoint_groups.register(app)
    identity_projects.register(app)
    identity_policies.register(app)
    identity_domain_config.register(app)
    identity_credentials.register(app)
    identity_app_creds.register(app)
    ec2_credentials.register(app)
    register_compute(app)
    register_block_storage(app)
    image.register(app)
    network.register(app)
    ports.register(app)
    routers.register(app)
    security_groups.register(app, network.PREFIX)
    floating_ips.register(app)
    admin.register(app)
    openapi.register(app)
    return app
