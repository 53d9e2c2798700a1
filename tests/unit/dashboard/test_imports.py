"""The dashboard is a client of the public API only: nothing of the database layer
(nor of the API's internals) is imported by it, directly or on the way."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DASHBOARD_MODULES = sorted((REPO / "fabric" / "dashboard").glob("*.py")) + [REPO / "fabric" / "cmd" / "dashboard.py"]
FORBIDDEN = ("fabric.db", "fabric.api", "fabric.service", "fabric.rpc", "sqlalchemy", "alembic", "kombu")


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def forbidden_in(names: set[str]) -> list[str]:
    return sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in FORBIDDEN))


def test_no_dashboard_module_imports_the_database_layer_or_the_api_internals():
    assert len(DASHBOARD_MODULES) > 5
    offenders = {path.name: forbidden_in(imported_names(path)) for path in DASHBOARD_MODULES}
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_the_checker_sees_a_database_import(tmp_path):
    # The rule above would be worthless if the parser missed the usual spellings.
    probe = tmp_path / "probe.py"
    probe.write_text("import fabric.db\nfrom fabric.db.models import Instance\nfrom fabric import api\n"
                     "import sqlalchemy as sa\n")
    assert forbidden_in(imported_names(probe)) == ["fabric.api", "fabric.db", "fabric.db.models",
                                                   "fabric.db.models.Instance", "sqlalchemy"]


def test_loading_the_dashboard_and_its_launcher_loads_no_database_code():
    """Transitively too: a fresh interpreter that imports the dashboard app, its server and
    fabric-dashboard's main has loaded neither fabric.db nor SQLAlchemy nor kombu."""
    probe = ("import sys, fabric.cmd.dashboard, fabric.dashboard.app, fabric.dashboard.server\n"
             "from fabric.dashboard.app import build_app\nbuild_app('http://127.0.0.1:1/v3')\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'kombu', 'alembic')\n"
             "      or m.startswith(('fabric.db', 'fabric.api', 'fabric.rpc', 'fabric.service'))))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
