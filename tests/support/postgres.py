"""A throwaway PostgreSQL cluster from the Debian binaries on the machine.

PostgreSQL refuses to run as root, and pytest-postgresql starts ``pg_ctl`` as the current user,
so this starts the cluster itself: as the ``postgres`` system user when the tests run as root.
Trust authentication on loopback only; fsync off, because the cluster dies with the tests.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg


def _bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        found = Path(subprocess.check_output([pg_config, "--bindir"], text=True).strip())
        if (found / "initdb").exists():
            return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


class Cluster:
    """A cluster on 127.0.0.1:``port`` that a test may stop and start again."""

    def __init__(self, port: int) -> None:
        bindir = _bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.bindir = bindir
        self.folder = Path(tempfile.mkdtemp(prefix="sagas-pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data = self.folder / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}"
        self.options = (
            f"-p {port} -h 127.0.0.1 -k {self.folder} -c fsync=off -c full_page_writes=off"
        )
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        command = [*self.as_user, str(self.bindir / tool), *args]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-o", self.options,
                  "-l", str(self.folder / "log"), "-w", "start")  # fmt: skip

    def stop(self) -> None:
        """Stop at once, as a crashed or unreachable database looks to its clients."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def cluster(port: int) -> Iterator[str]:
    """Run a cluster on 127.0.0.1:``port``; yield its base URL (no database name)."""
    with running_cluster(port) as found:
        yield found.url


@contextlib.contextmanager
def running_cluster(port: int) -> Iterator[Cluster]:
    found = Cluster(port)
    found.start()
    try:
        yield found
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            found.stop()
        found.remove()


def create_database(base_url: str, name: str) -> str:
    """Create database ``name``; return its SQLAlchemy URL."""
    conninfo = base_url.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base_url}/{name}"
