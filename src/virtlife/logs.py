"""Logging set-up for front ends: Python's ``logging``, one logger per module under
``virtlife`` (``logging.getLogger(__name__)``), configured here and nowhere else.

``setup_logging(verbosity, log_file)``: on stderr, warnings by default, INFO with a
verbosity of 1 (``-v``), DEBUG from 2 (``-vv``); a log file gets INFO and up (DEBUG
from 2) whatever stderr shows. Every line carries the time, level, logger and thread.
Only the ``virtlife`` logger is touched, and calling it again replaces what an earlier
call installed (a process may run several commands, as the tests do). Library modules
only log; they never call this.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TextIO

from virtlife.errors import InvalidInput

ROOT = "virtlife"
FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(threadName)s] %(message)s"

_installed: list[logging.Handler] = []


class _Stderr(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at the time (tests and click swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def level_for(verbosity: int) -> int:
    """The stderr level for ``-v`` given ``verbosity`` times."""
    if verbosity >= 2:
        return logging.DEBUG
    return logging.INFO if verbosity == 1 else logging.WARNING


def setup_logging(verbosity: int = 0, log_file: Path | None = None) -> None:
    """Send the ``virtlife`` loggers' records to stderr and, if given, to ``log_file``.

    An unusable ``log_file`` (a directory, no permission) is ``InvalidInput``.
    """
    reset_logging()
    formatter = logging.Formatter(FORMAT)
    handlers: list[logging.Handler] = []
    stderr = _Stderr()
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


def reset_logging() -> None:
    """Remove (and close) what ``setup_logging`` installed."""
    logger = logging.getLogger(ROOT)
    while _installed:
        handler = _installed.pop()
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.NOTSET)
