"""The stub matches the native module, and the typed API checks under
mypy --strict (the example app, the package, and this test suite)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import PY_ROOT


def run_mypy(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=PY_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "MYPY_CACHE_DIR": str(cache)},
        timeout=600,
    )


def test_stubtest(tmp_path: Path) -> None:
    out = run_mypy(["mypy.stubtest", "promptops._lowlevel"], tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success" in out.stdout


def test_mypy_strict_example_and_package(tmp_path: Path) -> None:
    out = run_mypy(
        ["mypy", "--strict", "examples/quickstart.py", "python/promptops", "tests"],
        tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success: no issues found" in out.stdout
