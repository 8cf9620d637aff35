"""`.ci/run` installs into its own virtual environment, never into whatever python3 is first on PATH
(as root that can be the system Python)."""

from __future__ import annotations

import re

from tests.grid_outside import REPO


def test_ci_installs_and_runs_in_its_own_venv() -> None:
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^\s*python3 -m venv \.ci-venv", script, re.M)
    assert 'PY=.ci-venv/bin/python' in script
    for line in script.splitlines():
        if re.search(r"\b(pip install|pytest|mypy|ruff)\b", line) and "apt-get" not in line:
            assert line.strip().startswith('"$PY"') or line.lstrip().startswith(("#", "log ")), line
    assert ".ci-venv/" in (REPO / ".gitignore").read_text(encoding="utf-8")
