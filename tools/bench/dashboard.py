"""Dashboard benchmark: the servers page with 1,000 servers.

The API (eventlet.wsgi on a green thread, SQLite file, recording worker
clients) holds N servers written as rows the way ``tools/bench/api.py`` does;
the dashboard (eventlet.wsgi, another green thread) lists them through the
API over HTTP, as it always does. Measured:

1. server time of ``GET /dashboard/servers`` for a logged-in session, p50 and
   p99 over ``--requests`` loads (wall clock at the client over loopback, and
   the page's own ``Server-Timing``), the goal being p50 under 150 ms;
2. in Debian's headless Chromium (Playwright, a separate unpatched process),
   the time from navigation start until the page's first contentful paint and
   until its load event, over ``--loads`` loads.

Run from the repository root: ``python tools/bench/dashboard.py [--servers 1000]
[--requests 100] [--loads 10]``. Removes the files it made.
"""

from __future__ import annotations  # noqa: I001 - eventlet_entry must stay first

import fabric.cmd.eventlet_entry  # noqa: F401, I001 - first: green, as in every launcher

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
from eventlet.green import subprocess  # noqa: E402 - waits without blocking the servers on this hub
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from _common import percentile, seed_active_servers  # noqa: E402

from fabric import config  # noqa: E402
from fabric.api.server import ApiServer  # noqa: E402
from fabric.dashboard.server import DashboardServer  # noqa: E402
from fabric.db import Database  # noqa: E402
from tests.fixtures.recording_clients import RecordingClients  # noqa: E402

PASSWORD = "bench-pw"

#: The browser half, run by an unpatched interpreter (Playwright brings its own event loop).
BROWSER_SCRIPT = r"""
import json, sys, tempfile
from playwright.sync_api import sync_playwright
url, password, loads = sys.argv[1], sys.argv[2], int(sys.argv[3])
flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
with sync_playwright() as p:
    ctx = p.chromium.launch_persistent_context(tempfile.mkdtemp(prefix="fabric-bench-chromium-"),
                                               executable_path="/usr/bin/chromium", headless=True, args=flags)
    page = ctx.new_page()
    page.goto(url + "/login?next=/dashboard/servers")
    page.fill("#user", "admin"); page.fill("#password", password); page.fill("#project", "admin")
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard/servers")
    out = []
    for _ in range(loads):
        page.goto(url + "/servers", wait_until="load")
        out.append(page.evaluate('''() => {
            const nav = performance.getEntriesByType("navigation")[0];
            const fcp = performance.getEntriesByName("first-contentful-paint")[0];
            const app = (nav.serverTiming || []).find(t => t.name === "app");
            return {ttfb: nav.responseStart, fcp: fcp ? fcp.startTime : null, load: nav.loadEventEnd,
                    server: app ? app.duration : null, rows: document.querySelectorAll("#servers tbody tr").length};
        }'''))
    ctx.close()
print(json.dumps(out))
"""


def logged_in_cookie(port: int) -> str:
    """Log in through the dashboard's form; the session cookie."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/dashboard/login")
    response = conn.getresponse()
    page = response.read().decode()
    cookie = response.getheader("Set-Cookie").split(";")[0]
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode({"csrf_token": csrf, "user": "admin", "password": PASSWORD, "project": "admin",
                                   "domain": "Default", "next": "/dashboard/servers"})
    conn.request("POST", "/dashboard/login", body=body, headers={
        "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
    response = conn.getresponse()
    response.read()
    if response.status != 303:
        raise SystemExit(f"login failed: HTTP {response.status}")
    return response.getheader("Set-Cookie").split(";")[0]


def bench_server_time(port: int, servers: int, requests: int) -> None:
    cookie = logged_in_cookie(port)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    wall, own = [], []
    for n in range(requests + 1):
        started = time.perf_counter()
        conn.request("GET", "/dashboard/servers", headers={"Cookie": cookie})
        response = conn.getresponse()
        page = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise SystemExit(f"GET /dashboard/servers: HTTP {response.status}")
        if n == 0:  # the first load also fetches the flavor and image names once per session
            assert page.count(b"<tr data-server-id=") == servers, "not every server is on the page"
            continue
        wall.append(elapsed)
        own.append(float(response.getheader("Server-Timing").split("dur=")[1]))
    print(f"GET /dashboard/servers with {servers} servers, {requests} loads: server time p50 "
          f"{statistics.median(wall):.1f} ms, p99 {percentile(wall, 0.99):.1f} ms (the page's own Server-Timing "
          f"p50 {statistics.median(own):.1f} ms, p99 {percentile(own, 0.99):.1f} ms); "
          f"{len(page) // 1024} KiB of HTML; goal p50 < 150 ms: {'met' if statistics.median(wall) < 150 else 'MISSED'}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def bench_browser(url: str, loads: int) -> None:
    done = subprocess.run([sys.executable, "-c", BROWSER_SCRIPT, url, PASSWORD, str(loads)], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(REPO)))
    if done.returncode != 0:
        raise SystemExit(f"the browser run failed:\n{done.stderr[-3000:]}")
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    fcp = [r["fcp"] for r in runs if r["fcp"] is not None]
    print(f"Chromium, {loads} loads of the servers page ({runs[0]['rows']} rows): first contentful paint p50 "
          f"{statistics.median(fcp):.0f} ms, max {max(fcp):.0f} ms; load event p50 "
          f"{statistics.median(r['load'] for r in runs):.0f} ms; time to first byte p50 "
          f"{statistics.median(r['ttfb'] for r in runs):.0f} ms (server's own p50 "
          f"{statistics.median(r['server'] for r in runs):.0f} ms)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--loads", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fabric-bench-dashboard-") as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'bench.sqlite'}")
        seed_active_servers(db, args.servers, PASSWORD)
        settings = config.Settings().replace(default={"data_dir": str(Path(tmp) / "data")},
                                             api={"listen": "127.0.0.1", "port": 0},
                                             dashboard={"listen": "127.0.0.1", "port": 0})
        api = ApiServer(settings, db, RecordingClients().clients).start()
        dashboard = DashboardServer(settings, identity_url=f"{api.url}/v3").start()
        try:
            bench_server_time(dashboard.port, args.servers, args.requests)
            bench_browser(f"http://127.0.0.1:{dashboard.port}/dashboard", args.loads)
        finally:
            dashboard.stop()
            api.stop()
            db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
