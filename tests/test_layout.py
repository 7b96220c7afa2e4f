"""The house rules of the code base, checked on every run.

* every module of ``maivar_tf/`` and ``beam/`` does one job: at most 450 lines, and no function
  or method longer than 80 lines (decorators and docstring included);
* tests use public names only: no test imports an underscore name from the package, nor reads
  one off a package module it imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
PACKAGES = ("maivar_tf", "beam")


def _sources(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (REPO_ROOT / f).rglob("*.py"))


def long_modules(paths) -> list[str]:
    """``path (N lines)`` for every file over :data:`MAX_MODULE_LINES`."""
    out = []
    for p in paths:
        n = len(p.read_text().splitlines())
        if n > MAX_MODULE_LINES:
            out.append(f"{p.parent.name}/{p.name} ({n} lines)")
    return out


def long_functions(paths) -> list[str]:
    """``path:line name (N lines)`` for every function over :data:`MAX_FUNCTION_LINES`."""
    out = []
    for p in paths:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                n = node.end_lineno - start + 1
                if n > MAX_FUNCTION_LINES:
                    out.append(f"{p.parent.name}/{p.name}:{node.lineno} {node.name} ({n} lines)")
    return out


def _is_package(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] in PACKAGES


def private_uses(path: Path) -> list[str]:
    """Underscore names a test takes from the package (imports and module attributes)."""
    tree = ast.parse(path.read_text())
    modules: set[str] = set()  # local names bound to package modules
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _is_package(node.module):
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"{path.name}:{node.lineno} imports {node.module}.{alias.name}")
                modules.add(alias.asname or alias.name)  # may be a module (from pkg import mod)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _is_package(alias.name):
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                and node.value.id in modules):
            found.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def test_modules_do_one_job():
    assert long_modules(_sources(*PACKAGES)) == []


def test_functions_fit_on_a_screen():
    assert long_functions(_sources(*PACKAGES)) == []


def test_tests_use_public_names_only():
    found = [use for p in _sources("tests") for use in private_uses(p)]
    assert found == []


@pytest.mark.parametrize("source, expected", [
    ("from maivar_tf.training import _trim_csv_log\n", ["imports maivar_tf.training._trim"]),
    ("from maivar_tf import training\ntraining._backup_epoch(1)\n", ["uses training._backup"]),
    ("import maivar_tf.convert as convert\nconvert._targets(m)\n", ["uses convert._targets"]),
    ("from maivar_tf import training\ntraining.run(x._private)\n", []),
])
def test_private_use_detector(tmp_path, source, expected):
    path = tmp_path / "test_x.py"
    path.write_text(source)
    found = private_uses(path)
    assert len(found) == len(expected)
    for got, want in zip(found, expected, strict=True):
        assert want in got


def test_length_detectors(tmp_path):
    fits = tmp_path / "fits.py"
    fits.write_text("@staticmethod\ndef f():\n" + "    x = 1\n" * (MAX_FUNCTION_LINES - 2))
    too_long = tmp_path / "too_long.py"
    too_long.write_text("@staticmethod\ndef f():\n" + "    x = 1\n" * (MAX_FUNCTION_LINES - 1)
                        + "\n" * MAX_MODULE_LINES)
    assert long_functions([fits]) == []
    assert long_functions([too_long]) == [f"{tmp_path.name}/too_long.py:2 f ({MAX_FUNCTION_LINES + 1} lines)"]
    assert long_modules([fits]) == []
    assert long_modules([too_long]) == [f"{tmp_path.name}/too_long.py ({MAX_MODULE_LINES + MAX_FUNCTION_LINES + 1} lines)"]
