"""The built distributions ship what a Beam worker needs: ``beam/``, ``maivar_tf/``, class lists.

A cluster runner installs the project on its workers from a built wheel or sdist
(``--extra_package``, docs/cluster.md). The test builds both from a copy of the source tree
through setuptools' PEP 517 hooks without isolation (what ``python -m build --no-isolation``
calls; no download) and checks every module and shipped class list is inside, then imports
the unpacked wheel in a fresh interpreter outside the repo and reads a class list from it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

#: What the source tree holds that is no part of a distribution, anywhere in it ...
_NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", "*.egg-info",
                                      ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints")
#: ... and at its top only (``maivar_tf/data`` is a package).
_NOT_SOURCES_AT_TOP = {"build", "dist", "data", "runs", "export"}


def _ignore(folder: str, names: list[str]) -> set[str]:
    top = Path(folder) == REPO_ROOT
    return set(_NOT_SOURCES(folder, names)) | (_NOT_SOURCES_AT_TOP & set(names) if top else set())

#: One PEP 517 hook per interpreter, as ``build`` runs them (setuptools rewrites sys.argv).
_HOOK = "from setuptools import build_meta; print('BUILT', build_meta.{}({!r}))"


def _shipped_files() -> set[str]:
    """Repo-relative paths every distribution must hold (modules and class lists)."""
    paths = [*(REPO_ROOT / "beam").glob("*.py"), *(REPO_ROOT / "maivar_tf").rglob("*.py"),
             *(REPO_ROOT / "maivar_tf" / "resources").glob("*.txt")]
    return {p.relative_to(REPO_ROOT).as_posix() for p in paths if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> tuple[Path, Path]:
    """``(sdist, wheel)`` built from a copy of the source tree."""
    tmp = tmp_path_factory.mktemp("packaging")
    src, out = tmp / "src", tmp / "dist"
    shutil.copytree(REPO_ROOT, src, ignore=_ignore)
    built = []
    for hook in ("build_sdist", "build_wheel"):
        proc = subprocess.run([sys.executable, "-c", _HOOK.format(hook, str(out))], cwd=src,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        built.append(out / proc.stdout.splitlines()[-1].removeprefix("BUILT "))
    return built[0], built[1]


def test_wheel_holds_every_module_and_class_list(dists):
    _, wheel = dists
    assert wheel.name.startswith("maivar_tf-") and wheel.name.endswith("-py3-none-any.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_shipped_files() - names)
    assert missing == [], f"not in {wheel.name}: {missing}"
    assert not any(n.startswith("tests/") for n in names), "the tests were packaged"
    info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "maivar = maivar_tf.cli:main" in zipfile.ZipFile(wheel).read(info).decode()


def test_sdist_holds_every_module_and_class_list(dists):
    sdist, _ = dists
    with tarfile.open(sdist) as tar:
        top = sdist.name.removesuffix(".tar.gz")
        names = {n.removeprefix(f"{top}/") for n in tar.getnames()}
    missing = sorted(_shipped_files() - names)
    assert missing == [], f"not in {sdist.name}: {missing}"
    assert {"pyproject.toml", "README.md"} <= names


def test_unpacked_wheel_imports_outside_the_repo_and_reads_its_class_lists(dists, tmp_path):
    _, wheel = dists
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import beam.runner, maivar_tf.resources as r; "
            "print(beam.runner.__file__, r.__file__, len(r.read_class_list('ucf51_classes.txt')))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runner, resources, count = proc.stdout.split()[-3:]
    assert Path(runner).is_relative_to(site) and Path(resources).is_relative_to(site)
    assert int(count) == 51
