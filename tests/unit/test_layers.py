"""Imports go one way: the entry point is a leaf, ``infra`` builds on ``gridlink``, tests on both.

``gridlink/cli.py`` (the console script) may import anything; nothing imports
it. ``gridlink`` never imports ``infra``. Nothing outside ``tests/`` imports
``tests``: the benchmarks and load tools share code with the tests through
``infra``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from gridlink.project import PROJECT_ROOT

ENTRY_POINT = PROJECT_ROOT / "gridlink" / "cli.py"


def imported_modules(source: Path) -> set[str]:
    """Return every absolute module a file imports, at any depth of its code.

    ``from a import b`` counts as importing ``a`` and ``a.b`` (``b`` may be a module).
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def within(package: str, module: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def importers(folders: tuple[str, ...], package: str) -> dict[str, list[str]]:
    """Return each module under ``folders`` (but the entry point) that imports ``package``."""
    modules = [
        path
        for folder in folders
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py"))
        if path != ENTRY_POINT
    ]
    assert len(modules) > 20  # the walk found the code, not an empty directory
    found = {
        str(path.relative_to(PROJECT_ROOT)): sorted(
            module for module in imported_modules(path) if within(package, module)
        )
        for path in modules
    }
    return {path: modules for path, modules in found.items() if modules}


def test_the_walk_sees_every_form_of_import_at_any_depth(tmp_path: Path) -> None:
    late = tmp_path / "late.py"
    late.write_text("def f():\n    from infra.status import database_rows\n")
    plain = tmp_path / "plain.py"
    plain.write_text("import infra\nimport infrastructure\nfrom gridlink import cli\n")

    assert "infra.status" in imported_modules(late)
    assert {m for m in imported_modules(plain) if within("infra", m)} == {"infra"}
    assert "gridlink.cli" in imported_modules(plain)


def test_no_gridlink_module_but_the_entry_point_imports_infra() -> None:
    assert importers(("gridlink",), "infra") == {}


def test_nothing_imports_the_entry_point() -> None:
    """Tests of the command itself call its ``main`` as the console script does."""
    folders = ("gridlink", "infra", "bench", "loadtest", "migrations", "tests/support")
    assert importers(folders, "gridlink.cli") == {}


def test_nothing_outside_the_tests_imports_them() -> None:
    assert importers(("gridlink", "infra", "bench", "loadtest", "migrations"), "tests") == {}
