"""The layering promises, checked on the source: who may import what."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "virtlife"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules(under: str = "") -> list[Path]:
    return sorted((SRC / under).rglob("*.py"))


def test_libvirt_is_imported_in_one_module() -> None:
    importers = [p.relative_to(SRC).as_posix() for p in _modules()
                 if {"libvirt", "libvirt_qemu"} & _imports(p)]
    assert importers == ["hypervisor/libvirt_api.py"]


@pytest.mark.parametrize("package", ["cli", "api"])
def test_front_ends_reach_libvirt_only_through_services(package: str) -> None:
    for path in _modules(package):
        bad = {m for m in _imports(path) if m.startswith("virtlife.hypervisor")}
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


@pytest.mark.parametrize("package", ["hypervisor", "store", "xml", "lab"])
def test_lower_layers_never_import_upward(package: str) -> None:
    for path in _modules(package):
        bad = {m for m in _imports(path)
               if m.startswith(("virtlife.services", "virtlife.cli", "virtlife.api"))}
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_every_module_opens_with_a_docstring() -> None:
    missing = [p.relative_to(SRC).as_posix() for p in _modules()
               if ast.get_docstring(ast.parse(p.read_text())) is None]
    assert missing == []


def test_no_module_is_over_800_lines() -> None:
    long = {p.relative_to(SRC).as_posix(): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > 800}
    assert long == {}
