"""The contributor tooling agrees with itself: pre-commit runs the ruff that the test extra pins
(which .ci/run runs), so a commit hook and CI never judge the tree by two different versions."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_pre_commit_runs_the_pinned_ruff():
    # pyproject.toml read as text: tomllib is Python ≥ 3.11, and the project supports 3.10
    pinned = re.findall(r'^test = \[.*"ruff==([^"]+)".*\]$', (REPO / "pyproject.toml").read_text(), flags=re.M)
    hooks = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())["repos"]
    revs = [h["rev"] for h in hooks if h["repo"].endswith("/ruff-pre-commit")]
    assert pinned and revs == [f"v{pinned[0]}"], (pinned, revs)


def test_ci_lints_and_checks_the_format_before_the_tests():
    lines = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines()]
    order = [
        i
        for i, ln in enumerate(lines)
        if ln.startswith((".venv/bin/ruff check", ".venv/bin/ruff format --check", ".venv/bin/python -m pytest"))
    ]
    assert len(order) == 3 and order == sorted(order)
    assert lines[order[-1]].startswith(".venv/bin/python -m pytest")
