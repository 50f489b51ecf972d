"""``infra`` builds on ``gridlink``, never the other way: only the command line reaches out."""

from __future__ import annotations

import ast
from pathlib import Path

import gridlink

PACKAGE = Path(gridlink.__file__).parent
# The `gridlink` command drives the local cluster and staging, so it may import infra.
ENTRY_POINT = PACKAGE / "cli.py"


def imported_modules(source: Path) -> set[str]:
    """Return every absolute module name a file imports, at any depth of its code."""
    tree = ast.parse(source.read_text(), filename=str(source))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def imports_infra(module: str) -> bool:
    return module == "infra" or module.startswith("infra.")


def test_the_walk_sees_an_import_of_infra_wherever_it_is(tmp_path: Path) -> None:
    late = tmp_path / "late.py"
    late.write_text("def f():\n    from infra.status import database_rows\n")
    plain = tmp_path / "plain.py"
    plain.write_text("import infra\nimport infrastructure\n")

    assert {m for m in imported_modules(late) if imports_infra(m)} == {"infra.status"}
    assert {m for m in imported_modules(plain) if imports_infra(m)} == {"infra"}


def test_no_gridlink_module_but_the_entry_point_imports_infra() -> None:
    modules = sorted(path for path in PACKAGE.rglob("*.py") if path != ENTRY_POINT)
    assert len(modules) > 20  # the walk found the package, not an empty directory

    offenders = {
        str(path.relative_to(PACKAGE.parent)): sorted(filter(imports_infra, imported_modules(path)))
        for path in modules
    }

    assert {path: found for path, found in offenders.items() if found} == {}
