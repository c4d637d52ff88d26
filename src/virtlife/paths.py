"""The one check of a file path a caller gives: a CLI argument, an API field, a library
call. Every path goes through ``check_path`` before anything uses it; a path an API
operator gives also goes through ``within_roots``, the allowed-roots policy.

A path must not be empty and must not hold a control character (C0, DEL or C1): libvirt
keeps a path in XML, where a newline or tab in an attribute is read back as a space (a
CD-ROM attached from ``/isos/a<newline>b.iso`` is defined as ``/isos/a b.iso`` and the
VM no longer starts), and a terminal shows such a name garbled. Refused as bad input
(``InvalidInput``, exit 64), never passed on. This module imports nothing but
``errors`` (and ``os.path``): the CLI's parameter types use it on the cold path.

``within_roots`` is a pure function of the path, the roots and a resolver: the path
and the roots are resolved alike (``os.path.realpath`` for files on this machine, so
that neither ``..`` nor a symbolic link leads out; ``os.path.normpath`` for another
machine's, whose links this machine cannot see), and the path must then lie strictly
inside one root. Which roots a host has is ``services.roots``' to say.
"""

from __future__ import annotations

import os.path
from collections.abc import Callable, Iterable

from virtlife.errors import InvalidInput, NotPermitted


def _control(text: str) -> tuple[int, str] | None:
    """The first control character in ``text`` and its position, if any."""
    for at, ch in enumerate(text):
        code = ord(ch)
        if code < 0x20 or 0x7F <= code <= 0x9F:
            return at, ch
    return None


def check_path(path: str, what: str = "the path") -> str:
    """``path`` unchanged if it may be used as a file path; ``InvalidInput`` else.

    ``what`` names it in the message ("the ISO", "--out")."""
    if not path:
        raise InvalidInput(f"{what} is empty: give a file path")
    found = _control(path)
    if found is not None:
        at, ch = found
        raise InvalidInput(
            f"{what} {path!r} holds a control character ({ch!r} at position {at + 1}); "
            "a path must not, since libvirt's XML would not keep it: rename the file, "
            "or give a path without one")
    return path


def absolute_path(path: str, what: str = "the path") -> str:
    """``path`` normalised, if it is a usable absolute path; ``InvalidInput`` else."""
    check_path(path, what)
    if not os.path.isabs(path):
        raise InvalidInput(
            f"{what} {path!r} is not an absolute path: give the full path on the VM's host "
            "(a relative one would be relative to where the server runs)")
    return os.path.normpath(path)


def inside(path: str, root: str) -> bool:
    """Whether ``path`` lies strictly inside ``root`` (both absolute and normalised)."""
    return path != root and os.path.commonpath([path, root]) == root


def within_roots(path: str, roots: Iterable[str], what: str = "the path", *,
                 resolve: Callable[[str], str] = os.path.realpath,
                 where: str = "") -> str:
    """``path`` resolved, when it is absolute and lies inside one of ``roots`` once both
    are resolved; ``InvalidInput`` for no usable absolute path, ``NotPermitted`` for one
    outside every root. ``where`` names the machine in the message ("on host hv1")."""
    absolute_path(path, what)
    real = resolve(path)
    resolved = [resolve(r) for r in roots if r and os.path.isabs(r)]
    if any(inside(real, root) for root in resolved):
        return real
    shown = ", ".join(sorted(set(resolved))) or "none"
    via = f" (it resolves to {real})" if real != path else ""
    raise NotPermitted(
        f"{what} {path}{via} is outside the allowed roots{' ' + where if where else ''} "
        f"({shown}): an operator token may name files only under them; put the file "
        "there, or ask an admin (who may add a root under [paths] allowed_roots in "
        "settings.toml)")
