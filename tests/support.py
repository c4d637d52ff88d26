"""Constants shared by the test suites (a module of its own: with no __init__.py
files in tests/, ``import conftest`` could pick up tests/integration/conftest.py)."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
NODE_URI = f"test://{DATA / 'node.xml'}"
NODE2_URI = f"test://{DATA / 'node2.xml'}"
UNREACHABLE_URI = "qemu+tcp://127.0.0.1:1/system"
