"""The layering holds (pyproject.toml's import-linter contracts), and the check catches a wrong-way import.

The same check runs in `make lint`; here it runs in the suite so CI fails on a wrong-way
import even where nobody ran the linter. The wrong-way cases run the linter on a copy of the
packages with one import added, so they prove the check can fail for each rule.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.app.cli import build_parser, handler_for

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("monitor", "devices", "dashboard")
LINT = ("from importlinter.cli import lint_imports; "
        "raise SystemExit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter on the packages under `tree` (they shadow the installed ones)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, "-c", LINT], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_contracts_hold_on_this_tree():
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize(("module", "wrong_import", "contract", "names"), [
    # the model imports nothing above it
    ("monitor/model/readings.py", "from monitor.store import redis_types", "layers",
     "monitor.model is not allowed to import monitor.store"),
    # storage knows no feature
    ("monitor/store/streams.py", "import dashboard.figures", "layers",
     "monitor.store is not allowed to import dashboard"),
    # a feature never imports the shell
    ("dashboard/figures.py", "from monitor.app import cli", "layers",
     "dashboard is not allowed to import monitor.app"),
    # devices and dashboard stay apart
    ("devices/ingest.py", "import dashboard.data", "layers", "devices is not allowed to import dashboard"),
    # the arrow removed by the layout work: alarms start nothing of sessions
    ("monitor/alarms/engine.py", "from monitor.sessions import archive_topup", "layers",
     "monitor.alarms is not allowed to import monitor.sessions"),
    # a cycle inside a package
    ("monitor/store/spool.py", "from monitor.store import streams", "acyclic", "No cycles are allowed in monitor.store"),
    # a pure module reaching for I/O
    ("monitor/alarms/rules.py", "import redis", "pure", "monitor.alarms.rules is not allowed to import redis"),
])
def test_a_wrong_way_import_breaks_the_check(tmp_path, module, wrong_import, contract, names):
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{wrong_import}  # noqa\n")
    out = lint(tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    broken = out.stdout.split("Broken contracts", 1)[-1]
    assert f"{contract}:" in broken and names in broken, out.stdout


def test_the_import_graph_in_the_docs_is_current_and_goes_stale_with_a_new_arrow(tmp_path):
    for pkg in (*PACKAGES, "scripts", "docs"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    check = [sys.executable, "scripts/import_graph.py", "--check"]
    ok = subprocess.run(check, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    spool = tmp_path / "monitor/store/spool.py"
    spool.write_text(spool.read_text() + "\nfrom monitor.accounts import audit  # noqa\n")  # a new arrow
    stale = subprocess.run(check, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert stale.returncode == 1 and "stale" in stale.stderr


def test_the_shell_has_an_entry_point_for_every_command():
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        assert callable(handler_for(name)), name
