"""Counts and times every API request for Prometheus, labelled by route template.

The label is the route's URI template (``/compute/v2.1/servers/{server_id}``),
never the path, so the number of series stays bounded by the routes the API
has; a request no route matched is counted as ``unrouted``.
"""

from __future__ import annotations

import time

import falcon

from fabric import metrics


class RequestMetricsMiddleware:
    """Observes ``fabric_api_requests_total`` and ``fabric_api_request_duration_seconds``."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.metrics_started = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool) -> None:
        started = getattr(req.context, "metrics_started", None)
        if started is None:
            return
        route = req.uri_template or "unrouted"
        metrics.API_REQUESTS.labels(route, req.method, str(resp.status_code)).inc()
        metrics.API_REQUEST_SECONDS.labels(route, req.method).observe(time.perf_counter() - started)
