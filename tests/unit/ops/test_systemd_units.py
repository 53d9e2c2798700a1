"""The systemd units in conf/systemd: one per worker, each verified by ``systemd-analyze verify``.

``verify`` checks every key against the systemd it ships with and that ExecStart's program
exists and is executable, so the units are copied with ExecStart pointing at this checkout's
installed launchers. Any complaint it prints fails the test (it exits 0 on unknown keys).
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fabric.cmd import workers

REPO = Path(__file__).resolve().parents[3]
UNITS = REPO / "conf" / "systemd"
INSTALLED_BIN = "/usr/local/bin/"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(UNITS / name)
    return parser


def test_every_worker_and_the_dashboard_has_a_unit_in_the_target():
    expected = {f"{binary}.service" for binary in workers.WORKERS} | {"fabric-dashboard.service"}
    assert {p.name for p in UNITS.glob("*.service")} == expected
    for name in expected:
        unit = _unit(name)
        binary = name.removesuffix(".service")
        assert unit["Service"]["ExecStart"].startswith(f"{INSTALLED_BIN}{binary} "), name
        assert (REPO / "bin" / binary).exists(), f"{name} starts {binary}, which bin/ does not have"
        assert unit["Install"]["WantedBy"] == "fabric.target"
        assert unit["Service"]["Restart"] == "on-failure"
        assert unit["Service"]["KillSignal"] == "SIGTERM"


def test_stop_timeout_leaves_the_graceful_shutdown_its_time():
    from fabric.config import ServiceSection

    graceful = ServiceSection().graceful_shutdown_timeout
    for path in UNITS.glob("*.service"):
        assert float(_unit(path.name)["Service"]["TimeoutStopSec"]) > graceful, path.name


def test_each_worker_on_a_host_gets_its_own_metrics_port():
    ports = {}
    for binary in workers.WORKERS:
        environment = _unit(f"{binary}.service")["Service"]["Environment"]
        assert environment.startswith("FABRIC_METRICS_PORT="), binary
        ports[binary] = int(environment.split("=", 1)[1])
    assert len(set(ports.values())) == len(ports), ports


def test_units_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing (Debian package systemd)")
        pytest.skip("systemd-analyze is missing")
    launchers = Path(sys.executable).parent
    for path in UNITS.iterdir():
        (tmp_path / path.name).write_text(path.read_text().replace(INSTALLED_BIN, f"{launchers}/"))
    names = sorted(str(p) for p in tmp_path.iterdir())
    done = subprocess.run([analyze, "verify", *names], capture_output=True, text=True, timeout=120, check=False)
    complaints = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    assert done.returncode == 0 and not complaints, "\n".join(complaints)


def test_verify_would_catch_a_broken_unit(tmp_path):
    """The check above means something: an unknown key and a missing program are reported."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is missing (the test above fails in CI)")
    text = (UNITS / "fabric-api.service").read_text().replace("KillSignal=SIGTERM", "KillSignall=SIGTERM")
    (tmp_path / "fabric-api.service").write_text(text)
    done = subprocess.run([analyze, "verify", str(tmp_path / "fabric-api.service")], capture_output=True,
                          text=True, timeout=120, check=False)
    output = done.stderr + done.stdout
    assert "KillSignall" in output
    assert "/usr/local/bin/fabric-api" in output or done.returncode != 0
