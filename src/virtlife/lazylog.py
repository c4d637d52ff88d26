"""Module loggers that import ``logging`` only when a record can be emitted.

``logging`` (with traceback, string and weakref) costs a cold ``virtlife list`` or
``state`` several ms, and those commands normally log nothing a user would see. A
module on their path writes ``log = get_logger(__name__)`` instead of
``logging.getLogger(__name__)``; the ``LazyLogger`` it gets behaves as that logger:

- while no one has imported ``logging``, no one can have configured it: the effective
  level is the root logger's default, WARNING, so ``debug`` and ``info`` records are
  dropped, as ``logging`` itself would drop them, without importing it;
- anything else (a warning, an exception, ``isEnabledFor``, ``setLevel``...) imports
  ``logging``, applies what ``virtlife.logs`` deferred (``setup_logging(...,
  defer=True)``), and from then on every call goes to ``logging.getLogger(name)``
  (records name the caller's line, not this module's).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    import logging
    from typing import Any


class LazyLogger:
    """``logging.getLogger(name)``, looked up (and ``logging`` imported) on first need."""

    __slots__ = ("_logger", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: logging.Logger | None = None

    def _real(self) -> logging.Logger:
        if self._logger is None:
            import logging

            logs = sys.modules.get("virtlife.logs")
            if logs is not None:
                logs.apply_deferred()
            self._logger = logging.getLogger(self.name)
        return self._logger

    def _quiet(self) -> bool:
        """True while ``logging`` is not loaded: below WARNING nothing is emitted."""
        return self._logger is None and "logging" not in sys.modules

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        if not self._quiet():
            self._real().debug(msg, *args, **_caller(kwargs))

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        if not self._quiet():
            self._real().info(msg, *args, **_caller(kwargs))

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._real().warning(msg, *args, **_caller(kwargs))

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._real().error(msg, *args, **_caller(kwargs))

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._real().exception(msg, *args, **_caller(kwargs))

    def critical(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._real().critical(msg, *args, **_caller(kwargs))

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        self._real().log(level, msg, *args, **_caller(kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)

    def __repr__(self) -> str:
        return f"<LazyLogger {self.name}>"


def _caller(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with one more frame skipped: the record names our caller's line."""
    kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
    return kwargs


def get_logger(name: str) -> LazyLogger:
    """The logger of module ``name`` (``__name__``), imported lazily."""
    return LazyLogger(name)
