"""A store that opens but then fails under a command (a damaged journal page), tried
through the real ``virtlife`` command: a store command ends in one line with exit 7,
and with ``-c URI`` the operation's outcome stands with one warning beside it.

Every test runs the command as a subprocess with this test's own ``VIRTLIFE_HOME``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from test_bad_input import EXIT_STORE_UNAVAILABLE, on_node, one_line_error, virtlife

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
