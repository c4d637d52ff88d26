"""A private PostgreSQL cluster for the test session, and a fresh database per test.

``pg_cluster`` (session scope: one per xdist worker) runs Debian's ``initdb`` and
``pg_ctl`` in a temporary directory owned by the ``postgres`` user (initdb refuses
root), listening only on a unix socket in that directory, with fsync off; it is stopped
(``pg_ctl stop -m fast``) and removed at the end of the session, also when tests fail.
Nothing depends on a system-wide PostgreSQL service. ``pg_url`` is a new, empty
database on it for one test; ``pg_store_url`` a new database that holds virtlife's
schema already, cloned (``CREATE DATABASE ... TEMPLATE``) from one database the session
migrated once (``pg_template``), instead of the migrations run again for each test.
Tests of the migrations themselves, and of a store made from nothing, take ``pg_url``.
Without PostgreSQL's binaries the tests that need it are skipped, saying why (in CI,
``VIRTLIFE_REQUIRE_REAL_STACK=1`` fails them instead).
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

BINDIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


@dataclass
class Cluster:
    socket_dir: Path

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@/{database}?host={self.socket_dir}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]  # test-made SQL, no parameters


def _as_postgres() -> tuple[list[str], int | None, int | None]:
    """The command prefix to run a PostgreSQL binary, and the owner of its files."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        if os.environ.get("VIRTLIFE_REQUIRE_REAL_STACK") == "1":  # CI (.ci/run)
            pytest.fail("no postgres user to run initdb as: the postgresql package makes it")
        pytest.skip("no postgres user to run initdb as (initdb refuses root)")
    return ["runuser", "-u", "postgres", "--"], entry.pw_uid, entry.pw_gid


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    if not BINDIRS:
        if os.environ.get("VIRTLIFE_REQUIRE_REAL_STACK") == "1":  # CI (.ci/run)
            pytest.fail("PostgreSQL is not installed: scripts/setup.sh installs it")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    bindir = BINDIRS[0]
    prefix, uid, gid = _as_postgres()
    top = Path(tempfile.mkdtemp(prefix="virtlife-pg-"))
    data = top / "data"
    started = False
    try:
        if uid is not None and gid is not None:
            os.chown(top, uid, gid)
        subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                        "--auth=trust", "--no-sync", "--locale=C", "-E", "UTF8"],
                       check=True, capture_output=True, timeout=120)
        options = (f"-c listen_addresses='' -c unix_socket_directories={top} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        started = True  # from here on, stop it whatever happens
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-o", options,
                        "-l", str(top / "log"), "-w", "-t", "60", "start"],
                       check=True, capture_output=True, timeout=120)
        yield Cluster(top)
    finally:
        if started:
            subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast",
                            "-w", "stop"], capture_output=True, timeout=120, check=False)
        shutil.rmtree(top, ignore_errors=True)


_numbers = itertools.count()


@contextmanager
def _database(cluster: Cluster, template: str) -> Iterator[str]:
    """A new database copied from ``template``; its URL, dropped after."""
    name = f"t{os.getpid()}_{next(_numbers)}"
    cluster.admin(f"CREATE DATABASE {name} TEMPLATE {template}")
    try:
        yield cluster.url(name)
    finally:
        cluster.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """A new, empty database for this test (dropped after it)."""
    with _database(pg_cluster, "template0") as url:
        yield url


@pytest.fixture(scope="session")
def pg_template(pg_cluster: Cluster) -> str:
    """The name of a database that ``open_store`` migrated once for the session, which
    no connection may use afterwards (CREATE DATABASE copies only an unused one)."""
    from virtlife.store import open_store

    name = f"virtlife_template_{os.getpid()}"
    pg_cluster.admin(f"CREATE DATABASE {name} TEMPLATE template0")
    open_store(pg_cluster.url(name)).close()
    pg_cluster.admin(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
    return name  # removed with the cluster


@pytest.fixture
def pg_store_url(pg_cluster: Cluster, pg_template: str) -> Iterator[str]:
    """A new database holding virtlife's current schema, as ``open_store`` leaves a
    new one (copied from ``pg_template``; dropped after the test)."""
    with _database(pg_cluster, pg_template) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def engine_where(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a store is, once on each engine: a new SQLite file, or a PostgreSQL database
    that holds the schema already (``pg_store_url``)."""
    if request.param == "sqlite":
        return tmp_path / "virtlife.db"
    url: str = request.getfixturevalue("pg_store_url")
    return url
