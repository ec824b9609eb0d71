"""Installing the project prints no deprecation warnings (`make run` / `make test` show pip's output to people).

The build runs as pip runs it for ``pip install -e .``: in an isolated environment with the newest setuptools
allowed by ``[build-system] requires``, which is where deprecations of our ``pyproject.toml`` show up first.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_building_the_package_prints_no_deprecation_warning(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--verbose", "--wheel-dir", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    warnings = [line.strip() for line in output.splitlines() if "Deprecat" in line or "Warning:" in line]
    assert warnings == [], "\n".join(warnings)
    assert list(tmp_path.glob("tradebaas-*.whl"))
