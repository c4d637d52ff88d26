"""The one check of a file path a caller gives: a CLI argument, an API field, a library
call. Every path goes through ``check_path`` before anything uses it.

A path must not be empty and must not hold a control character (C0, DEL or C1): libvirt
keeps a path in XML, where a newline or tab in an attribute is read back as a space (a
CD-ROM attached from ``/isos/a<newline>b.iso`` is defined as ``/isos/a b.iso`` and the
VM no longer starts), and a terminal shows such a name garbled. Refused as bad input
(``InvalidInput``, exit 64), never passed on. This module imports nothing but
``errors``: the CLI's parameter types use it on the cold path.
"""

from __future__ import annotations

from virtlife.errors import InvalidInput


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
