"""The package's shape: no module imports one that imports it back, and the rules its modules share.

The import graph comes from grimp (the engine of import-linter), which reads every import,
those inside functions too: a lazy import still closes a cycle when the function runs.
Imports made only for type checking (`if TYPE_CHECKING:`) are left out, as they never run.
"""

from __future__ import annotations

import ast
import re
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


WMS = Path(__file__).resolve().parents[1] / "src" / "wms"
# The registry's own modules: the MLflow registry and the MLflow calls it is built on.
REGISTRY_OWN = {"registry.py", "registry_mlflow.py"}
REGISTRY_CLASS = re.compile(r"\b(MlflowRegistry|Registry)\b")


def registry_private_uses(source: str) -> list[int]:
    """The lines where `source` reads a private attribute (`._name`) of a registry object, or of
    anything reached through one: a name annotated as a registry, assigned one, or
    `MlflowRegistry(...)` itself."""
    tree = ast.parse(source)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            if REGISTRY_CLASS.search(ast.unparse(node.annotation)):
                names.add(node.arg)
        elif isinstance(node, ast.AnnAssign) and REGISTRY_CLASS.search(ast.unparse(node.annotation)):
            names.add(ast.unparse(node.target).rsplit(".", 1)[-1])
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                pairs = (
                    zip(target.elts, node.value.elts, strict=False)
                    if (isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple))
                    else [(target, node.value)]
                )
                names |= {ast.unparse(t).rsplit(".", 1)[-1] for t, v in pairs if _makes_registry(v)}

    def is_registry(node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in names
        if isinstance(node, ast.Attribute):
            return node.attr in names or is_registry(node.value)
        return _makes_registry(node)

    return sorted(
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and is_registry(node.value)
    )


def _makes_registry(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and bool(
        REGISTRY_CLASS.fullmatch(ast.unparse(node.func).split(".")[-1])
    )


def test_no_module_outside_the_registry_uses_a_private_attribute_of_a_registry() -> None:
    """The registry's interface is its public methods: a module that reaches past them breaks
    when the registry's inside changes, and bypasses what its methods guarantee."""
    found = [
        f"{path.relative_to(WMS.parent)}:{line}"
        for path in sorted(WMS.rglob("*.py"))
        if path.relative_to(WMS).as_posix() not in REGISTRY_OWN
        for line in registry_private_uses(path.read_text())
    ]
    assert not found, "private attributes of a registry used at:\n" + "\n".join(found)


def test_a_private_attribute_reached_through_a_registry_is_found_and_one_of_another_object_is_not() -> None:
    source = (
        "from wms.registry import MlflowRegistry\n"
        "def prune(registry: MlflowRegistry, other: Thing) -> None:\n"
        "    registry._call('x', registry.client.get)\n"  # 3
        "    other._client = 1\n"
        "    self._client = 2\n"
        "def later(project):\n"
        "    reg, now = MlflowRegistry(project), 0\n"
        "    reg.get('1')\n"
        "    return reg._client.get_run('r'), MlflowRegistry(project)._experiment_id()\n"  # 9 and 9
        "class Job:\n"
        "    registry: 'Registry'\n"
        "    def run(self):\n"
        "        return self.registry._record(1), self._other\n"  # 13
    )
    assert registry_private_uses(source) == [3, 9, 9, 13]


def unbounded_image_opens(source: str) -> list[int]:
    """Lines where `Image.open` is called without `formats=`: Pillow then picks any of its formats by
    the file's content, EPS (Ghostscript) among them."""
    return sorted(
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and ast.unparse(node.func) in ("Image.open", "PIL.Image.open")
        and not any(keyword.arg == "formats" for keyword in node.keywords)
    )


def test_every_image_wms_decodes_is_opened_in_named_formats() -> None:
    found = [
        f"{path.relative_to(WMS.parent)}:{line}"
        for path in sorted(WMS.rglob("*.py"))
        for line in unbounded_image_opens(path.read_text())
    ]
    assert not found, (
        "Image.open without formats= (wms.train.preprocess.image_file names them):\n" + "\n".join(found)
    )


def test_an_image_opened_without_formats_is_found_and_one_with_them_is_not() -> None:
    source = (
        "from PIL import Image\n"
        "with Image.open(path) as img:\n"  # 2
        "    pass\n"
        "img = Image.open(io.BytesIO(data), formats=('PNG',))\n"
        "other = PIL.Image.open(p)\n"  # 5
        "zipfile.open(p)\n"
    )
    assert unbounded_image_opens(source) == [2, 5]
