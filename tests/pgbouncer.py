"""
A PgBouncer of the test's own: Debian's `pgbouncer` binary on a free port, in
front of one PostgreSQL, in transaction pooling with a few server connections.

Its absence fails the test that needs it (`.ci/run` installs the package): a
skip would let CI pass without ever running the ledger behind a pooler.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from sandbox import free_port


def binary() -> str:
    """The pgbouncer executable; AssertionError, naming the package, when it is not installed."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    assert found, (
        "pgbouncer is not installed: apt-get install -y pgbouncer (.ci/run installs it);"
        " the ledger behind a transaction pooler cannot be tested without it"
    )
    return found


@dataclass
class PgBouncer:
    """
    pgbouncer listening on 127.0.0.1:`port`, every database name passed to the
    PostgreSQL at `server_host`:`server_port` as user postgres, trusted.
    """

    server_host: str = "127.0.0.1"
    server_port: int = 5432
    pool_mode: str = "transaction"
    #: server connections per (database, user): what every client shares
    pool_size: int = 4
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="leadrelay-pgb-")))

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def via(self, direct_url: str) -> str:
        """`direct_url`'s database, reached through this pooler."""
        return self.url(direct_url.rpartition("/")[2])

    def start(self) -> None:
        exe = binary()
        (self.dir / "users.txt").write_text('"postgres" ""\n', encoding="utf-8")
        (self.dir / "pgbouncer.ini").write_text(self._ini(), encoding="utf-8")
        as_user: list[str] = []
        if os.geteuid() == 0:  # pgbouncer refuses to run as root; -u drops to postgres
            shutil.chown(self.dir, "postgres")
            as_user = ["-u", "postgres"]
        with (self.dir / "pgbouncer.log").open("ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [exe, *as_user, str(self.dir / "pgbouncer.ini")],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(psycopg.OperationalError):
                self.show("VERSION")
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"pgbouncer did not start:\n{self.log()[-2000:]}")
            time.sleep(0.05)

    def _ini(self) -> str:
        return "\n".join(
            [
                "[databases]",
                f"* = host={self.server_host} port={self.server_port}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {self.port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {self.dir / 'users.txt'}",
                "admin_users = postgres",
                f"pool_mode = {self.pool_mode}",
                f"default_pool_size = {self.pool_size}",
                "max_client_conn = 500",
                # after PostgreSQL went away, try it again each second (default: 15 s)
                "server_login_retry = 1",
                "",
            ]
        )

    def show(self, what: str) -> list[dict[str, Any]]:
        """Rows of the admin console's `SHOW <what>` (POOLS, SERVERS, CLIENTS, …)."""
        with psycopg.connect(self.url("pgbouncer"), autocommit=True, connect_timeout=2) as conn:
            return conn.cursor(row_factory=dict_row).execute(f"SHOW {what}").fetchall()

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running(**options: Any) -> Iterator[PgBouncer]:
    """A started PgBouncer for the block, stopped and removed after."""
    bouncer = PgBouncer(**options)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.close()
