"""The design card's layering: bot/ never imports torch or open_clip; engine/ never
imports a chat library. Tests share helpers through tests/fakes, never through each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

FORBIDDEN = {
    "bot": {"torch", "open_clip", "torchvision"},
    "engine": {"telegram", "discord"},
    # The state store is read by `index_builder.py report`, which must load no model.
    "engine/state": {"torch", "open_clip", "torchvision", "telegram", "discord"},
}


def imported_modules(path: Path) -> set[str]:
    """Every absolute import; for `from a import b` both `a` and `a.b`, since b may be a
    module."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules |= {f"{node.module}.{alias.name}" for alias in node.names}
    return modules


def imported_roots(path: Path) -> set[str]:
    return {module.split(".")[0] for module in imported_modules(path)}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_keep_to_their_layer(package: str) -> None:
    offenders = {
        str(path.relative_to(REPO_ROOT)): sorted(imported_roots(path) & FORBIDDEN[package])
        for path in (REPO_ROOT / package).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def is_test_module(module: str) -> bool:
    return module.startswith("tests.") and module.rsplit(".", 1)[-1].startswith("test_")


def is_fake(module: str) -> bool:
    return module.split(".")[:2] == ["tests", "fakes"]


def test_tests_and_the_bench_share_helpers_only_through_the_fakes() -> None:
    """A test module imports no other test module (running one must not collect another's
    tests); the bench and the fakes import nothing from tests/ but the fakes (no pytest
    fixtures, no test modules)."""
    offenders = {}
    for path in [*(REPO_ROOT / "tests").rglob("*.py"), *(REPO_ROOT / "bench").rglob("*.py")]:
        relative = path.relative_to(REPO_ROOT)
        own_tests = relative.parts[0] == "tests" and relative.parts[1] != "fakes"
        imported = imported_modules(path)
        if own_tests:
            wrong = {m for m in imported if is_test_module(m)}
        else:
            wrong = {m for m in imported if m.split(".")[0] == "tests" and not is_fake(m)}
        if wrong:
            offenders[relative.as_posix()] = sorted(wrong)
    assert offenders == {}


def test_no_function_in_the_product_is_over_50_lines() -> None:
    """Issue 14's bar for engine/ and bot/: long functions are split into named steps."""
    too_long = [
        f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name} ({lines} lines)"
        for package in ("engine", "bot")
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (lines := (node.end_lineno or node.lineno) - node.lineno + 1) > 50
    ]
    assert too_long == []
