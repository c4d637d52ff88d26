"""Logging set-up for front ends: Python's ``logging``, one logger per module under
``virtlife`` (``logging.getLogger(__name__)``), configured here and nowhere else.

``setup_logging(verbosity, log_file)``: on stderr, warnings by default, INFO with a
verbosity of 1 (``-v``), DEBUG from 2 (``-vv``); a log file gets INFO and up (DEBUG
from 2) whatever stderr shows. Every line carries the time, level, logger and thread.
Only the ``virtlife`` logger is touched, and calling it again replaces what an earlier
call installed (a process may run several commands, as the tests do). Library modules
only log; they never call this.

``setup_logging(0, None, defer=True)`` (the CLI's hot ``list``/``state``) imports
nothing while ``logging`` is not loaded yet: the set-up is applied when a module's
``lazylog`` logger first needs ``logging`` (``apply_deferred``), which it never does
for the debug and info records that stderr would not show anyway.
"""

from __future__ import annotations

import sys
import threading

from virtlife.errors import InvalidInput

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    import logging
    from pathlib import Path
    from typing import TextIO

ROOT = "virtlife"
FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(threadName)s] %(message)s"

_installed: list[logging.Handler] = []
_deferred: list[int] = []  # the verbosity of a deferred stderr-only set-up
_deferred_lock = threading.Lock()


def _stderr_handler() -> logging.Handler:
    """A handler writing to whatever ``sys.stderr`` is at the time (tests and click
    swap it)."""
    import logging

    class _Stderr(logging.StreamHandler["TextIO"]):
        def __init__(self) -> None:
            super().__init__(sys.stderr)

        @property
        def stream(self) -> TextIO:
            return sys.stderr

        @stream.setter
        def stream(self, _value: TextIO) -> None:
            pass

    return _Stderr()


def level_for(verbosity: int) -> int:
    """The stderr level for ``-v`` given ``verbosity`` times."""
    import logging

    if verbosity >= 2:
        return logging.DEBUG
    return logging.INFO if verbosity == 1 else logging.WARNING


def setup_logging(verbosity: int = 0, log_file: Path | None = None, *,
                  defer: bool = False) -> None:
    """Send the ``virtlife`` loggers' records to stderr and, if given, to ``log_file``.

    An unusable ``log_file`` (a directory, no permission) is ``InvalidInput``. With
    ``defer``, a stderr-only set-up waits (see the module doc) while ``logging`` is not
    loaded.
    """
    reset_logging()
    if defer and verbosity == 0 and log_file is None and "logging" not in sys.modules:
        _deferred.append(verbosity)
        return
    import logging

    formatter = logging.Formatter(FORMAT)
    handlers: list[logging.Handler] = []
    stderr = _stderr_handler()
    stderr.setLevel(level_for(verbosity))
    handlers.append(stderr)
    if log_file is not None:
        try:
            file_handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as err:
            raise InvalidInput(
                f"cannot write the log file {log_file}: {err.strerror or err}") from err
        file_handler.setLevel(min(logging.INFO, level_for(verbosity)))
        handlers.append(file_handler)
    logger = logging.getLogger(ROOT)
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
        _installed.append(handler)
    lowest = min(h.level for h in handlers)
    # Lower the logger only when asked for more than warnings; otherwise leave its level
    # alone, so that it keeps following the root logger (and pytest's caplog).
    logger.setLevel(lowest if lowest < logging.WARNING else logging.NOTSET)


def apply_deferred() -> None:
    """Install the set-up ``setup_logging(defer=True)`` left for later, if any (a second
    thread asking meanwhile waits until it is installed)."""
    with _deferred_lock:
        if _deferred:
            setup_logging(_deferred.pop())


def reset_logging() -> None:
    """Remove (and close) what ``setup_logging`` installed (or cancel a deferred one)."""
    _deferred.clear()
    if "logging" not in sys.modules:
        return  # nothing can have been installed
    import logging

    logger = logging.getLogger(ROOT)
    while _installed:
        handler = _installed.pop()
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.NOTSET)
