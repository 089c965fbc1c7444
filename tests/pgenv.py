"""A private PostgreSQL 15 cluster for the tests (and the benchmark).

Debian's `postgresql` (installed by `scripts/install-system-deps.sh`) gives `initdb` and
`pg_ctl`; neither runs as root, so under root (as CI runs) the cluster belongs to an
unprivileged system user of its own, made here and removed again at teardown (`setpriv`
switches to it for each command). The server listens on a unix socket in a private folder
and on 127.0.0.1 at a free port (the one place a password is checked: see `PASSWORD_ROLE`).

`fsync=off`: a commit reaches the OS before it is acknowledged, and survives the server being
killed, but not an OS crash; the same promise as lokid's SQLite at `--durability normal`, so
the benchmark compares like with like. Nothing else is tuned.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest

BIN = Path("/usr/lib/postgresql/15/bin")
USER = "lokid-pgtest"  # the cluster's owner when the tests run as root
PASSWORD_ROLE = "lokid_pw"  # a role that must log in with a password, over TCP only
PASSWORD = "s3cret-Do-Not-Log-8841"

STORES = ["sqlite", "postgres"]
# A daemon test that runs once per store (the `store_env` fixture of conftest.py).
both_stores = pytest.mark.parametrize("store_env", STORES, indirect=True)


def available() -> str | None:
    """None when a cluster can be started here, else why not."""
    if not (BIN / "initdb").exists():
        return f"no {BIN}/initdb: install Debian's postgresql (scripts/install-system-deps.sh)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """initdb, start, stop, start again, tear down; one superuser database per test area."""

    def __init__(self, name: str = "lkpg") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/tmp"))
        self.data = self.dir / "data"
        self.sockets = self.dir / "sock"
        self.log = self.dir / "server.log"
        self.port = _free_port()
        self._made_user = False
        self.owner = self._owner()
        self.superuser = self.owner.pw_name

    # -- who runs it -------------------------------------------------------------------

    def _owner(self) -> pwd.struct_passwd:
        if os.geteuid() != 0:
            return pwd.getpwuid(os.geteuid())
        try:
            return pwd.getpwnam(USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                check=True,
                capture_output=True,
            )
            self._made_user = True
            return pwd.getpwnam(USER)

    def _as_owner(self, args: list[str], **kw) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            args = [
                "setpriv",
                f"--reuid={self.owner.pw_uid}",
                f"--regid={self.owner.pw_gid}",
                "--clear-groups",
                "--",
                *args,
            ]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
        return subprocess.run(args, env=env, text=True, capture_output=True, **kw)

    # -- life cycle --------------------------------------------------------------------

    def init(self) -> PgCluster:
        for path in (self.dir, self.sockets):
            path.mkdir(exist_ok=True)
            os.chown(path, self.owner.pw_uid, self.owner.pw_gid)
        os.chmod(self.dir, 0o755)
        os.chmod(self.sockets, 0o755)
        done = self._as_owner(
            [str(BIN / "initdb"), "-D", str(self.data), "-U", self.superuser, "--auth=trust",
             "--encoding=UTF8", "--no-sync"],
            timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr or done.stdout}")
        conf = self.data / "postgresql.conf"
        with conf.open("a") as f:
            f.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.sockets}'\n"
                "fsync = off\nmax_connections = 200\nshared_buffers = 64MB\n"
                "password_encryption = 'scram-sha-256'\n"
            )
        (self.data / "pg_hba.conf").write_text(
            f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
            "local all all trust\n"
            "host all all 127.0.0.1/32 trust\n"
        )
        return self

    def start(self) -> PgCluster:
        done = self._as_owner(
            [str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
             "start"],
            timeout=90,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr}\n{self.server_log()}")
        return self

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends every session (clients see their connection drop); `immediate`
        is a crash of the server."""
        self._as_owner(
            [str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"],
            timeout=90,
        )

    def running(self) -> bool:
        pid_file = self.data / "postmaster.pid"
        return pid_file.exists()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.running():
                self.stop("immediate")
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)
        if self._made_user:
            subprocess.run(["userdel", USER], capture_output=True, check=False)

    def server_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # -- databases and URLs ------------------------------------------------------------

    def url(self, db: str = "postgres", user: str | None = None) -> str:
        """A URL over the unix socket (no password: `trust` for local sessions)."""
        return (
            f"postgresql://{quote(user or self.superuser)}@/{db}"
            f"?host={quote(str(self.sockets), safe='')}&port={self.port}"
        )

    def tcp_url(self, db: str, user: str, password: str | None = None) -> str:
        auth = quote(user) + (f":{quote(password)}" if password else "")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{db}"

    def sql(self, statement: str, db: str = "postgres") -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url(db), autocommit=True) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def create_db(self, name: str) -> str:
        """A fresh database; returns its URL."""
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def create_password_role(self, db: str) -> str:
        """A role that logs in over TCP with `PASSWORD`; its URL carries the password."""
        self.sql(
            f"DO $$BEGIN CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}' SUPERUSER;"
            " EXCEPTION WHEN duplicate_object THEN NULL; END$$"
        )
        return self.tcp_url(db, PASSWORD_ROLE, PASSWORD)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            done = subprocess.run(
                [str(BIN / "pg_isready"), "-h", str(self.sockets), "-p", str(self.port)],
                capture_output=True,
            )
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the test PostgreSQL did not become ready")
            time.sleep(0.05)


def start_cluster(name: str = "lkpg") -> PgCluster:
    cluster = PgCluster(name)
    try:
        cluster.init().start()
    except BaseException:
        cluster.close()
        raise
    return cluster
