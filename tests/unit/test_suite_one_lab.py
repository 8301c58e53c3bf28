"""The suite's lab tests share one session lab: tests/faults and tests/integration alike.

A fixture bound in two conftest files is two fixtures to pytest, so two labs of
8 nodes (and the fault suite's agents left running beside the integration
tests): ``lab`` and ``shoal_home`` live in tests/conftest.py alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
SHARED = ("lab", "shoal_home")


def _top_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.ImportFrom):
            names |= {a.asname or a.name for a in node.names}
    return names


def test_the_session_lab_is_bound_in_the_top_conftest_only() -> None:
    assert set(SHARED) <= _top_level_names(TESTS / "conftest.py")
    nested = sorted(p for p in TESTS.rglob("conftest.py") if p.parent != TESTS)
    assert nested, "tests/integration and tests/faults have conftest files"
    twice = {str(p.relative_to(TESTS)): sorted(_top_level_names(p) & set(SHARED)) for p in nested}
    assert not any(twice.values()), twice
