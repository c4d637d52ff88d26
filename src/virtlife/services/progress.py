"""Progress reporting for long operations, as plain values passed to a callback.

A service takes ``progress: ProgressSink | None`` and calls it with ``Update`` values;
the CLI prints them, a REST API can forward them over a websocket. Nothing here
does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Update:
    """One step of an operation: ``stage`` is a short word, ``message`` a sentence."""

    vm: str
    stage: str
    message: str
    fraction: float | None = None  # 0..1 where the operation can tell
    op_id: str = ""  # the operation it belongs to
    # The values behind ``message`` where a display wants them (a migration's progress:
    # ``JobSample.as_dict()``; a policy step: ``Decision.as_dict()``); JSON-ready.
    detail: Mapping[str, Any] | None = None


ProgressSink = Callable[[Update], None]  # where a service sends its ``Update`` values


def report(progress: ProgressSink | None, vm: str, stage: str, message: str,
           fraction: float | None = None) -> None:
    if progress is not None:
        progress(Update(vm, stage, message, fraction))
