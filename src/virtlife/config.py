"""Where virtlife keeps its files, read from the environment.

Only paths, defaults and the operator's settings file live here; no other I/O.

- ``VIRTLIFE_HOME``: the store (inventory + journal). Default ``/var/lib/virtlife``
  as root, ``~/.local/share/virtlife`` otherwise.
- ``VIRTLIFE_DB=postgresql://USER@HOST/DB``: keep the store in PostgreSQL instead of
  the SQLite file (over ``[store] url`` of the settings).
- ``VIRTLIFE_CACHE``: build caches such as the test guest. Default
  ``/var/cache/virtlife`` as root, ``~/.cache/virtlife`` otherwise. It must be readable
  by the QEMU user, which is why the root default is outside ``/root``.
- ``VIRTLIFE_ALLOW_TEST_URIS=1``: hosts of the inventory may have libvirt test driver
  URIs (``test:///default``, ``test:///PATH``: the driver reads the file PATH names).
  For tests only; unset, ``host add`` refuses them and a stored one is not opened.
- ``$VIRTLIFE_HOME/settings.toml`` (or ``VIRTLIFE_SETTINGS``): the operator's settings,
  each with a default (``Settings``)::

      [agent]
      sync_time = true        # set the guest clock after resume, restore, wakeup
      freeze_bound_s = 10     # the longest a quiesced snapshot keeps the guest frozen

      [paths]
      allowed_roots = []      # more directories where an API operator may name files,
                              # besides the images directory and the hosts' storage
                              # pools (``services.roots``)

      [store]
      url = "postgresql://virtlife@db1/virtlife"   # the store in PostgreSQL (default:
                                                   # the SQLite file in VIRTLIFE_HOME)

      [placement]
      reserve_pct = 10        # memory each host keeps free, in % of all it has: no VM
                              # is placed (maintenance, balancing) into it
      max_outgoing = 2        # migrations running at once from one host
      max_incoming = 2        # and to one host

      [balance]
      threshold_pct = 20      # `balance` acts when the most and least loaded hosts'
                              # loads differ by more than this (percentage points)
      max_moves = 5           # migrations in one balance plan
      cooldown_s = 1800       # a VM the balancer moved stays put this long
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from virtlife.errors import InvalidInput

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


def allow_test_uris() -> bool:
    """Whether inventory hosts may use libvirt's test driver (``VIRTLIFE_ALLOW_TEST_URIS``)."""
    return os.environ.get("VIRTLIFE_ALLOW_TEST_URIS") == "1"


@dataclass(frozen=True)
class Settings:
    """The operator's settings (see the module doc); every field has its default."""

    sync_time: bool = True
    freeze_bound_s: float = 10.0
    allowed_roots: tuple[str, ...] = ()
    store_url: str | None = None
    reserve_pct: float = 10.0
    max_outgoing: int = 2
    max_incoming: int = 2
    balance_threshold_pct: float = 20.0
    balance_max_moves: int = 5
    balance_cooldown_s: float = 1800.0


def store_url() -> str | None:
    """Where the store is when it is not the SQLite file: ``VIRTLIFE_DB``, else the
    settings' ``[store] url``; None for the SQLite file (a settings file that cannot be
    read counts as none: the command warns about it and uses the defaults)."""
    env = os.environ.get("VIRTLIFE_DB")
    if env:
        return env
    try:
        return load_settings().store_url
    except InvalidInput:
        return None


def settings_path() -> Path:
    env = os.environ.get("VIRTLIFE_SETTINGS")
    return Path(env) if env else home() / "settings.toml"


def load_settings(path: Path | None = None) -> Settings:
    """The settings file's values over the defaults; ``InvalidInput`` for a bad file."""
    where = path or settings_path()
    try:
        text = where.read_text()
    except FileNotFoundError:
        return Settings()
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInput(f"cannot read the settings in {where}: {err}") from err
    import tomllib  # only when there is a file to read: it costs every command ~5 ms

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InvalidInput(f"cannot read the settings in {where}: {err}") from err
    agent = data.get("agent", {})
    paths = data.get("paths", {})
    store = data.get("store", {})
    placement = data.get("placement", {})
    balance = data.get("balance", {})
    if not all(isinstance(t, dict) for t in (agent, paths, store, placement, balance)):
        raise InvalidInput(f"cannot read the settings in {where}: [agent], [paths], "
                           "[store], [placement] and [balance] are tables")
    unknown = ((set(data) - {"agent", "paths", "store", "placement", "balance"})
               | (set(balance) - {"threshold_pct", "max_moves", "cooldown_s"})
               | (set(agent) - {"sync_time", "freeze_bound_s"})
               | (set(paths) - {"allowed_roots"}) | (set(store) - {"url"})
               | (set(placement) - {"reserve_pct", "max_outgoing", "max_incoming"}))
    if unknown:
        raise InvalidInput(f"unknown setting(s) {', '.join(sorted(unknown))} in {where}")
    sync = agent.get("sync_time", True)
    bound = agent.get("freeze_bound_s", 10.0)
    if not isinstance(sync, bool):
        raise InvalidInput(f"agent.sync_time in {where} must be true or false")
    if isinstance(bound, bool) or not isinstance(bound, int | float) or not 0 < bound <= 600:
        raise InvalidInput(f"agent.freeze_bound_s in {where} must be a number of seconds "
                           "within 0 and 600")
    roots = paths.get("allowed_roots", [])
    if not isinstance(roots, list) or not all(
            isinstance(r, str) and r.startswith("/") and r.isprintable() for r in roots):
        raise InvalidInput(f"paths.allowed_roots in {where} must be a list of absolute "
                           'directory paths, e.g. ["/srv/vms"]')
    url = store.get("url")
    if url is not None and not isinstance(url, str):
        raise InvalidInput(f'store.url in {where} must be a string, e.g. '
                           '"postgresql://virtlife@db1/virtlife"')
    reserve = placement.get("reserve_pct", 10.0)
    if isinstance(reserve, bool) or not isinstance(reserve, int | float) or \
            not 0 <= reserve < 100:
        raise InvalidInput(f"placement.reserve_pct in {where} must be a percentage from 0 "
                           "up to (not including) 100")
    slots = {k: placement.get(k, 2) for k in ("max_outgoing", "max_incoming")}
    for key, value in slots.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
            raise InvalidInput(f"placement.{key} in {where} must be a whole number of "
                               "migrations from 1 to 64")
    threshold, moves, cooldown = _balance(balance, where)
    return Settings(sync_time=sync, freeze_bound_s=float(bound), allowed_roots=tuple(roots),
                    store_url=url or None, reserve_pct=float(reserve),
                    max_outgoing=slots["max_outgoing"], max_incoming=slots["max_incoming"],
                    balance_threshold_pct=threshold, balance_max_moves=moves,
                    balance_cooldown_s=cooldown)


def _balance(table: dict[str, object], where: Path) -> tuple[float, int, float]:
    """``[balance]``'s threshold, most moves and cool-down, checked."""
    threshold = table.get("threshold_pct", 20.0)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or \
            not 0 < threshold <= 100:
        raise InvalidInput(f"balance.threshold_pct in {where} must be a percentage above 0, "
                           "up to 100")
    moves = table.get("max_moves", 5)
    if isinstance(moves, bool) or not isinstance(moves, int) or not 1 <= moves <= 1000:
        raise InvalidInput(f"balance.max_moves in {where} must be a whole number of "
                           "migrations from 1 to 1000")
    cooldown = table.get("cooldown_s", 1800.0)
    if isinstance(cooldown, bool) or not isinstance(cooldown, int | float) or \
            not 0 <= cooldown <= 30 * 86400:
        raise InvalidInput(f"balance.cooldown_s in {where} must be a number of seconds "
                           "from 0 to 2592000 (30 days)")
    return float(threshold), moves, float(cooldown)
