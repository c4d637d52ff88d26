"""A package's exported names, imported from their modules on first use (PEP 562).

``__getattr__ = lazy_exports(__name__, {"Name": "module", ...})`` in a package's
``__init__`` makes ``from package import Name`` import ``package.module`` only then,
so that importing one module of the package does not load the others. Each name is
looked up once: it is stored in the package's namespace after its first use.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], object]:
    """The module ``__getattr__`` of ``package`` whose names live in ``homes``
    (exported name -> module of the package)."""

    def __getattr__(name: str) -> object:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        from importlib import import_module

        value = getattr(import_module(f"{package}.{home}"), name)
        setattr(sys.modules[package], name, value)  # looked up once
        return value

    return __getattr__
