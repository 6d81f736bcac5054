"""The package's shape: no module imports one that imports it back.

The import graph comes from grimp (the engine of import-linter), which reads every import,
those inside functions too: a lazy import still closes a cycle when the function runs.
Imports made only for type checking (`if TYPE_CHECKING:`) are left out, as they never run.
"""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest


def import_cycles(package: str) -> list[list[str]]:
    """Each cycle once, as the chain of modules that leads back to where it started."""
    graph = grimp.build_graph(package, exclude_type_checking_imports=True, cache_dir=None)
    cycles: dict[frozenset[str], list[str]] = {}
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycles.setdefault(frozenset(back), [importer, *back])
    return list(cycles.values())


def test_no_module_of_wms_imports_one_that_imports_it_back() -> None:
    cycles = import_cycles("wms")
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(chain) for chain in cycles)


def test_a_cycle_closed_inside_a_function_is_found_and_a_type_checking_import_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "shapes"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text(
        "def make():\n    from shapes.circle import Circle\n\n    return Circle()\n"
    )
    (package / "circle.py").write_text("from shapes.base import make\n\nclass Circle:\n    pass\n")
    (package / "square.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from shapes.side import Side\n\n"
        "def square(side: 'Side') -> float:\n    return side.length**2\n"
    )
    (package / "side.py").write_text(
        "from shapes.square import square\n\nclass Side:\n    length = 1.0\n    area = square\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    assert import_cycles("shapes") == [["shapes.base", "shapes.circle", "shapes.base"]]
