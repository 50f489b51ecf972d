"""The ``gridlink`` command is a leaf: nothing imports it but the console script."""

from __future__ import annotations

import ast
from pathlib import Path

from gridlink.project import PROJECT_ROOT


def _imports_of(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def test_no_module_of_the_product_or_its_tools_imports_the_entry_point() -> None:
    importers = [
        str(path.relative_to(PROJECT_ROOT))
        for package in ("gridlink", "infra", "bench", "loadtest", "migrations", "tests/support")
        for path in sorted((PROJECT_ROOT / package).rglob("*.py"))
        if path != PROJECT_ROOT / "gridlink" / "cli.py" and "gridlink.cli" in _imports_of(path)
    ]
    assert importers == []


def test_the_check_sees_an_import_of_the_entry_point(tmp_path: Path) -> None:
    module = tmp_path / "importer.py"
    module.write_text("from gridlink.cli import main\n")
    assert "gridlink.cli" in _imports_of(module)
    module.write_text("from gridlink import cli\n")
    assert "gridlink.cli" in _imports_of(module)
