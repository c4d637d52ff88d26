"""A PostgreSQL store that cannot be used, tried through the real ``virtlife`` command: a
wrong URL, a refused connection, an unknown role or database, a schema newer than this
virtlife, and a server that drops the connection mid-command. Each is one line with exit
7 (store unavailable), never with the URL's password; with ``-c URI`` the command still
works, with one warning.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_bad_input import EXIT_STORE_UNAVAILABLE, on_node, one_line_error, virtlife

from pg_support import Cluster
from virtlife import errors
from virtlife.store import open_store

REFUSED = "postgresql://virtlife:s3cret@127.0.0.1:1/virtlife"  # nothing listens on port 1


@pytest.mark.parametrize("url", [
    "mysql://virtlife:s3cret@db1/virtlife",  # not PostgreSQL
    "postgresql://virtlife:s3cret@[db1/virtlife",  # not a URL libpq can read
    REFUSED,
])
def test_a_store_url_that_cannot_be_used_is_one_line_exit_7(url: str) -> None:
    line = one_line_error(virtlife("host", "list", env={"VIRTLIFE_DB": url}),
                          EXIT_STORE_UNAVAILABLE)
    assert "s3cret" not in line and "VIRTLIFE_DB" in line


def test_an_unknown_role_or_database_is_one_line_exit_7(pg_cluster: Cluster) -> None:
    for url, said in ((pg_cluster.url("postgres", user="nobody"), '"nobody"'),
                      (pg_cluster.url("no_such_db"), '"no_such_db"')):
        line = one_line_error(virtlife("history", env={"VIRTLIFE_DB": url}),
                              EXIT_STORE_UNAVAILABLE)
        assert said in line and "does not exist" in line


def test_a_schema_newer_than_this_virtlife_is_one_line_exit_7(pg_url: str) -> None:
    with open_store(pg_url) as store:
        store.database.write("INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
                             ("9999_from_the_future", "2099-01-01T00:00:00+00:00"))
    line = one_line_error(virtlife("host", "list", env={"VIRTLIFE_DB": pg_url}),
                          EXIT_STORE_UNAVAILABLE)
    assert "newer schema" in line and "9999_from_the_future" in line


def test_list_with_c_uri_works_while_the_database_is_unreachable() -> None:
    run = on_node("list", env={"VIRTLIFE_DB": REFUSED})
    assert run.code == 0, run.err
    assert "vm-running" in run.out
    (warning,) = run.err.splitlines()
    assert warning.startswith("virtlife: warning: the virtlife store postgresql://")
    assert "s3cret" not in warning and "continuing without the journal" in warning


def test_a_server_that_drops_the_connection_mid_command_is_store_unavailable_then_back(
        pg_url: str, pg_cluster: Cluster) -> None:
    with open_store(pg_url) as store:
        store.hosts.add("web-a", "qemu:///system")
        database = pg_url.split("?")[0].rsplit("/", 1)[1]
        pg_cluster.admin("SELECT pg_terminate_backend(pid, 30000) FROM pg_stat_activity"
                         f" WHERE datname = '{database}' AND pid <> pg_backend_pid()")
        with pytest.raises(errors.StoreUnavailable) as caught:
            store.hosts.list()
        assert "\n" not in str(caught.value) and "cannot be used" in str(caught.value)
        assert [h.name for h in store.hosts.list()] == ["web-a"]  # a new connection


def test_a_settings_store_url_is_used(isolated_home: Path) -> None:
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / "settings.toml").write_text(f'[store]\nurl = "{REFUSED}"\n')
    line = one_line_error(virtlife("host", "list"), EXIT_STORE_UNAVAILABLE)
    assert "127.0.0.1:1" in line and "s3cret" not in line
