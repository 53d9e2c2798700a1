"""Logging in and out, the project overview with its quota bars, and key pairs."""

from __future__ import annotations

import datetime
from urllib.parse import quote

import falcon

from fabric.dashboard import client
from fabric.dashboard.client import ApiError
from fabric.dashboard.web import dashboard, field, flash, redirect, render, safe_next, session


class Login:
    """GET shows the form; POST asks Identity for a token and starts a new session."""

    public = True

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        render(req, resp, "login.html", next=safe_next(req.get_param("next")), error=None,
               values={"user": "", "project": "", "domain": "Default"})

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        values = {"user": field(req, "user"), "project": field(req, "project"),
                  "domain": field(req, "domain") or "Default"}
        password = (req.context.form.get("password") or [""])[0]
        target = safe_next(field(req, "next"))
        missing = [name for name in ("user", "project") if not values[name]] + ([] if password else ["password"])
        if missing:
            render(req, resp, "login.html", status=400, next=target, values=values,
                   error=f"Fill in the {', '.join(missing)}.")
            return
        dash = dashboard(req)
        try:
            result = client.login(dash.identity_url, user=values["user"], password=password,
                                  project=values["project"], domain=values["domain"])
        except ApiError as err:
            status = 401 if err.status in (401, 403, 404) else err.status if err.status < 500 else 502
            render(req, resp, "login.html", status=status, next=target, values=values, error=err.message)
            return
        # A new session (new id, new CSRF token) for the logged-in user: an id known before
        # login (planted by someone else) is worth nothing after it.
        dash.store.drop(session(req))
        fresh = dash.store.new()
        fresh.token, fresh.user, fresh.project = result.token, result.user, result.project
        fresh.project_id, fresh.roles, fresh.endpoints = result.project_id, result.roles, result.endpoints
        fresh.expires = datetime.datetime.fromisoformat(result.expires_at.replace("Z", "+00:00")).timestamp()
        req.context.session, req.context.rotated = fresh, True
        redirect(target)


class Logout:
    """POST revokes the token at the API and ends the session."""

    public = True

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        current = session(req)
        if current.logged_in:
            current.client().revoke()
        dashboard(req).store.drop(current)
        fresh = dashboard(req).store.new()
        req.context.session, req.context.rotated = fresh, True
        flash(req, "You are logged out.")
        redirect("/dashboard/login")


#: Overview bars: (label, used key, limit key, unit) of compute's absolute limits.
QUOTA_BARS = (("Servers", "totalInstancesUsed", "maxTotalInstances", ""),
              ("vCPUs", "totalCoresUsed", "maxTotalCores", ""),
              ("RAM", "totalRAMUsed", "maxTotalRAMSize", "MiB"))


class Overview:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        api = session(req).client()
        absolute = api.get("compute", "/limits")["limits"]["absolute"]
        keypairs = len(api.get("compute", "/os-keypairs")["keypairs"])
        bars = [{"label": label, "used": absolute.get(used, 0), "limit": absolute.get(limit, -1), "unit": unit}
                for label, used, limit, unit in QUOTA_BARS]
        bars.append({"label": "Key pairs", "used": keypairs, "limit": absolute.get("maxTotalKeypairs", -1),
                     "unit": ""})
        render(req, resp, "overview.html", bars=bars)


class Keypairs:
    """List, create (the private key is shown once, on the answer page) and import."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        pairs = [item["keypair"] for item in session(req).client().get("compute", "/os-keypairs")["keypairs"]]
        render(req, resp, "keypairs.html", keypairs=sorted(pairs, key=lambda p: p["name"]), error=None,
               values={"name": "", "public_key": ""})

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        values = {"name": field(req, "name"), "public_key": field(req, "public_key")}
        api = session(req).client()
        body = {"keypair": {"name": values["name"]}}
        if values["public_key"]:
            body["keypair"]["public_key"] = values["public_key"]
        try:
            created = api.call("POST", "compute", "/os-keypairs", body=body)["keypair"]
        except ApiError as err:
            if err.status >= 500:
                raise
            pairs = [item["keypair"] for item in api.get("compute", "/os-keypairs")["keypairs"]]
            render(req, resp, "keypairs.html", status=err.status, keypairs=pairs, error=err.message, values=values)
            return
        if created.get("private_key"):
            render(req, resp, "keypair_created.html", keypair=created)
            return
        flash(req, f"Imported key pair {created['name']}.")
        redirect("/dashboard/keypairs")


class KeypairDelete:
    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        session(req).client().call("DELETE", "compute", f"/os-keypairs/{quote(name, safe='')}")
        flash(req, f"Deleted key pair {name}.")
        redirect("/dashboard/keypairs")


def register(app: falcon.App, prefix: str) -> None:
    app.add_route(f"{prefix}/login", Login())
    app.add_route(f"{prefix}/logout", Logout())
    app.add_route(f"{prefix}/overview", Overview())
    app.add_route(f"{prefix}/keypairs", Keypairs())
    app.add_route(f"{prefix}/keypairs/{{name}}/delete", KeypairDelete())
