"""The CLI's client of a running ``virtlife serve``: one JSON line over a Unix socket.

``virtlife serve`` (over the inventory, not ``-c``) listens on ``serve.sock`` in the
store's directory, mode 0600: only its own user (and root) may connect, and the
server checks the peer's uid again. ``ask`` sends one request and reads the answer;
it returns None, quickly and silently, whenever the answer cannot be had: no socket,
a socket of another user, a stale socket (connection refused), or a server that does
not answer within ``REPLY_S`` (it may say it needs longer, for a live read of a host,
with a ``working`` line naming its own deadline). The caller then does the work itself.

It imports nothing but the standard library's socket and json (no click, no
libvirt, no services), and those only once a socket file is there: a served command
costs little more than Python's start-up, and a command without a server nothing.
Protocol, version 1 (one line each way, UTF-8 JSON)::

    -> {"v": 1, "op": "state", "vm": "web1"}
    <- {"v": 1, "working": true, "deadline_s": 12.0}     (optional, before a live read)
    <- {"v": 1, "ok": true, "source": "cache", ...}     or
       {"v": 1, "ok": false, "exit_code": 2, "message": "..."} (the error, as the CLI's)
       {"v": 1, "ok": false, "fallback": true}          (the CLI should do it itself)

A ``list`` request may add ``"form": "rows"``: the VMs then come as ``"columns"`` (the
keys of a VM's object) and ``"rows"`` (one list of values per VM) instead of ``"vms"``
(one object each), a third of the bytes to write and parse; a server that does not
know the key answers with ``"vms"``, which the CLI still reads.
"""

from __future__ import annotations

import os
import stat
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms)
if TYPE_CHECKING:
    from typing import Any

VERSION = 1
SOCKET_NAME = "serve.sock"
CONNECT_S = 0.5  # a live server accepts at once; a stale socket is refused at once
REPLY_S = 1.0  # the first line must come within this; a cached answer takes ~1 ms
MAX_LINE = 16 * 1024 * 1024  # a listing of many hosts' VMs fits easily


def home() -> str:
    """``config.home()`` without importing ``config`` (the rule is the same; a unit test
    keeps the two in step)."""
    env = os.environ.get("VIRTLIFE_HOME")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/virtlife"
    return os.path.join(os.path.expanduser("~"), ".local", "share", "virtlife")


def socket_path() -> str:
    return os.path.join(home(), SOCKET_NAME)


def _ours(path: str) -> bool:
    """True when ``path`` is a socket owned by this user (a server we may trust)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISSOCK(st.st_mode) and st.st_uid == os.geteuid()


def ask(request: dict[str, Any], *, path: str | None = None,
        reply_s: float = REPLY_S) -> dict[str, Any] | None:
    """The server's answer to ``request`` (its final line), or None: do it yourself."""
    where = path or socket_path()
    if not _ours(where):
        return None
    import json  # only now: without a server, the CLI need not pay for them
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_S)
        sock.connect(where)
        sock.sendall(json.dumps({"v": VERSION, **request}).encode() + b"\n")
        deadline = time.monotonic() + reply_s
        buffer = b""
        while True:
            line, _, rest = buffer.partition(b"\n")
            if _:
                buffer = rest
                answer = json.loads(line)
                if not isinstance(answer, dict) or answer.get("v") != VERSION:
                    return None
                if answer.get("working"):
                    deadline = time.monotonic() + float(answer.get("deadline_s", reply_s))
                    continue
                if answer.get("fallback"):
                    return None
                return answer
            remaining = deadline - time.monotonic()
            if remaining <= 0 or len(buffer) > MAX_LINE:
                return None
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                return None
            buffer += chunk
    except (OSError, ValueError, TypeError):
        return None
    finally:
        sock.close()
