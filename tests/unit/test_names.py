"""One name means one thing: no two modules of src/virtlife define the same top-level type.

A class, or a type alias (``X: TypeAlias = ...``, or ``X = Callable[...]`` and the like
with a capitalised name), is a name a reader meets in signatures all over the code; when
two modules define it, an import decides which one a file means. Type variables are left
out on purpose: ``T = TypeVar("T")`` is a type parameter of its own module's generic
functions, never imported, and every module is expected to spell it the same way.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "virtlife"

_ALIAS_VALUES = (ast.Subscript, ast.BinOp, ast.Attribute, ast.Name)  # X[..], A | B, a.B, B


def _type_names(tree: ast.Module) -> list[str]:
    """The classes and type aliases a module defines at its top level."""
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if "TypeAlias" in ast.unparse(node.annotation):
                names.append(node.target.id)
        elif (isinstance(node, ast.Assign) and len(node.targets) == 1
              and isinstance(node.targets[0], ast.Name)):
            name = node.targets[0].id
            if name[:1].isupper() and not name.isupper() and isinstance(node.value,
                                                                          _ALIAS_VALUES):
                names.append(name)
    return names


def duplicates(root: Path) -> dict[str, list[str]]:
    """Each type name defined by more than one module under ``root``, with the modules."""
    where: dict[str, list[str]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        for name in _type_names(ast.parse(path.read_text())):
            where[name].append(path.relative_to(root).as_posix())
    return {name: mods for name, mods in where.items() if len(mods) > 1}


def test_no_two_modules_define_the_same_type_name() -> None:
    assert duplicates(SRC) == {}


def test_the_scan_sees_classes_and_aliases_but_not_type_variables(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "a.py").write_text(
        "from typing import Callable, TypeAlias, TypeVar\n"
        "T = TypeVar('T')\nLIMIT = 3\n"
        "class Call: ...\nSink = Callable[[str], None]\nRow: TypeAlias = dict\n")
    (tmp_path / "pkg" / "b.py").write_text(
        "from typing import TypeVar\nT = TypeVar('T')\nLIMIT = 4\n"
        "class Call: ...\nSink = list[str]\nRow = dict[str, int]\n"
        "def f() -> None:\n    class Inner: ...\n")
    (tmp_path / "c.py").write_text("class Inner: ...\n")
    assert duplicates(tmp_path) == {"Call": ["a.py", "pkg/b.py"], "Sink": ["a.py", "pkg/b.py"],
                                    "Row": ["a.py", "pkg/b.py"]}
