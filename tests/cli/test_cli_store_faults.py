"""A store that opens but then fails under a command (a damaged journal page, a
read-only file), tried through the real ``virtlife`` command: a store command ends in
one line with exit 7, and with ``-c URI`` the operation's outcome (done, refused or
failed) stands with the journal's failure said once, as one warning beside it.

Every test runs the command as a subprocess with this test's own ``VIRTLIFE_HOME``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from test_bad_input import EXIT_STORE_UNAVAILABLE, VIRTLIFE, Run, on_node, one_line_error, virtlife

from support import NODE_URI
from virtlife.store.db import open_store


def _damage_the_journal(home: Path) -> Path:
    """A store whose schema reads fine but whose journal table's root page is garbage,
    as a torn write or a bad sector leaves it: SQLite finds out only on reading it."""
    path = home / "virtlife.db"
    with open_store(path) as store:
        store.journal.record("local", "web1", "suspend", "ok", 0.1, "one row")
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'journal'").fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    finally:
        conn.close()
    with open(path, "r+b") as f:
        f.seek((int(root) - 1) * int(page_size))
        f.write(b"\xff" * int(page_size))
    return path


def test_history_over_a_damaged_journal_page_is_one_line_exit_7(isolated_home: Path) -> None:
    path = _damage_the_journal(isolated_home)
    line = one_line_error(virtlife("history"), EXIT_STORE_UNAVAILABLE)
    assert str(path) in line and "malformed" in line and "move it away" in line


def test_suspend_with_c_uri_and_a_damaged_journal_succeeds_with_one_warning(
        isolated_home: Path) -> None:
    path = _damage_the_journal(isolated_home)
    run = on_node("suspend", "vm-running")
    assert "Traceback" not in run.err, run.err
    assert run.code == 0, run.err
    assert "paused" in run.out
    warnings = run.err.splitlines()
    assert len(warnings) == 1, run.err
    assert warnings[0].startswith("virtlife: warning: the journal could not record it")
    assert str(path) in warnings[0] and "malformed" in warnings[0]
    assert os.path.exists(path)  # nothing moved the damaged file away behind the user


# root writes over a mode 0444 file: without these capabilities it cannot either
_AS_PLAIN_ROOT = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"]
EXIT_INVALID_TRANSITION = 3


def _read_only_store(home: Path) -> Path:
    path = home / "virtlife.db"
    with open_store(path) as store:
        store.journal.record("local", "web1", "suspend", "ok", 0.1, "one row")
    path.chmod(0o444)
    return path


def _on_node_read_only(*args: str) -> Run:
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: the store cannot be read-only")
        prefix = _AS_PLAIN_ROOT
    proc = subprocess.run([*prefix, *VIRTLIFE, "-c", NODE_URI, *args], capture_output=True,
                          text=True, timeout=60, env=os.environ.copy(), check=False)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def _journal_warning(line: str, path: Path) -> None:
    assert line.startswith("virtlife: warning: the journal could not record it"), line
    assert str(path) in line and "readonly" in line


def test_suspend_with_a_read_only_store_warns_once(isolated_home: Path) -> None:
    # issue 15: each journal warning was printed twice (a log line and the warning,
    # until e9825fd); then still twice over: 'could not record it' and 'could not
    # record its outcome' for the row that was never written
    path = _read_only_store(isolated_home)
    run = _on_node_read_only("suspend", "vm-running")
    assert run.code == 0, run.err
    assert "paused" in run.out
    [line] = run.err.splitlines()
    _journal_warning(line, path)


def test_a_refusal_with_a_read_only_store_says_the_journal_warning_once(
        isolated_home: Path) -> None:
    # the journal's warnings were notes on the error, and the CLI printed none of them
    path = _read_only_store(isolated_home)
    run = _on_node_read_only("resume", "vm-running")
    assert run.code == EXIT_INVALID_TRANSITION, run.err
    error, warning = run.err.splitlines()
    assert error == "virtlife: cannot resume vm-running: it is running, not paused"
    _journal_warning(warning, path)


def test_a_refused_create_with_a_read_only_store_says_the_journal_warning_once(
        isolated_home: Path) -> None:
    path = _read_only_store(isolated_home)
    run = _on_node_read_only("create", "vm-off")
    assert run.code != 0 and "Traceback" not in run.err
    error, warning = run.err.splitlines()
    assert "already exists" in error
    _journal_warning(warning, path)
