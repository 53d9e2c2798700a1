"""``fabric-manage db`` as an operator runs it: real processes, real databases."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def manage(*args: str, env: dict[str, str] | None = None, config_file: str | None = None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    full_env.update(env or {})
    command = [sys.executable, "-m", "fabric.cmd.manage"]
    if config_file:
        command += ["--config-file", config_file]
    return subprocess.run(command + list(args), env=full_env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_db_sync_twice_second_does_nothing_and_says_so(backend, make_empty_database):
    env = {"FABRIC_DATABASE_URL": make_empty_database(backend)}

    first = manage("db", "sync", env=env)
    second = manage("db", "sync", env=env)
    version = manage("db", "version", env=env)

    assert first.returncode == 0, first.stderr
    assert "upgraded from empty to" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "already at revision" in second.stdout and "nothing to do" in second.stdout
    assert "up to date" in version.stdout


def test_default_sqlite_database_is_created_under_data_dir(tmp_path):
    data_dir = tmp_path / "not" / "yet" / "there"
    result = manage("db", "sync", env={"FABRIC_DEFAULT_DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stderr
    assert (data_dir / "fabric.sqlite").is_file()


def _assert_one_clear_line(result, *fragments: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_wrong_type_is_one_clear_line(tmp_path):
    conf = tmp_path / "fabric.conf"
    conf.write_text("[service]\nreport_interval = often\n")
    result = manage("db", "version", config_file=str(conf))
    _assert_one_clear_line(result, str(conf), "report_interval", "'often'", "expected a number")


def test_unknown_option_is_one_clear_line(tmp_path):
    conf = tmp_path / "fabric.conf"
    conf.write_text("[database]\nurll = sqlite://\n")
    result = manage("db", "version", config_file=str(conf))
    _assert_one_clear_line(result, "urll", "unknown option")


def test_unreachable_database_is_one_clear_line():
    result = manage("db", "sync", env={"FABRIC_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"})
    _assert_one_clear_line(result, "127.0.0.1:1", "unreachable")


def test_unsupported_database_url_is_one_clear_line():
    result = manage("db", "sync", env={"FABRIC_DATABASE_URL": "oracle://db/x"})
    _assert_one_clear_line(result, "oracle://db/x", "unsupported backend")
