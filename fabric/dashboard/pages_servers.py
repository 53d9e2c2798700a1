"""Servers: the list whose rows update while it is open, the launch form, a
server's detail page with its console tail, and its actions."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import falcon

from fabric.dashboard import polling
from fabric.dashboard.client import ApiClient, ApiError
from fabric.dashboard.sessions import Session
from fabric.dashboard.web import dashboard, field, flash, form, redirect, render, session

#: Seconds a session reuses its flavor and image names, and what the API offers.
NAMES_TTL = 60.0
FEATURES_TTL = 300.0

#: Lines of console output the detail page shows.
CONSOLE_LINES = 40

#: Most servers one launch may start.
MAX_COUNT = 100

#: Actions of the detail page: form value -> (API action body, label, needs confirmation).
ACTIONS: dict[str, tuple[dict, str, bool]] = {
    "reboot": ({"reboot": {"type": "SOFT"}}, "Reboot", True),
    "hard-reboot": ({"reboot": {"type": "HARD"}}, "Hard reboot", True),
    "stop": ({"os-stop": None}, "Stop", True),
    "start": ({"os-start": None}, "Start", False),
    "delete": ({}, "Delete", True),
}


def features(current: Session) -> dict[str, bool]:
    """Which optional APIs this cloud offers (asked, not assumed; memoised per session)."""
    known = current.remembered("features", FEATURES_TTL)
    if known is None:
        api = current.client()
        known = current.remember("features", {
            "server_groups": api.available("compute", "/os-server-groups"),
            "security_groups": api.available("network", "/security-groups"),
            "floating_ips": api.available("network", "/floatingips"),
        })
    return known


def names(current: Session) -> dict[str, dict[str, str]]:
    """Flavor and image names by id (memoised per session for a minute)."""
    known = current.remembered("names", NAMES_TTL)
    if known is None:
        api = current.client()
        known = current.remember("names", {
            "flavors": {f["id"]: f["name"] for f in api.get("compute", "/flavors")["flavors"]},
            "images": {i["id"]: i["name"] for i in api.get("image", "/images")["images"]},
        })
    return known


def addresses_text(server: dict) -> str:
    return "; ".join(f"{net}: {', '.join(a['addr'] for a in addrs)}"
                     for net, addrs in sorted((server.get("addresses") or {}).items()))


def server_row(server: dict, known: dict[str, dict[str, str]]) -> dict[str, Any]:
    """What the servers list shows of one server (and all the live updates compare)."""
    flavor = (server.get("flavor") or {}).get("id")
    image = (server.get("image") or {}).get("id") if isinstance(server.get("image"), dict) else None
    return {"id": server["id"], "name": server["name"], "status": server["status"],
            "task": server.get("OS-EXT-STS:task_state"), "addresses": addresses_text(server),
            "flavor": known["flavors"].get(flavor, flavor or ""), "image": known["images"].get(image, image or ""),
            "created": server.get("created") or ""}


def server_rows(current: Session) -> tuple[list[dict], str]:
    """The project's servers as rows, and their fingerprint."""
    known = names(current)
    rows = [server_row(s, known) for s in current.client().get("compute", "/servers/detail")["servers"]]
    return rows, polling.fingerprint(rows)


def polled(current: Session, key: str, fetch) -> Any:
    """``fetch()``, or its memo when this session fetched ``key`` less than the minimum
    poll interval ago: however many pages poll, the API sees one listing per interval."""
    cached = current.remembered(key, polling.MIN_INTERVAL_MS / 1000 - 0.1)
    return cached if cached is not None else current.remember(key, fetch())


class Servers:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        current = session(req)
        # A page load always lists afresh; the page's first poll may then reuse this listing.
        rows, fingerprint = current.remember("servers", server_rows(current))
        render(req, resp, "servers.html", rows=rows, fingerprint=fingerprint,
               first_interval=polling.MIN_INTERVAL_MS)

    def on_get_status(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The rows' fingerprint, the rows (as escaped HTML) when it differs from ``since``,
        and how long the page must wait before asking again."""
        current = session(req)
        rows, fingerprint = polled(current, "servers", lambda: server_rows(current))
        changed = req.get_param("since") != fingerprint
        doc: dict[str, Any] = {"fingerprint": fingerprint, "changed": changed,
                               "next_ms": polling.next_interval(polling.parse_interval(req.get_param("interval")),
                                                               changed)}
        if changed:
            doc["rows_html"] = dashboard(req).templates.get_template("_server_rows.html").render(
                rows=rows, prefix="/dashboard")
        resp.media = doc


def launch_choices(current: Session) -> dict[str, Any]:
    api, offered = current.client(), features(current)
    choices: dict[str, Any] = {
        "flavors": sorted(api.get("compute", "/flavors/detail")["flavors"], key=lambda f: (f["ram"], f["name"])),
        "images": [i for i in api.get("image", "/images")["images"] if i.get("status") == "active"],
        "networks": api.get("network", "/networks")["networks"],
        "keypairs": [k["keypair"]["name"] for k in api.get("compute", "/os-keypairs")["keypairs"]],
        "server_groups": None, "security_groups": None,
    }
    if offered["server_groups"]:
        choices["server_groups"] = api.get("compute", "/os-server-groups").get("server_groups", [])
    if offered["security_groups"]:
        choices["security_groups"] = api.get("network", "/security-groups").get("security_groups", [])
    return choices


def launch_body(values: dict[str, Any]) -> dict[str, Any]:
    """The create-server request for the launch form's values; ValueError naming a bad one."""
    if not values["name"]:
        raise ValueError("Give the server a name.")
    for key, label in (("flavor", "a flavor"), ("image", "an image")):
        if not values[key]:
            raise ValueError(f"Choose {label}.")
    try:
        count = int(values["count"] or "1")
    except ValueError:
        raise ValueError(f"Count {values['count']!r} is not a number; use 1 to {MAX_COUNT}.") from None
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"Count {count} is out of range; use 1 to {MAX_COUNT}.")
    server: dict[str, Any] = {"name": values["name"], "flavorRef": values["flavor"], "imageRef": values["image"],
                              "min_count": count, "max_count": count}
    if values["network"]:
        server["networks"] = [{"uuid": values["network"]}]
    if values["key_name"]:
        server["key_name"] = values["key_name"]
    if values["user_data"]:
        server["user_data"] = base64.b64encode(values["user_data"].encode()).decode()
    if values["security_groups"]:
        # Ids, not names: two groups may share a name, and the API takes an id where a name goes.
        server["security_groups"] = [{"name": ident} for ident in values["security_groups"]]
    body: dict[str, Any] = {"server": server}
    if values["server_group"]:
        body["os:scheduler_hints"] = {"group": values["server_group"]}
    return body


class Launch:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        render(req, resp, "launch.html", error=None, values={"count": "1"}, **launch_choices(session(req)))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        current = session(req)
        values = {name: field(req, name) for name in ("name", "flavor", "image", "network", "key_name",
                                                      "count", "server_group")}
        values["user_data"] = (form(req).get("user_data") or [""])[0]
        values["security_groups"] = [v for v in form(req).get("security_groups", []) if v]
        try:
            body = launch_body(values)
            current.client().call("POST", "compute", "/servers", body=body)
        except (ValueError, ApiError) as err:
            if isinstance(err, ApiError) and err.status >= 500:
                raise
            status = err.status if isinstance(err, ApiError) else 400
            message = err.message if isinstance(err, ApiError) else str(err)
            render(req, resp, "launch.html", status=status, error=message, values=values, **launch_choices(current))
            return
        current.cache.pop("servers", None)
        count = body["server"]["max_count"]
        flash(req, f"Launching {values['name']}" + (f" ({count} servers)." if count > 1 else "."))
        redirect("/dashboard/servers")


def console_tail(api: ApiClient, server_id: str) -> str:
    try:
        return api.call("POST", "compute", f"/servers/{server_id}/action",
                        body={"os-getConsoleOutput": {"length": CONSOLE_LINES}})["output"]
    except ApiError as err:
        return f"(no console output: {err.message})"


def detail_view(current: Session, server_id: str) -> dict[str, Any]:
    api = current.client()
    server = api.get("compute", f"/servers/{quote(server_id, safe='')}")["server"]
    row = server_row(server, names(current))
    return {"server": server, "row": row, "fault": server.get("fault"),
            "addresses": sorted((server.get("addresses") or {}).items()),
            "console": console_tail(api, server["id"]) if server["status"] not in ("BUILD", "DELETED") else ""}


class ServerItem:
    def on_get(self, req: falcon.Request, resp: falcon.Response, server_id: str) -> None:
        view = detail_view(session(req), server_id)
        render(req, resp, "server.html", actions=ACTIONS, first_interval=polling.MIN_INTERVAL_MS,
               fingerprint=polling.fingerprint([view["row"], view["console"]]), **view)

    def on_get_status(self, req: falcon.Request, resp: falcon.Response, server_id: str) -> None:
        """The server's status and console tail, polled by its page like the list is."""
        view = polled(session(req), f"server:{server_id}", lambda: detail_view(session(req), server_id))
        fingerprint = polling.fingerprint([view["row"], view["console"]])
        changed = req.get_param("since") != fingerprint
        resp.media = {"fingerprint": fingerprint, "changed": changed, "status": view["row"]["status"],
                      "task": view["row"]["task"] or "", "addresses": view["row"]["addresses"],
                      "console": view["console"],
                      "next_ms": polling.next_interval(polling.parse_interval(req.get_param("interval")), changed)}

    def on_post_action(self, req: falcon.Request, resp: falcon.Response, server_id: str) -> None:
        """Run an action; the ones that disturb the server first show a confirmation page."""
        current, action = session(req), field(req, "action")
        if action not in ACTIONS:
            raise falcon.HTTPBadRequest(description=f"action {action!r} is unknown; use one of {', '.join(ACTIONS)}")
        body, label, confirm = ACTIONS[action]
        api = current.client()
        if confirm and field(req, "confirmed") != "yes":
            server = api.get("compute", f"/servers/{quote(server_id, safe='')}")["server"]
            render(req, resp, "confirm.html", server=server, action=action, label=label)
            return
        current.cache.pop("servers", None)
        current.cache.pop(f"server:{server_id}", None)
        if action == "delete":
            api.call("DELETE", "compute", f"/servers/{quote(server_id, safe='')}")
            flash(req, "Deleting the server.")
            redirect("/dashboard/servers")
        api.call("POST", "compute", f"/servers/{quote(server_id, safe='')}/action", body=body)
        flash(req, f"{label}: requested.")
        redirect(f"/dashboard/servers/{server_id}")


def register(app: falcon.App, prefix: str) -> None:
    servers, item = Servers(), ServerItem()
    app.add_route(f"{prefix}/servers", servers)
    app.add_route(f"{prefix}/servers/status.json", servers, suffix="status")
    app.add_route(f"{prefix}/servers/launch", Launch())
    app.add_route(f"{prefix}/servers/{{server_id}}", item)
    app.add_route(f"{prefix}/servers/{{server_id}}/status.json", item, suffix="status")
    app.add_route(f"{prefix}/servers/{{server_id}}/action", item, suffix="action")
