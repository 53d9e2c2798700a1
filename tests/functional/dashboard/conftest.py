"""A running fabric and a real headless browser for the dashboard's tests.

``cloud``: one ``fabric-all`` process for the module (SQLite, fake virt and
network drivers, RabbitMQ on a vhost of its own so the queues page has a
broker to show), its API and dashboard on free ports, stopped by its own PID.
``browser``: Debian's chromium (``/usr/bin/chromium``) driven by Playwright
through a persistent context on a fresh profile directory; nothing is ever
downloaded. ``shot(page, name)`` saves a screenshot under
``$FABRIC_TEST_ARTIFACTS`` (else a temporary directory, printed).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.fixtures.databases import unavailable
from tests.fixtures.http import Api
from tests.fixtures.processes import REPO, Worker, free_port, stop_process
from tests.fixtures.rabbitmq import RabbitVhost, broker_problem

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: Seconds the fake driver takes to boot a server: long enough to see BUILD turn ACTIVE.
SPAWN_SECONDS = 3


@dataclasses.dataclass
class Cloud:
    api_url: str
    dashboard_url: str
    password: str
    vhost: RabbitVhost
    worker: Worker
    flavor_id: str = ""
    image_id: str = ""
    network_id: str = ""

    def admin_api(self) -> Api:
        return Api(self.api_url).login("admin", self.password, "admin")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    problem = broker_problem()
    if problem:
        unavailable(problem)
    tmp = tmp_path_factory.mktemp("dashboard-cloud")
    vhost = RabbitVhost()
    vhost.create()
    api_port, dashboard_port, password = free_port(), free_port(), secrets.token_urlsafe(10)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_") or k.startswith("FABRIC_TEST_")}
    env.update({"PYTHONPATH": str(REPO), "FABRIC_DEFAULT_DATA_DIR": str(tmp / "data"),
                "FABRIC_DEFAULT_HOST": "dashhost", "FABRIC_API_PORT": str(api_port),
                "FABRIC_API_ADMIN_PASSWORD": password, "FABRIC_DASHBOARD_PORT": str(dashboard_port),
                "FABRIC_OBJECTSTORE_PORT": str(free_port()), "FABRIC_RPC_TRANSPORT_URL": vhost.url,
                "FABRIC_COMPUTE_FAKE_SPAWN_SECONDS": str(SPAWN_SECONDS),
                "FABRIC_SERVICE_REPORT_INTERVAL": "1"})
    log_path = tmp / "fabric-all.log"
    with open(log_path, "wb") as out:
        popen = subprocess.Popen([sys.executable, str(REPO / "bin/fabric-all")], cwd=REPO, env=env, stdout=out,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    worker = Worker(popen, log_path, "fabric-all")
    try:
        worker.wait_for_log("fabric dashboard listening on", timeout=90)
        worker.wait_for_log("fabric API listening on", timeout=90)
        cloud = Cloud(f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{dashboard_port}/dashboard", password,
                      vhost, worker)
        api = cloud.admin_api()
        _, flavor = api("POST", "/compute/v2.1/flavors", {"flavor": {"name": "nano", "ram": 128, "vcpus": 1,
                                                                     "disk": 1}})
        _, image = api("POST", "/image/v2/images", {"name": "tiny", "disk_format": "raw",
                                                    "container_format": "bare"})
        api("PUT", f"/image/v2/images/{image['id']}/file", raw=b"\0" * 4096)
        _, network = api("POST", "/networking/v2.0/networks", {"network": {"name": "lan"}})
        api("POST", "/networking/v2.0/subnets", {"subnet": {"network_id": network["network"]["id"],
                                                            "ip_version": 4, "cidr": "10.40.0.0/24"}})
        cloud.flavor_id, cloud.image_id = flavor["flavor"]["id"], image["id"]
        cloud.network_id = network["network"]["id"]
        yield cloud
    finally:
        stop_process(popen)
        vhost.delete()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go: $FABRIC_TEST_ARTIFACTS, else a temporary directory (printed)."""
    path = Path(os.environ.get("FABRIC_TEST_ARTIFACTS") or tempfile.mkdtemp(prefix="fabric-dashboard-shots-"))
    path = path / "dashboard"
    path.mkdir(parents=True, exist_ok=True)
    print(f"\ndashboard screenshots: {path}")
    return path


@pytest.fixture(scope="module")
def browser_context():
    """A Playwright persistent context of Debian's chromium on a fresh profile, closed after."""
    if not Path(CHROMIUM).is_file():
        unavailable(f"{CHROMIUM} is not installed (Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (the test extra)")
    profile = tempfile.mkdtemp(prefix="fabric-chromium-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900})
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser_context):
    """A fresh tab with no session (cookies cleared), closed after the test."""
    browser_context.clear_cookies()
    tab = browser_context.new_page()
    yield tab
    tab.close()


@pytest.fixture
def shot(artifacts):
    def save(page, name: str) -> Path:
        path = artifacts / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save


def log_in(page, cloud: Cloud, user: str = "admin", password: str | None = None, project: str = "admin",
           path: str = "/overview") -> None:
    """Log in through the form, typing as a person would."""
    page.goto(cloud.dashboard_url + path)
    page.get_by_label("User").fill(user)
    page.get_by_label("Password").fill(password or cloud.password)
    page.get_by_label("Project").fill(project)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"**/dashboard{path}")
