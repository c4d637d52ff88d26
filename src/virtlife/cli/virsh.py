"""virsh's spellings that operators type out of habit: a click ``Command`` that answers
them, and one resolver for an option that two spellings can give.

A virsh option that means exactly what virtlife does is accepted by the command itself
(a hidden option, e.g. ``migrate --live``); this module only answers the rest:
``VirshCommand`` turns click's "No such option" for a virsh spelling into a sentence
that names virtlife's own (``--copy-storage-synchronous-writes`` stays click's
"No such option"), and refuses a virsh bare flag where virtlife's option of the same
name takes a value (``--postcopy``, ``--parallel``) before click would read the next
word as that value. ``one_value`` resolves a virtlife option given again by its virsh
alias, and refuses the two when they disagree; ``HintedChoice`` answers a virsh word
given to a choice (``shutdown --mode initctl``). It knows no command's meaning: the
tables are the commands'.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import click

T = TypeVar("T")


def bare_flag(args: Sequence[str], takes_value: Mapping[str, str]) -> str | None:
    """The first option of ``takes_value`` given with no value after it (at the end, or
    followed by another option), before any ``--``."""
    for i, arg in enumerate(args):
        if arg == "--":
            return None
        if arg in takes_value:
            after = args[i + 1] if i + 1 < len(args) else None
            if after is None or (after.startswith("-") and len(after) > 1):
                return arg
    return None


class VirshCommand(click.Command):
    """A command that answers virsh's spellings: ``virsh_only`` maps a virsh option that
    virtlife's command lacks to what to type instead; ``virsh_bare`` maps an option that
    takes a value here but is a bare flag in virsh to what to type instead."""

    def __init__(self, *args: Any, virsh_only: Mapping[str, str] | None = None,
                 virsh_bare: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.virsh_only = dict(virsh_only or {})
        self.virsh_bare = dict(virsh_bare or {})

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        bare = bare_flag(args, self.virsh_bare)
        if bare is not None:
            raise click.UsageError(f"{bare} takes a value here: {self.virsh_bare[bare]}", ctx)
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as err:
            name = err.option_name.split("=", 1)[0]
            if name not in self.virsh_only:
                raise
            raise click.UsageError(f"virsh's {name} is not an option of virtlife "
                                   f"{self.name}: {self.virsh_only[name]}", ctx) from None


def one_value(ctx: click.Context, name: str, value: T, aliases: Mapping[str, T | None]) -> T:
    """The value of option ``name`` (parameter ``name`` without dashes), given directly or
    by one of its virsh ``aliases`` (each alias's value, or None when it was not given);
    two spellings that disagree are a usage error."""
    given = {alias: v for alias, v in aliases.items() if v is not None}
    param = name.lstrip("-").replace("-", "_")
    source = ctx.get_parameter_source(param)
    if source is click.core.ParameterSource.COMMANDLINE:
        given = {name: value, **given}
    if len(set(map(repr, given.values()))) > 1:
        spelled = ", ".join(f"{k} ({v})" for k, v in given.items())
        raise click.UsageError(f"{spelled} ask for different things: give one", ctx)
    return next(iter(given.values())) if given else value


class HintedChoice(click.Choice[str]):
    """``click.Choice`` whose refusal of a virsh word says what to type instead:
    ``hint(value)`` returns that sentence, or None for click's own message."""

    def __init__(self, choices: Sequence[str], hint: Callable[[str], str | None]) -> None:
        super().__init__(choices)
        self.hint = hint

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        if isinstance(value, str) and value not in self.choices:
            hint = self.hint(value)
            if hint is not None:
                self.fail(hint, param, ctx)
        return str(super().convert(value, param, ctx))
