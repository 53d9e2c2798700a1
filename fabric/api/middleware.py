"""Request middleware: a request id and context for every request, token
authentication and the policy check (:mod:`fabric.api.policy`) once the route is known,
and compute's microversion headers."""

from __future__ import annotations

import logging
import time

import falcon

from fabric import context, exception
from fabric.api import errors, input_limits, policy, tokens, versions
from fabric.api.common import ApiDeps

LOG = logging.getLogger("fabric.api.access")

_COMPUTE_VERSION_HEADERS = ("OpenStack-API-Version", "X-OpenStack-Nova-API-Version")


def _requested_compute_version(req: falcon.Request) -> str | None:
    value = req.get_header("OpenStack-API-Version")
    if value:
        parts = value.split()
        if len(parts) == 2 and parts[0].lower() == "compute":
            return parts[1]
        return None
    return req.get_header("X-OpenStack-Nova-API-Version")


class RequestContextMiddleware:
    """Gives each request an id, a context (from its token) and the API's deps, and lets
    it reach its responder only as :data:`fabric.api.policy.TABLE` allows.

    The id goes back as ``x-openstack-request-id`` (and ``x-compute-request-id``
    for compute) and into every log line written while handling the request.
    ``answered`` is the set of (method, route template) the app has responders for (the
    app fills it as routes are added): a method a route does not answer goes on to falcon's
    405 (and OPTIONS to falcon's list of methods), one it answers but the table lacks is
    refused.
    """

    def __init__(self, deps: ApiDeps, answered: set[tuple[str, str]]) -> None:
        self.deps = deps
        self.answered = answered
        self.validated_tokens = tokens.ValidatedTokens()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.monotonic()
        req.context.deps = self.deps
        request_id = context.new_request_id()
        anonymous = context.RequestContext(request_id=request_id)
        req.context.fabric = anonymous
        req.context.token = None
        req.context.reset = anonymous.activate()
        input_limits.check_query(req)
        if errors.api_of(req.path) == "compute":
            legacy = versions.legacy_compute_path(req.path)
            if legacy is not None:  # the v2.0 endpoint: routed as v2.1, whatever version it asks for
                req.path, req.context.compute_version = legacy, (2, 1)
            else:  # what the response is shaped for (fabric.api.compute.microversion)
                req.context.compute_version = versions.parse_compute_version(_requested_compute_version(req))

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource, params: dict) -> None:
        """Authenticate (unless the operation is public) and check the operation's policy."""
        operation = (req.method, req.uri_template)
        if operation not in self.answered:
            return  # falcon answers: 405, or OPTIONS' list of methods
        found = policy.policy_of(*operation)
        if found is None:
            raise policy.unlisted(*operation)
        if found.rule is policy.Rule.PUBLIC:
            return
        self._authenticate(req)
        found.check(req.context.fabric, params)

    def _authenticate(self, req: falcon.Request) -> None:
        """The request's context from its X-Auth-Token; NotAuthenticated without a valid one."""
        request_id = req.context.fabric.request_id
        secret = req.get_header("X-Auth-Token")
        if not secret:
            raise exception.NotAuthenticated(reason="this request needs a token in X-Auth-Token")
        info = self.validated_tokens.validate(self.deps.db, secret)
        req.context.token = info
        ctx = context.RequestContext(request_id=request_id, user_id=info.user_id, project_id=info.project_id,
                                     roles=info.role_names, is_admin=info.is_admin)
        req.context.fabric = ctx
        context.reset(req.context.reset)
        req.context.reset = ctx.activate()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool) -> None:
        ctx = getattr(req.context, "fabric", None)
        if ctx is None:
            return
        resp.set_header("x-openstack-request-id", ctx.request_id)
        if errors.api_of(req.path) == "compute":
            resp.set_header("x-compute-request-id", ctx.request_id)
            served = ".".join(map(str, getattr(req.context, "compute_version", None) or (2, 1)))
            resp.set_header("OpenStack-API-Version", f"compute {served}")
            resp.set_header("X-OpenStack-Nova-API-Version", served)
            resp.append_header("Vary", "OpenStack-API-Version, X-OpenStack-Nova-API-Version")
        elapsed = (time.monotonic() - req.context.started) * 1000
        LOG.info("%s %s -> %s (%.1f ms)", req.method, req.relative_uri, resp.status, elapsed)
        token = getattr(req.context, "reset", None)
        if token is not None:
            context.reset(token)
            req.context.reset = None
