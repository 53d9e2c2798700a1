"""What every dashboard page shares: sessions and CSRF (the middleware), the
templates, form fields, flash messages, redirects, and the error pages.

Pages are rendered on the server with Jinja2, autoescaping every value (a
server named ``<script>`` shows as text); API errors become readable
messages, anything else a short apology with the details in the log.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import falcon
import jinja2

from fabric.dashboard import sessions
from fabric.dashboard.client import ApiError, TokenExpired

LOG = logging.getLogger(__name__)

PREFIX = "/dashboard"
HERE = Path(__file__).parent

#: Largest form body read (the image file goes by a streamed PUT instead).
MAX_FORM_BYTES = 256 * 1024

#: What pages may load: only the dashboard's own files, no inline script.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


class CsrfRefused(Exception):
    """A state-changing request came without this session's CSRF token (or from another origin)."""


@dataclasses.dataclass
class Dashboard:
    """What every page needs: the API's Identity endpoint, the sessions, the templates."""

    identity_url: str
    secure_cookies: bool = False
    store: sessions.SessionStore = dataclasses.field(default_factory=sessions.SessionStore)
    templates: jinja2.Environment = dataclasses.field(default_factory=lambda: templates_environment())


def templates_environment() -> jinja2.Environment:
    """Jinja2 with autoescaping on for every template, and undefined names failing loudly."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["percent"] = percent
    env.filters["mib"] = lambda mb: f"{mb / 1024:.1f} GiB" if mb and mb >= 1024 else f"{mb or 0} MiB"
    return env


def percent(used: float | None, total: float | None) -> int:
    """``used`` of ``total`` as a whole percentage for a usage bar (0 when unlimited or unknown)."""
    if not total or total < 0 or used is None:
        return 0
    return max(0, min(100, round(100 * used / total)))


def dashboard(req: falcon.Request) -> Dashboard:
    return req.context.dashboard


def session(req: falcon.Request) -> sessions.Session:
    return req.context.session


def form(req: falcon.Request) -> dict[str, list[str]]:
    """The urlencoded form body (read once, at most MAX_FORM_BYTES)."""
    return req.context.form


def field(req: falcon.Request, name: str, default: str = "") -> str:
    values = form(req).get(name)
    return values[0].strip() if values else default


def safe_next(target: str | None) -> str:
    """Where to go after login: a path inside the dashboard, never another site."""
    if not target or not target.startswith(PREFIX + "/") or target.startswith("//") or "\\" in target:
        return f"{PREFIX}/overview"
    return target


def redirect(to: str) -> None:
    raise falcon.HTTPSeeOther(to)


def flash(req: falcon.Request, message: str, kind: str = "info") -> None:
    """A message shown once on the next page this session renders."""
    session(req).cache.setdefault("flash", (0.0, []))[1].append((kind, message))


def render(req: falcon.Request, resp: falcon.Response, template: str, status: int = 200, **values: Any) -> None:
    current = session(req)
    messages = current.cache.pop("flash", (0.0, []))[1]
    resp.status = status
    resp.content_type = falcon.MEDIA_HTML
    resp.text = dashboard(req).templates.get_template(template).render(
        session=current, csrf=current.csrf, path=req.path, prefix=PREFIX, messages=messages, **values)


def wants_json(req: falcon.Request) -> bool:
    return req.path.endswith(".json") or req.get_header("X-Requested-With") == "fetch"


class SessionMiddleware:
    """Finds the session, refuses state changes without its CSRF token, and sends
    users who are not logged in to the login page."""

    def __init__(self, dash: Dashboard) -> None:
        self.dash = dash

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()
        req.context.dashboard = self.dash
        req.context.form = {}
        if req.path.startswith(f"{PREFIX}/static/") or not (req.path + "/").startswith(PREFIX + "/"):
            # Files (and what the browser asks by itself, like /favicon.ico) need no session:
            # a throwaway one, never stored nor sent as a cookie (it would replace the real one).
            req.context.session, req.context.new_session = sessions.Session(id="", csrf="", expires=0), False
            return
        current = self.dash.store.get(req.cookies.get(sessions.COOKIE))
        req.context.new_session = current is None
        req.context.session = current or self.dash.store.new()
        req.context.form = {}
        if req.method in ("GET", "HEAD"):
            return
        if (req.content_type or "").startswith("application/x-www-form-urlencoded"):
            raw = req.bounded_stream.read(MAX_FORM_BYTES + 1)
            if len(raw) > MAX_FORM_BYTES:
                raise falcon.HTTPContentTooLarge(description="the form is too large")
            req.context.form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        # A browser names the page's origin on cross-site requests: it must be this host.
        origin = req.get_header("Origin")
        if origin and urlsplit(origin).netloc != (req.get_header("Host") or ""):
            raise CsrfRefused()
        sent = req.get_header("X-CSRF-Token") or (req.context.form.get("csrf_token") or [None])[0]
        if not sessions.csrf_ok(req.context.session, sent):
            raise CsrfRefused()

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict) -> None:
        if resource is None or getattr(resource, "public", False):
            return
        current = req.context.session
        if not current.logged_in:
            raise TokenExpired("log in to see this page")
        if getattr(resource, "admin_only", False) and not current.is_admin:
            raise falcon.HTTPForbidden(description="this page is for operators (the admin role)")

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool) -> None:
        for name, value in SECURITY_HEADERS.items():
            resp.set_header(name, value)
        # The page's own time (API calls and rendering), for browsers' timing panels and the benchmark.
        resp.set_header("Server-Timing", f"app;dur={(time.perf_counter() - req.context.started) * 1000:.1f}")
        if not req.path.startswith(f"{PREFIX}/static/"):
            resp.set_header("Cache-Control", "no-store")
        current = getattr(req.context, "session", None)
        if current is not None and (req.context.new_session or getattr(req.context, "rotated", False)):
            resp.set_cookie(sessions.COOKIE, current.id, **sessions.cookie_attributes(self.dash.secure_cookies))


def _login_url(req: falcon.Request) -> str:
    target = req.relative_uri if req.method == "GET" and not wants_json(req) else \
        urlsplit(req.get_header("Referer") or "").path
    return f"{PREFIX}/login?next={quote(safe_next(target), safe='/')}"


def handle_expired(req: falcon.Request, resp: falcon.Response, ex: TokenExpired, params: dict) -> None:
    current = session(req)
    if current.logged_in:
        current.token = None
        flash(req, "Your session has expired: log in again.", "error")
    if wants_json(req):
        resp.status = falcon.HTTP_401
        resp.media = {"login": _login_url(req)}
        return
    resp.status = falcon.HTTP_303
    resp.location = _login_url(req)


def handle_api_error(req: falcon.Request, resp: falcon.Response, ex: ApiError, params: dict) -> None:
    status = ex.status if 400 <= ex.status < 500 else 502
    if wants_json(req):
        resp.status = status
        resp.media = {"error": ex.message}
        return
    render(req, resp, "error.html", status=status, title="The cloud refused that", message=ex.message)


def handle_csrf(req: falcon.Request, resp: falcon.Response, ex: CsrfRefused, params: dict) -> None:
    message = ("This request did not come from a dashboard page of this session (its CSRF token is "
               "missing or wrong). Reload the page and try again.")
    if wants_json(req) or req.method == "PUT":
        resp.status = falcon.HTTP_403
        resp.media = {"error": message}
        return
    render(req, resp, "error.html", status=403, title="Request refused", message=message)


def handle_http_error(req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict) -> None:
    render(req, resp, "error.html", status=ex.status_code, title=ex.title, message=ex.description or ex.title)


def handle_unexpected(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict) -> None:
    LOG.exception("Dashboard page %s %s failed", req.method, req.path)
    render(req, resp, "error.html", status=500, title="Something went wrong",
           message="The dashboard could not show this page; the error is in its log.")
