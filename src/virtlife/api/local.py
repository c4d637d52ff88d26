"""The server's local socket: ``virtlife list`` and ``state`` answered for the CLI.

While ``virtlife serve`` runs over the inventory, it listens on ``serve.sock`` in the
store's directory (mode 0600, so only its own user and root may connect; the peer's
uid is checked again with ``SO_PEERCRED``). One JSON request line, one answer line
(the protocol is in ``cli.served``, the client). Answers come from the event-fed
``StateCache`` where it is fresh, else from the same service calls the CLI would make
itself, so an answer or an error is the one the CLI would have printed. A request
that needs a live read first gets a ``working`` line naming how long it may take.

A stale socket file (no process behind it) is replaced at start-up; a socket another
server still answers on is left alone (this server then runs without one). It holds
no policy and never prints.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
from pathlib import Path
from typing import Any

from virtlife import errors
from virtlife.api.hub import cached_listing
from virtlife.services.context import Services
from virtlife.services.fleet import ROW_FIELDS
from virtlife.services.statecache import StateCache

log = logging.getLogger(__name__)

VERSION = 1
SOCKET_NAME = "serve.sock"  # cli.served.SOCKET_NAME
REQUEST_MAX = 64 * 1024
READ_S = 5.0  # how long a client may take to send its request line
ACCEPT_POLL_S = 0.25  # how often the accept loop looks at ``stop``
LIVE_MARGIN_S = 5.0  # added to the fleet's connect deadline for a live read


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class LocalServer:
    """Answers ``list`` and ``state`` on a Unix socket at ``path`` until ``close``."""

    def __init__(self, services: Services, cache: StateCache, path: Path) -> None:
        self.services = services
        self.cache = cache
        self.path = path
        self.stop = threading.Event()
        self.served = 0  # answers given (tests read it)
        self._sock: socket.socket | None = None
        self._inode: int | None = None
        self._thread: threading.Thread | None = None

    # -- life --------------------------------------------------------------------------

    def start(self) -> bool:
        """Listen; False (after a warning) when another server holds the socket."""
        if self.path.exists() or self.path.is_symlink():
            if self._answering():
                log.warning("another virtlife serve answers on %s: this one runs without "
                            "the CLI's local socket", self.path)
                return False
            self.path.unlink()  # stale: its server is gone
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # created 0600: no window where others could connect
        try:
            sock.bind(str(self.path))
            self._inode = os.stat(self.path).st_ino  # ours, from the moment it exists
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(64)
        sock.settimeout(ACCEPT_POLL_S)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept, name="local-socket", daemon=True)
        self._thread.start()
        log.info("answering the CLI on %s", self.path)
        return True

    def _answering(self) -> bool:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(str(self.path))
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def close(self) -> None:
        """Stop answering: the socket's name goes first (no new client finds it), then
        the accept thread."""
        self.stop.set()
        try:  # only our own file: a later server may have replaced it
            if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                self.path.unlink()
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(2.0)
        if self._sock is not None:
            self._sock.close()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self.stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stop.is_set():
                    return
                raise
            threading.Thread(target=self._handle, args=(conn,), name="local-client",
                             daemon=True).start()

    # -- one client ----------------------------------------------------------------------

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                if _peer_uid(conn) not in (os.geteuid(), 0):
                    return
                conn.settimeout(READ_S)
                data = b""
                while b"\n" not in data and len(data) <= REQUEST_MAX:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                request = json.loads(data.partition(b"\n")[0])
                reply = self.answer(request, lambda line: self._send(conn, line))
                self._send(conn, reply)
            except (OSError, ValueError) as err:
                log.info("local socket client: %s", err)

    @staticmethod
    def _send(conn: socket.socket, message: dict[str, Any]) -> None:
        conn.sendall(json.dumps({"v": VERSION, **message}, default=str).encode() + b"\n")

    def answer(self, request: Any, send: Any = None) -> dict[str, Any]:
        """The final answer to ``request``; ``send`` gets a ``working`` line first when a
        live read is due."""
        if not isinstance(request, dict) or request.get("v") != VERSION:
            return {"ok": False, "fallback": True}

        def working() -> None:
            if send is not None:
                send({"working": True,
                      "deadline_s": self.services.fleet.connect_timeout_s + LIVE_MARGIN_S})

        try:
            if request.get("op") == "state" and isinstance(request.get("vm"), str):
                reply = self._state(request["vm"], working)
            elif request.get("op") == "list":
                host = request.get("host")
                reply = self._list(bool(request.get("all")),
                                   host if isinstance(host, str) else None, working,
                                   compact=request.get("form") == "rows")
            else:
                return {"ok": False, "fallback": True}
        except errors.VirtlifeError as err:
            return {"ok": False, "exit_code": err.exit_code, "message": str(err)}
        except Exception:  # a bug here must not cost the CLI its answer: it reads itself
            log.exception("local socket: cannot answer %r", request)
            return {"ok": False, "fallback": True}
        self.served += 1
        return {"ok": True, **reply}

    def _state(self, ref: str, working: Any) -> dict[str, Any]:
        hit = self.cache.state(ref)
        source = "cache"
        if hit is None:
            working()
            hit = self.services.lifecycle.state(ref)
            source = "live"
        host, state = hit
        return {"host": host, "state": state.state.value, "label": state.state.label,
                "reason": state.reason, "source": source}

    def _list(self, include_inactive: bool, host: str | None, working: Any, *,
              compact: bool = False) -> dict[str, Any]:
        """The listing; ``compact`` (the request's ``"form": "rows"``): the VMs as
        ``columns`` and one list of values per VM, not one object each (a third of the
        bytes to write and parse for a fleet of thousands)."""
        if not self.cache.fresh(host):
            working()  # a host to read live: it may take up to the connect deadline
        listing, source = cached_listing(self.cache, include_inactive=include_inactive,
                                         host=host, on_live=working)
        vms: dict[str, Any] = (
            {"columns": list(ROW_FIELDS), "rows": [r.as_list() for r in listing.rows]}
            if compact else {"vms": [r.as_dict() for r in listing.rows]})
        return {**vms,
                "unreachable": [{"host": p.host, "uri": p.uri, "error": p.message}
                                for p in listing.unreachable],
                "answered": list(listing.answered), "source": source}
