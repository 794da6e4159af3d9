"""A throwaway PostgreSQL server for the tests: a new cluster in a temporary directory, reached by its Unix socket
only (no TCP port is opened), stopped and removed at the end. It runs the machine's own PostgreSQL binaries; as
root, as the `postgres` user (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PORT = 5432  # names the socket file in the cluster's own directory; nothing listens on a TCP port
NO_SERVER = "no PostgreSQL server binaries (pg_ctl, initdb) on this machine"


def server_binaries() -> Path | None:
    """The directory of pg_ctl and initdb: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (the newest)."""
    found = shutil.which("pg_ctl")
    if found is not None and shutil.which("initdb", path=str(Path(found).resolve().parent)):
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda path: int(path.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


@contextmanager
def throwaway_server() -> Iterator[str]:
    """Start a cluster; yields the psql-style URL of its `postgres` database as user `roleforge` (trust auth)."""
    binaries = server_binaries()
    if binaries is None:
        raise FileNotFoundError(NO_SERVER)
    directory = Path(tempfile.mkdtemp(prefix="roleforge-postgres-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(directory, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data = directory / "data"
    try:
        subprocess.run([*run_as, str(binaries / "initdb"), "-D", str(data), "-U", "roleforge", "-A", "trust", "-E",
                        "UTF8", "--no-sync"], check=True, capture_output=True)
        options = f"-k {directory} -c listen_addresses='' -p {PORT} -c fsync=off -c full_page_writes=off"
        subprocess.run([*run_as, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(directory / "server.log"), "-o",
                        options, "-w", "start"], check=True, capture_output=True)
        try:
            yield f"postgresql+psycopg://roleforge@/postgres?host={directory}&port={PORT}"
        finally:
            subprocess.run([*run_as, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
