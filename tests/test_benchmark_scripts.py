"""The benchmark scripts run on the GPU machine, where a broken import would cost a device call: each must
import the installed package only (no private copies, no path tricks) and at least start."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
SCRIPTS = sorted([*BENCHMARKS.glob("*.py"), *BENCHMARKS.glob("peers/*.py")])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(BENCHMARKS)))
def test_the_script_starts(script):
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(BENCHMARKS)))
def test_the_script_imports_only_the_package(script):
    tree = ast.parse(script.read_text())
    scripts = {p.stem for p in SCRIPTS}
    imported = {alias.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and not n.level}
    assert not imported & scripts, "benchmark scripts share code through the package, not through each other"
    path_edits = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Call)
                  and ast.unparse(n.func) in ("sys.path.insert", "sys.path.append")]
    # Only a fetched peer's own folder may be put on the path (its code is read, never copied).
    assert all("args." in call for call in path_edits), path_edits
