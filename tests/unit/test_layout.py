"""The repository's shape (DESIGN.md "Layout"): each part a top-level package imported from
this repository, never from an unrelated installed package of the same short name, and
dependencies pointing down."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("dancu", "api", "streams", "tracing", "registry", "gate", "infra")
IO_LIBRARIES = {
    "aiokafka",
    "faust",
    "redis",
    "clickhouse_connect",
    "chdb",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx",
    "cv2",
    "zxingcpp",
    "sqlite3",
    "socket",
    "subprocess",
}
# Which top-level packages each package may import (dependencies point down).
ALLOWED = {
    "dancu": set(PACKAGES),
    "api": {"api", "infra", "registry", "tracing"},
    "streams": {"streams", "infra", "registry", "tracing"},
    "gate": {"gate", "registry", "tracing"},
    "infra": {"infra", "registry", "tracing"},
    "registry": {"registry"},
    "tracing": {"tracing", "registry"},
}


def _imports(package: str) -> dict[str, set[str]]:
    """Top-level module names imported by each file of a package."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_top_level_is_the_design_card() -> None:
    for name in (*PACKAGES, "tests", "bench", "pyproject.toml", "docker-compose.yml"):
        assert (ROOT / name).exists(), name
    for moved in ("api", "streams", "tracing", "registry", "gate", "infra", "cli"):
        assert not (ROOT / "dancu" / moved).exists(), f"dancu/{moved} should not exist"


def test_each_package_is_imported_from_this_repository_whatever_the_working_directory(
    tmp_path: Path,
) -> None:
    # From another directory, so the answer comes from the installed distribution's
    # mapping, not from the test runner's sys.path[0]. A stray module of the same short
    # name in the working directory must not win either.
    (tmp_path / "api.py").write_text("raise ImportError('the wrong api')\n")
    code = (
        "import importlib, json, sys; sys.path.remove('') if '' in sys.path else None; "
        f"print(json.dumps({{n: importlib.import_module(n).__file__ for n in {PACKAGES!r}}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    origins = json.loads(out.stdout)
    for name in PACKAGES:
        assert Path(origins[name]).resolve() == ROOT / name / "__init__.py", (name, origins[name])


@pytest.mark.parametrize("package", ["registry", "tracing"])
def test_the_domain_imports_no_io_library(package: str) -> None:
    for path, names in _imports(package).items():
        assert not names & IO_LIBRARIES, f"{path} imports {sorted(names & IO_LIBRARIES)}"


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_down(package: str) -> None:
    others = set(PACKAGES) - ALLOWED[package]
    for path, names in _imports(package).items():
        assert not names & others, f"{path} imports {sorted(names & others)}"
