"""Media commands: build the virtio-win driver ISO and attach or detach ISO CD-ROMs.

Thin click commands over ``services.isos`` and ``services.media``; they print only.
"""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
