"""Where virtlife keeps its files, read from the environment.

Only paths and defaults live here; no I/O beyond creating directories on request.

- ``VIRTLIFE_HOME``: the store (inventory + journal). Default ``/var/lib/virtlife``
  as root, ``~/.local/share/virtlife`` otherwise.
- ``VIRTLIFE_CACHE``: build caches such as the test guest. Default
  ``/var/cache/virtlife`` as root, ``~/.cache/virtlife`` otherwise. It must be readable
  by the QEMU user, which is why the root default is outside ``/root``.
"""

from __future__ import annotations

import os
from pathlib import Path

LOCAL_HOST_NAME = "local"
LOCAL_URI = "qemu:///system"


def _is_root() -> bool:
    return os.geteuid() == 0


def home() -> Path:
    """The directory holding the SQLite store."""
    env = os.environ.get("VIRTLIFE_HOME")
    if env:
        return Path(env)
    if _is_root():
        return Path("/var/lib/virtlife")
    return Path.home() / ".local" / "share" / "virtlife"


def cache_dir() -> Path:
    """The directory holding build caches (test guest, downloaded packages)."""
    env = os.environ.get("VIRTLIFE_CACHE")
    if env:
        return Path(env)
    if _is_root():
        return Path("/var/cache/virtlife")
    return Path.home() / ".cache" / "virtlife"


def store_path() -> Path:
    return home() / "virtlife.db"


def guest_dir() -> Path:
    """Where the built test guest (vmlinuz, initrd.img, disk.qcow2) lives."""
    return cache_dir() / "guest"


def images_dir() -> Path:
    """Where lab VMs get their own disk copies (QEMU takes write locks on images).

    ``VIRTLIFE_IMAGES`` overrides; the default sits under the cache so that it stays
    readable by the QEMU user even when ``VIRTLIFE_HOME`` points at a private tmp dir.
    """
    env = os.environ.get("VIRTLIFE_IMAGES")
    return Path(env) if env else cache_dir() / "images"
