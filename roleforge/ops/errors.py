"""Errors a user can act on: the CLI prints them as one line, never as a traceback."""

import errno


class RoleforgeError(Exception):
    """A mistake in input, arguments or configuration that the user can fix."""


class Preempted(Exception):
    """The machine is going away (spot eviction, SIGTERM): retry elsewhere, from the last checkpoint."""


STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file size limit reached", errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
}
DATABASE_STORAGE_SIGNS = {
    "database or disk is full": "no space left on the device", "disk i/o error": "disk I/O error (is the disk full?)",
    "attempt to write a readonly database": "the database file is read-only",
    "unable to open database file": "cannot open the database file (missing directory or no permission)",
}


def storage_error(error: BaseException, where: str) -> RoleforgeError | None:
    """A one-line RoleforgeError naming the path for a full disk or an unwritable file, else None.

    `where` names the store for database errors; an OSError names its own file where it has one."""
    if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
        verb = "access" if error.errno in (errno.EACCES, errno.EPERM) else "write"
        return RoleforgeError(f"cannot {verb} {error.filename or where}: {STORAGE_ERRNOS[error.errno]}; nothing from "
                              "the failed step was recorded as done, so the same command can be run again once fixed")
    message = str(error).lower()
    for sign, meaning in DATABASE_STORAGE_SIGNS.items():
        if sign in message:
            return RoleforgeError(f"cannot write the store {where}: {meaning}; its last transaction was rolled back, so "
                                  "the same command can be run again once fixed")
    return None


def database_error(error: BaseException) -> str | None:
    """One line for a database that could not be used at all: a server that is down or unreachable, a wrong host,
    socket or password (SQLAlchemy's OperationalError: the store or MLflow's tracking database), in the driver's own
    words; None for anything else."""
    import sys

    exceptions = sys.modules.get("sqlalchemy.exc")  # never imported here: an error of it means it was loaded
    if exceptions is None or not isinstance(error, exceptions.OperationalError):
        return None
    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    return f"a database could not be used: {lines[0] if lines else type(error).__name__}"
