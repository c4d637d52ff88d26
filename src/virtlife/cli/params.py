"""Click parameter types for the values users type: checked when parsed, never later.

A value out of range is a usage error (exit 64) naming the option, before any host or
the store is touched: no negative, zero, NaN or infinite timeouts, no counts below one,
no number too big for the layer below (SQLite's integers, ``time_t`` in a wait).
Holds no policy beyond "what a sane value of this kind is".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from virtlife.errors import InvalidInput
from virtlife.paths import check_path
from virtlife.xml.domain import validate_vm_name

F = TypeVar("F", bound=Callable[..., Any])

MAX_SECONDS = 7 * 24 * 3600.0  # a week: longer than any wait; beyond it Event.wait overflows
MAX_ROWS = 2**31 - 1


class Seconds(click.ParamType[float]):
    """A positive, finite number of seconds, at most ``MAX_SECONDS``."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, bool):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or seconds <= 0:
            self.fail(f"{value!r} is not a positive number of seconds", param, ctx)
        if seconds > MAX_SECONDS:
            self.fail(f"{value!r} seconds is more than a week ({MAX_SECONDS:.0f} s)", param,
                      ctx)
        return seconds


class NewVMName(click.ParamType[str]):
    """The name of a VM virtlife is to create (``xml.domain.validate_vm_name``)."""

    name = "name"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        try:
            return validate_vm_name(str(value))
        except InvalidInput as err:
            self.fail(str(err), param, ctx)


class CheckedPath(click.Path):
    """``click.Path`` (a ``pathlib.Path`` unless told otherwise) whose value passed
    ``paths.check_path``: not empty, no control character. Every path option and
    argument is one of these."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("path_type", Path)
        super().__init__(**kwargs)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            try:
                check_path(value)
            except InvalidInput as err:
                self.fail(str(err), param, ctx)
        return super().convert(value, param, ctx)


class FilePath(CheckedPath):
    """A file path (never a directory) that is not empty."""

    def __init__(self, *, exists: bool = False) -> None:
        super().__init__(exists=exists, dir_okay=False)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if value == "":
            self.fail("an empty path names no file", param, ctx)
        return super().convert(value, param, ctx)


SECONDS = Seconds()
NEW_VM_NAME = NewVMName()
COUNT = click.IntRange(min=1, max=MAX_ROWS)
MEMORY_MIB = click.IntRange(min=1)  # libvirt refuses what no host has
VCPUS = click.IntRange(min=1, max=4096)


def timeout_option(f: F) -> F:
    return click.option("--timeout", "timeout_s", type=SECONDS, default=None,
                        help="Seconds to wait for the expected state.")(f)
